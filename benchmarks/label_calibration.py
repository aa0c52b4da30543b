"""Label-inference calibration benchmark (issue 8, item 4): do "detected" verdicts mean what they say?

Setting: the label-inference benchmark's (``label_inference.py``): the benchmarks' ConvNet (width 16),
θ0 pretrained on CIFAR-10 batches 2–5 of the shared subset (``common.bench_config``, cached), θ = θ0
fine-tuned on D_ft = 500 samples of batch 1 (1 epoch, SGD lr 1e-3, batch 128, BN frozen). Probes are made
once per generator against θ, then replayed to every θ_u below; only θ_u's answers are stored
(``answers.safetensors``), so the analysis can be rerun without any model (``--reuse``).

θ_u kinds:

- **null pairs** (no class was deleted), ``--null-seeds`` each:
  ``step`` — θ plus one more SGD step (lr 1e-3) on a random batch of 128 retained rows;
  ``handful_ga`` / ``handful_exact`` — one random sample from each of ``--handful`` random distinct classes
  deleted, by gradient ascent (τ = 1e-3, one epoch) or by exact retraining (same data order).
- **true deletions**: for every class c and p_u ∈ {0.1, 0.5, 1.0}, the first ⌊n_c·p_u⌋ samples of class c
  deleted by exact and by approximate (gradient-ascent) unlearning.

Split (chosen before looking at any result): the *tuning* half is null seeds that are even and true deletions
of classes 0–4; the *held-out* half is odd null seeds and classes 5–9. The rule variant (statistic × test)
and the data-driven ``null_pairs`` threshold are chosen on the tuning half only; every reported rate comes
from the held-out half. Rates carry Wilson 95 % intervals.

Usage: python benchmarks/label_calibration.py [--generators public gradient nes] [--out DIR] [--reuse]
The last line printed is one JSON object (also written to ``--out``/summary.json).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from common import bench_config
from unlearnleak.attacks.label_inference import ProbeSet, generate_probes
from unlearnleak.attacks.label_inference.probes import PROBE_GENERATORS
from unlearnleak.models import build_model, load_weights
from unlearnleak.oracle import ModelOracle
from unlearnleak.scenario import ForgetConfig, UnlearningConfig, build_scenario, choose_forget
from unlearnleak.storage import save_tensors_atomic, write_json_atomic
from unlearnleak.training import TrainConfig, train
from unlearnleak.unlearning import UnlearningContext, state_of, unlearn

FRACTIONS = (0.1, 0.5, 1.0)
METHODS = {"exact": ("exact", {}), "approximate": ("gradient_ascent", {"lr": 1e-3, "epochs": 1})}
NULL_KINDS = ("step", "handful_ga", "handful_exact")
TUNE_CLASSES = frozenset(range(5))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--generators", nargs="+", default=["public", "gradient", "nes"],
                        choices=PROBE_GENERATORS.names())
    parser.add_argument("--per-class", nargs="+", default=["public=10", "gradient=10", "nes=4", "zoo=1"],
                        help="probes per class per generator, NAME=COUNT")
    parser.add_argument("--zoo-seconds", type=float, default=1800.0, help="time box of zoo's probe generation")
    parser.add_argument("--null-seeds", type=int, default=24, help="null pairs per kind (half tuning, half held out)")
    parser.add_argument("--handful", type=int, default=5, help="samples (from distinct classes) in a handful")
    parser.add_argument("--n-train", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--reuse", action="store_true", help="analyse the answers saved in --out, compute nothing")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "out" / "label_calibration")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    if not args.reuse:
        collect(args)
    summary = analyse(args.out)
    sys.stdout.flush()
    print(json.dumps(summary))


# ------------------------------------------------------------------------------------------------- collect
def collect(args: argparse.Namespace) -> None:
    """Probes per generator against θ, every θ_u's answers to them, saved to ``args.out``."""
    started = time.perf_counter()
    per_class = {k: int(v) for k, _, v in (item.partition("=") for item in args.per_class)}
    cfg = bench_config(width=16, n_train=args.n_train, device=args.device,
                       forget=ForgetConfig(kind="class", class_id=0, fraction=1.0),
                       unlearning=UnlearningConfig(method="gradient_ascent", params={"lr": 1e-3}),
                       finetune=TrainConfig(epochs=1, lr=1e-3, batch_size=128, freeze_bn=True))
    scn = build_scenario(cfg)
    spec, pair = scn.pair.spec, scn.pair
    x_ft, y_ft = scn.train.x[scn.ft_indices], scn.train.y[scn.ft_indices]
    k, shape = spec.num_classes, tuple(spec.input_shape)
    print(f"setup {time.perf_counter() - started:.0f} s; D_ft per class {torch.bincount(y_ft, minlength=k).tolist()}",
          flush=True)
    theta = pair.model("original", args.device)
    probe_sets: dict[str, ProbeSet] = {}
    for name in args.generators:
        folder = args.out / f"probes_{name}"
        if (folder / "probes.json").is_file():
            probe_sets[name] = ProbeSet.load(folder)
            continue
        oracle = ModelOracle(theta, num_classes=k, input_shape=shape, device=args.device)
        target = theta if name == "gradient" else oracle
        probes = generate_probes(name, target, k, per_class.get(name, 10), shape, args.seed, public=scn.public,
                                 max_seconds=args.zoo_seconds if name == "zoo" else None, device=args.device)
        probes.save(folder)
        probe_sets[name] = probes
        print(f"{name}: {len(probes)} probes ({probes.num_accepted} accepted), per class {probes.per_class()}, "
              f"{probes.seconds:.0f} s" + (f" — {probes.notes}" if probes.notes else ""), flush=True)

    pairs: list[dict[str, Any]] = []
    answers: dict[str, torch.Tensor] = {}

    def record(key: dict[str, Any], state: dict[str, torch.Tensor]) -> None:
        model = build_model(spec)
        load_weights(model, state)
        oracle = ModelOracle(model, num_classes=k, input_shape=shape, device=args.device)
        for g, ps in probe_sets.items():
            answers[f"{len(pairs)}|{g}"] = oracle.predict_proba(ps.x)
        pairs.append(key)

    def context(mask: torch.Tensor, params: dict[str, Any]) -> UnlearningContext:
        return UnlearningContext(spec=spec, original=pair.original, base=pair.base, x_train=x_ft, y_train=y_ft,
                                 forget_mask=mask, finetune=cfg.finetune, params=params, seed=args.seed,
                                 device=args.device)

    t0 = time.perf_counter()
    for seed in range(args.null_seeds):
        g = torch.Generator().manual_seed(10_000 + seed)
        batch = torch.randperm(y_ft.numel(), generator=g)[:128]
        model = build_model(spec)
        load_weights(model, pair.original)
        train(model, x_ft[batch], y_ft[batch], cfg.finetune, seed=seed, device=args.device)
        record({"kind": "step", "seed": seed}, state_of(model))
        classes = torch.randperm(k, generator=g)[:args.handful]
        mask = torch.zeros(y_ft.numel(), dtype=torch.bool)
        for c in classes.tolist():
            rows = torch.nonzero(y_ft == c).flatten()
            mask[rows[int(torch.randint(rows.numel(), (1,), generator=g))]] = True
        for kind, (method, params) in (("handful_ga", METHODS["approximate"]), ("handful_exact", METHODS["exact"])):
            record({"kind": kind, "seed": seed, "classes": sorted(classes.tolist())}, unlearn(method, context(mask, params)))
    print(f"{len(pairs)} null pairs in {time.perf_counter() - t0:.0f} s", flush=True)
    t0 = time.perf_counter()
    for m, (method, params) in METHODS.items():
        for p in FRACTIONS:
            for c in range(k):
                positions = choose_forget(ForgetConfig(kind="class", class_id=c, fraction=p), y_ft, args.seed)
                mask = torch.zeros(y_ft.numel(), dtype=torch.bool)
                mask[positions] = True
                record({"kind": "deletion", "method": m, "fraction": p, "class": c, "n_u": int(positions.numel())},
                       unlearn(method, context(mask, params)))
    print(f"{len(pairs)} pairs in all, deletions in {time.perf_counter() - t0:.0f} s", flush=True)
    save_tensors_atomic(args.out / "answers.safetensors", answers)
    write_json_atomic(args.out / "pairs.json", {
        "pairs": pairs, "generators": list(probe_sets), "num_classes": k,
        "metrics": dict(pair.metadata.get("metrics", {})), "collect_seconds": time.perf_counter() - started,
        "probes": {g: {"count": len(ps), "accepted": ps.num_accepted, "per_class": ps.per_class(),
                       "total_queries": ps.total_queries, "seconds": ps.seconds, "notes": ps.notes}
                   for g, ps in probe_sets.items()}})


# ------------------------------------------------------------------------------------------------- analyse
def analyse(out: Path) -> dict[str, Any]:
    """Placeholder until the calibrated rule exists: report how many pairs were collected."""
    meta = json.loads((out / "pairs.json").read_text())
    answers = load_file(str(out / "answers.safetensors"))
    return {"pairs": len(meta["pairs"]), "answers": len(answers), "wilson": _wilson(0, 1)}


def _wilson(hits: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score 95 % interval of a rate hits/n."""
    if n == 0:
        return (math.nan, math.nan)
    p = hits / n
    denom = 1 + z * z / n
    mid = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, mid - half), min(1.0, mid + half))


if __name__ == "__main__":
    main()
