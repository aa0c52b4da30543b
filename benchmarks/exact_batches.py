"""Exact unlearning beyond one batch: how far ∇* drifts from the true D_u gradient as N grows past the batch size.

Setting: a suite case's θ0 (default ``lenet``, cached by ``suite_pretrain.py``), θ = θ0 fine-tuned for one epoch
(lr 1e-3, BN frozen) on N private CIFAR-10 rows in mini-batches of B, θ_u = the same run without k of them
(same data order, re-chunked: ``unlearnleak.unlearning`` "exact"). For N/B in ``--ratios`` and ``--samples``
random (D_ft, D_u) it reports the cosine of three estimates to the true gradient ∇_θ ℓ(D_u; θ0):
the N,k formula (``target_gradient(pair, knowledge, "exact")``), the batch-schedule estimator (``batch_size=B``) and the
plain difference θ_u − θ; and the PSNR of the default preset inverting the first two (``--iterations`` steps,
labels inferred from ∇*). Mean ± 95 % t-interval over samples; one JSON line at the end.

    python benchmarks/exact_batches.py                      # B = 8, N/B ∈ 1 2 4 8, k = 1, 8 samples
    python benchmarks/exact_batches.py --no-psnr --samples 16
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from torch.nn import functional as F

from suite import interval
from suite_cases import CASES
from unlearnleak.attacks.feature_recovery import evaluate_reconstruction, infer_labels, invert, preset
from unlearnleak.attacks.feature_recovery.result import Reconstruction
from unlearnleak.attacks.feature_recovery.target_gradient import BatchScheduleWarning, TargetGradient, target_gradient
from unlearnleak.cache import cache_dir
from unlearnleak.data import load_dataset
from unlearnleak.knowledge import ServerKnowledge
from unlearnleak.models import build_model, load_weights
from unlearnleak.pair import ModelPair
from unlearnleak.scenario import base_of
from unlearnleak.stages import theta_stages
from unlearnleak.storage import environment_record, write_json_atomic
from unlearnleak.training import TrainConfig

RESULTS = Path(__file__).resolve().parent / "results"


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(a @ b / (a.norm() * b.norm()))


def psnr_of(pair: ModelPair, knowledge: ServerKnowledge, target: TargetGradient, truth_x: torch.Tensor,
            truth_y: torch.Tensor, k: int, args: argparse.Namespace, seed: int) -> float:
    """PSNR of the default preset inverting ``target`` on θ0 (labels inferred from ∇*)."""
    model = pair.model("base", knowledge=knowledge)
    labels = infer_labels(model, target, k, pair.spec.num_classes).labels
    config = preset(args.preset, iterations=args.iterations)
    result = invert(model, target, labels, tuple(pair.spec.input_shape), config, seed=seed)
    rec = Reconstruction(x=result.x, labels=labels, label_source="inferred", kind="image", method="inversion",
                         target_mode="exact", restart_costs=result.restart_costs, best_restart=result.best_restart,
                         iterations=result.iterations, seconds=result.seconds, preset=args.preset)
    return float(evaluate_reconstruction(rec, truth_x, truth_y)["mean"]["psnr"])


def cell(stats: dict[str, Any], key: str, spec: str) -> str:
    s = stats[key]
    return "–" if s is None else f"{s['mean']:{spec}}±{s['ci95']:{spec}}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--case", default="lenet")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--ratios", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--k", type=int, default=1)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--preset", default="best")
    parser.add_argument("--no-psnr", action="store_true")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=RESULTS / "exact_batches.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    case = CASES.get(args.case)
    cfg = case.config()
    train_set = load_dataset(case.dataset, "train", cfg.data_dir)
    base_st = base_of(cfg, train_set)
    spec, base = base_st.spec, base_st.state
    ft = TrainConfig(lr=1e-3, batch_size=args.batch_size, freeze_bn=True)
    probe = build_model(spec)
    load_weights(probe, base)
    probe.eval()
    params = [p for p in probe.parameters() if p.requires_grad]
    table: list[dict[str, Any]] = []
    print(f"case {case.name}, B = {args.batch_size}, k = {args.k}; cosine to the true D_u gradient at θ0, "
          f"PSNR of `{args.preset}` ({args.iterations} it.)")
    print(f"{'N/B':>4s} {'N':>4s}  {'cos N,k':>13s} {'cos schedule':>13s} {'cos θu−θ':>13s}  "
          f"{'PSNR N,k':>12s} {'PSNR sched.':>12s}")
    for ratio in args.ratios:
        n = ratio * args.batch_size
        rows: dict[str, list[float]] = {key: [] for key in ("cos_nk", "cos_schedule", "cos_plain", "psnr_nk",
                                                            "psnr_schedule")}
        for sample in range(args.samples):
            pool = torch.randperm(case.holdout, generator=torch.Generator().manual_seed(30_000 + sample))[:n]
            x, y = train_set.x[pool], train_set.y[pool]
            positions = torch.randperm(n, generator=torch.Generator().manual_seed(40_000 + sample))[:args.k]
            mask = torch.zeros(n, dtype=torch.bool)
            mask[positions] = True
            theta, theta_u = theta_stages(cache_dir(cfg.cache_dir), base_st, x, y, pool, positions, ft, "exact",
                                          seed=sample)  # the scenario's cached stages
            pair = ModelPair(spec, theta.state, theta_u.state)
            knowledge = ServerKnowledge(base=base, n_train=n, n_forget=args.k, unlearning="exact")
            loss = F.cross_entropy(probe(x[mask]), y[mask])
            truth = torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, params)]).double()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", BatchScheduleWarning)
                n_k = target_gradient(pair, knowledge, "exact")
                scheduled = target_gradient(pair, knowledge, "exact", batch_size=args.batch_size)
            plain = torch.cat([(pair.unlearned[m] - pair.original[m]).reshape(-1).double() for m in n_k.names])
            rows["cos_nk"].append(cosine(n_k.flat(), truth))
            rows["cos_schedule"].append(cosine(scheduled.flat(), truth))
            rows["cos_plain"].append(cosine(plain, truth))
            if not args.no_psnr:
                rows["psnr_nk"].append(psnr_of(pair, knowledge, n_k, x[mask], y[mask], args.k, args, sample))
                rows["psnr_schedule"].append(psnr_of(pair, knowledge, scheduled, x[mask], y[mask], args.k, args,
                                                     sample))
        stats = {key: interval(values) for key, values in rows.items()}
        table.append({"ratio": ratio, "n": n, **stats})

        print(f"{ratio:4d} {n:4d}  {cell(stats, 'cos_nk', '.3f'):>13s} {cell(stats, 'cos_schedule', '.3f'):>13s} "
              f"{cell(stats, 'cos_plain', '.3f'):>13s}  {cell(stats, 'psnr_nk', '.2f'):>12s} "
              f"{cell(stats, 'psnr_schedule', '.2f'):>12s}", flush=True)
    summary = {"case": case.name, "batch_size": args.batch_size, "k": args.k, "samples": args.samples,
               "iterations": args.iterations, "preset": args.preset,
               "cos_nk": {str(r["n"]): r["cos_nk"]["mean"] for r in table},
               "cos_schedule": {str(r["n"]): r["cos_schedule"]["mean"] for r in table},
               "seconds": time.perf_counter() - started}
    write_json_atomic(args.out, {"summary": summary, "table": table, "args": {k: str(v) for k, v in vars(args).items()},
                                 "environment": environment_record()})
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
