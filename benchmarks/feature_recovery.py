"""Feature-recovery benchmark: the `paper` preset against the project's `best` at the same wall-clock budget.

Setting (issue "Feature recovery"): the paper's ConvNet (width 16 on CPU, ``--width 64`` for a GPU) pretrained
on CIFAR-10 batches 2–5 of the shared subset (cached, ``benchmarks/common.py``), fine-tuned on D_ft = 32
samples of batch 1 (one full-batch SGD step, lr 1e-3, BN frozen), k = 1, the same 8 unlearned samples (fixed
seed) under approximate (gradient ascent, τ = 1e-3) and exact (retrain; the server knows θ0, N, k)
unlearning, labels inferred from ∇*. `paper` runs ``--iterations`` (2,000) steps; `best` gets the same
seconds on the same sample. The restarts are also timed batched and as a plain loop.

Prints a per-sample table, saves grids (ground truth | recovered) to ``--out``, and ends with one JSON line.

    python benchmarks/feature_recovery.py                 # the benchmark (2-core CPU: ~80 min)
    python benchmarks/feature_recovery.py --jobs 2        # two samples at a time, one thread each (~40 min)
    python benchmarks/feature_recovery.py --ablation      # + each `smooth` ingredient removed in turn
    python benchmarks/feature_recovery.py --quick         # 2 samples × 200 iterations, a smoke run
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from common import bench_config
from unlearnleak.attacks.feature_recovery import preset
from unlearnleak.attacks.feature_recovery.adaptive import invert
from unlearnleak.attacks.feature_recovery.config import FeatureRecoveryConfig
from unlearnleak.attacks.feature_recovery.labels import infer_labels
from unlearnleak.attacks.feature_recovery.target_gradient import target_gradient
from unlearnleak.cache import cache_dir
from unlearnleak.data import load_dataset
from unlearnleak.experiments.executors.local import die_with_parent
from unlearnleak.experiments.pipeline import FeatureRecoveryEvaluation, recover_and_evaluate
from unlearnleak.knowledge import ServerKnowledge
from unlearnleak.metrics import load_lpips
from unlearnleak.models import ModelSpec
from unlearnleak.pair import ModelPair, StateDict
from unlearnleak.report.grids import save_reconstruction_grid
from unlearnleak.scenario import base_of
from unlearnleak.stages import theta_stages
from unlearnleak.storage import environment_record, write_json_atomic
from unlearnleak.training import evaluate

Attacked = tuple[ModelPair, ServerKnowledge]  # what the server attack receives

MODES = ("approx", "exact")
# Each ingredient of `smooth` (the default of issue 3, whose ablation README.md reports), removed (or replaced by
# the paper's choice) one at a time for --ablation.
ABLATIONS: dict[str, dict[str, Any]] = {
    "smooth": {},
    "no feature matching (gradient only)": {"feature_match": 0.0, "feature_phase": 0.0},
    "no feature-only phase": {"feature_phase": 0.0},
    "TV 1e-2 (paper's weight)": {"total_variation": 0.01},
    "signed AdamW + step decay (paper optimiser)": {"signed": True, "optimizer": "adamw", "weight_decay": 0.01,
                                                    "lr": 0.04, "schedule": "step"},
    "randn init (paper)": {"init": "randn"},
    "no keep-best": {"keep_best": False},
    "2 restarts, worse dropped at 20 %": {"restarts": 2, "prune_at": (0.2,)},
}


@dataclass
class Setting:
    spec: ModelSpec
    base: StateDict
    original: StateDict
    x_ft: torch.Tensor
    y_ft: torch.Tensor
    positions: list[int]
    pairs: dict[str, list[Attacked]]
    accuracy: dict[str, float]


def build_setting(args: argparse.Namespace) -> Setting:
    """θ0 (cached), θ = one fine-tune step on D_ft, and θ_u per unlearned sample for both methods."""
    cfg = bench_config(width=args.width, device=args.device)
    train_set = load_dataset("cifar10", "train", cfg.data_dir)
    test_set = load_dataset("cifar10", "test", cfg.data_dir)
    started = time.perf_counter()
    base_st = base_of(cfg, train_set)
    spec, base = base_st.spec, base_st.state
    print(f"θ0 ready in {time.perf_counter() - started:.0f} s", flush=True)
    pool = torch.randperm(cfg.holdout, generator=torch.Generator().manual_seed(cfg.seed))  # as build_scenario
    ft_idx = pool[:cfg.n_train]
    x_ft, y_ft = train_set.x[ft_idx], train_set.y[ft_idx]
    root = cache_dir(cfg.cache_dir)
    positions = torch.randperm(cfg.n_train, generator=torch.Generator().manual_seed(args.sample_seed))
    positions_list = positions[:args.samples].tolist()
    pairs: dict[str, list[Attacked]] = {m: [] for m in MODES}
    original = base  # replaced by θ (the same for every position and method: one cached stage)
    for pos in positions_list:
        for mode, method in (("approx", "gradient_ascent"), ("exact", "exact")):
            theta, theta_u = theta_stages(root, base_st, x_ft, y_ft, ft_idx, torch.tensor([pos]), cfg.finetune,
                                          method, seed=cfg.seed, device=args.device)
            original, unlearned = theta.state, theta_u.state
            kind = "approximate" if method == "gradient_ascent" else "exact"
            pairs[mode].append((ModelPair(spec, original, unlearned),
                                ServerKnowledge(base=base, n_train=cfg.n_train, n_forget=1, unlearning=kind)))
    probe = ModelPair(spec, base, original)  # θ0 in the "original" slot, θ in the "unlearned" one
    accuracy = {"base_test_accuracy": evaluate(probe.model("original"), test_set.x, test_set.y),
                "original_test_accuracy": evaluate(probe.model("unlearned"), test_set.x, test_set.y)}
    print(f"θ0 test accuracy {accuracy['base_test_accuracy']:.3f}, θ {accuracy['original_test_accuracy']:.3f}; "
          f"D_ft rows {ft_idx.tolist()[:4]}…, unlearned positions {positions_list}", flush=True)
    return Setting(spec, base, original, x_ft, y_ft, positions_list, pairs, accuracy)


def attack(attacked: Attacked, name: str, args: argparse.Namespace, truth: tuple[torch.Tensor, torch.Tensor], *,
           budget: float | None, overrides: dict[str, Any] | None = None, lpips: Any = None
           ) -> FeatureRecoveryEvaluation:
    """Run one preset on one pair (labels inferred from ∇*) and score it: the pipeline's stage."""
    kwargs: dict[str, Any] = dict(overrides or {})
    if name == "paper":
        kwargs.update(iterations=args.iterations, restarts=args.paper_restarts)
    else:
        kwargs.setdefault("iterations", args.best_max_iterations)
    pair, knowledge = attacked
    assert knowledge.unlearning is not None
    spec = FeatureRecoveryConfig(preset=name, iterations=kwargs.pop("iterations"),
                                 restarts=kwargs.pop("restarts", None), mode=knowledge.unlearning, time_budget=budget,
                                 overrides=kwargs, seed=args.seed, device=args.device)
    return recover_and_evaluate(pair, knowledge, spec, truth, lpips=lpips)


_LPIPS: dict[str, Any] = {}


def run_sample(job: tuple[str, int, Attacked, torch.Tensor, torch.Tensor, int, argparse.Namespace]
               ) -> tuple[dict[str, tuple[dict[str, Any], torch.Tensor]], float]:
    """`paper` then `best` on one unlearned sample; `best` gets the optimisation seconds `paper` used."""
    mode, i, pair, truth_x, truth_y, position, args = job
    torch.set_num_threads(args.threads)
    if "model" not in _LPIPS:
        _LPIPS["model"] = load_lpips(device=args.device)
    out: dict[str, tuple[dict[str, Any], torch.Tensor]] = {}
    budget = 0.0
    for name in ("paper", "best"):
        ev = attack(pair, name, args, (truth_x, truth_y), budget=None if name == "paper" else budget,
                    lpips=_LPIPS["model"])
        rec = ev.reconstruction
        if name == "paper":
            budget = rec.timings["optimise_seconds"]
        assert ev.scores is not None
        s = ev.scores["samples"][0]
        row = {"sample": i, "position": position, "psnr": s["psnr"], "ssim": s["ssim"],
               "lpips": s["lpips"], "label": s["label"], "true_label": s["true_label"],
               "label_correct": s["label_correct"], "seconds": rec.seconds, "iterations": rec.iterations,
               "sec_per_iter": rec.timings.get("sec_per_iter"), "cost": rec.best_cost}
        out[name] = (row, rec.x)
        print(f"{mode:6s} {name:5s} sample {i} PSNR {s['psnr']:6.2f} SSIM {fmt(s['ssim'], '.3f')} "
              f"LPIPS {fmt(s['lpips'], '.3f')} label {s['label']}/{s['true_label']} "
              f"{rec.iterations} it {rec.seconds:6.1f} s cost {rec.best_cost:.4f}", flush=True)
    return out, budget


def ablate(job: tuple[dict[str, Any], Attacked, torch.Tensor, torch.Tensor, float, argparse.Namespace]) -> float:
    """PSNR of `smooth` with ``overrides`` on one approximate-unlearning sample, at that sample's budget."""
    overrides, pair, truth_x, truth_y, budget, args = job
    torch.set_num_threads(args.threads)
    ev = attack(pair, "smooth", args, (truth_x, truth_y), budget=budget, overrides=overrides)
    assert ev.scores is not None
    return float(ev.scores["samples"][0]["psnr"])


def _map(fn: Callable[[Any], Any], jobs: list[Any], processes: int) -> list[Any]:
    """``fn`` over ``jobs`` in order, in ``processes`` spawned workers (one sample each, --threads threads)."""
    if processes <= 1:
        return [fn(job) for job in jobs]
    with ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn"),
                             initializer=die_with_parent, initargs=(os.getpid(),)) as pool:  # none outlives us
        return list(pool.map(fn, jobs))


def restart_speedup(attacked: Attacked, args: argparse.Namespace) -> dict[str, float]:
    """Seconds per iteration of the same restarts, batched (vmap) and as a plain Python loop."""
    pair, knowledge = attacked
    target = target_gradient(pair, knowledge, "approximate")
    model = pair.model(target.invert_on, args.device, knowledge)
    labels = infer_labels(model, target, 1, pair.spec.num_classes).labels
    out: dict[str, float] = {}
    for batched in (True, False):
        cfg = preset("paper", iterations=args.speed_iterations, restarts=args.speed_restarts, batched=batched)
        invert(model, target, labels, tuple(pair.spec.input_shape), cfg.with_overrides(iterations=2))  # warm-up
        times = []
        for _ in range(args.speed_repeats):
            result = invert(model, target, labels, tuple(pair.spec.input_shape), cfg)
            times.append(result.timings["sec_per_iter"])
        out["batched" if batched else "loop"] = min(times)
    out["speedup"] = out["loop"] / out["batched"]
    return out


def fmt(v: Any, spec: str = ".2f") -> str:
    return "–" if v is None else format(v, spec)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a busy 2-core box)")
    parser.add_argument("--jobs", type=int, default=1,
                        help="samples attacked in parallel processes (each with --threads threads)")
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--sample-seed", type=int, default=2024)
    parser.add_argument("--seed", type=int, default=0, help="seeds the restarts' starting points")
    parser.add_argument("--iterations", type=int, default=2000, help="iterations of the paper preset")
    parser.add_argument("--paper-restarts", type=int, default=1)
    parser.add_argument("--best-max-iterations", type=int, default=100_000,
                        help="cap for `best`, whose iteration count is fitted to the paper's time")
    parser.add_argument("--speed-iterations", type=int, default=20)
    parser.add_argument("--speed-restarts", type=int, default=4)
    parser.add_argument("--speed-repeats", type=int, default=3)
    parser.add_argument("--ablation", action="store_true")
    parser.add_argument("--ablation-samples", type=int, default=4)
    parser.add_argument("--quick", action="store_true", help="2 samples, 200 iterations (smoke run)")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "out" / "feature_recovery")
    args = parser.parse_args()
    if args.quick:
        args.samples, args.iterations, args.speed_repeats, args.ablation_samples = 2, 200, 1, 2
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    setting = build_setting(args)
    truth_x = [setting.x_ft[p:p + 1] for p in setting.positions]
    truth_y = [setting.y_ft[p:p + 1] for p in setting.positions]

    rows: dict[tuple[str, str], list[dict[str, Any]]] = {(m, n): [] for m in MODES for n in ("paper", "best")}
    recs: dict[tuple[str, str], list[torch.Tensor]] = {(m, n): [] for m in MODES for n in ("paper", "best")}
    budgets: dict[tuple[str, int], float] = {}
    jobs = [(mode, i, pair, truth_x[i], truth_y[i], setting.positions[i], args)
            for mode in MODES for i, pair in enumerate(setting.pairs[mode])]
    done = _map(run_sample, jobs, args.jobs)
    for (mode, i, *_), (by_name, budget) in zip(jobs, done, strict=True):
        budgets[(mode, i)] = budget
        for name, (row, x) in by_name.items():
            rows[(mode, name)].append(row)
            recs[(mode, name)].append(x)
    for mode in MODES:
        for name in ("paper", "best"):
            save_reconstruction_grid(args.out / f"grid_{mode}_{name}.png", torch.cat(truth_x),
                                     torch.cat(recs[(mode, name)]),
                                     captions=[f"{r['psnr']:.1f}dB" for r in rows[(mode, name)]])

    print("\nper sample (PSNR dB | SSIM | LPIPS | label ok | seconds | iterations)")
    header = f"{'':>14s}" + "".join(f"  sample {i:<22d}" for i in range(args.samples)) + "  mean"
    print(header)
    means: dict[tuple[str, str], dict[str, float]] = {}
    for (mode, name), rs in rows.items():
        m = {k: statistics.fmean(float(r[k]) for r in rs if r[k] is not None) if any(r[k] is not None for r in rs)
             else None for k in ("psnr", "ssim", "lpips", "label_correct", "seconds", "iterations")}
        means[(mode, name)] = m  # type: ignore[assignment]
        cells = [f"{r['psnr']:5.2f}|{fmt(r['ssim'], '.3f')}|{fmt(r['lpips'], '.3f')}|{int(r['label_correct'])}|"
                 f"{r['seconds']:5.1f}|{r['iterations']}" for r in rs]
        mean = (f"{m['psnr']:5.2f}|{fmt(m['ssim'], '.3f')}|{fmt(m['lpips'], '.3f')}|{m['label_correct']:.2f}|"
                f"{m['seconds']:5.1f}|{m['iterations']:.0f}")
        print(f"{mode + ' ' + name:>14s}" + "".join(f"  {c:<29s}" for c in cells) + f"  {mean}")

    ablation: dict[str, float] = {}
    if args.ablation:
        print("\nablation (approximate unlearning, first "
              f"{args.ablation_samples} samples, same budget as paper; mean PSNR dB)")
        ab_jobs = [(overrides, pair, truth_x[i], truth_y[i], budgets[("approx", i)], args)
                   for overrides in ABLATIONS.values()
                   for i, pair in enumerate(setting.pairs["approx"][:args.ablation_samples])]
        psnrs = iter(_map(ablate, ab_jobs, args.jobs))
        for label in ABLATIONS:
            values = [next(psnrs) for _ in range(min(args.ablation_samples, args.samples))]
            ablation[label] = statistics.fmean(values)
            print(f"  {label:45s} {ablation[label]:6.2f}   " + " ".join(f"{v:5.2f}" for v in values), flush=True)
        paper_ref = statistics.fmean(r["psnr"] for r in rows[("approx", "paper")][:args.ablation_samples])
        print(f"  {'paper preset (reference)':45s} {paper_ref:6.2f}")

    speeds = {}
    for threads in sorted({args.threads, os.cpu_count() or 1}):  # the benchmark's threads, then all cores
        torch.set_num_threads(threads)
        speeds[threads] = speed = restart_speedup(setting.pairs["approx"][0], args)
        print(f"\nrestarts ({args.speed_restarts}, paper preset, {threads} thread(s)): batched "
              f"{speed['batched']:.4f} s/it, loop {speed['loop']:.4f} s/it, speed-up {speed['speedup']:.2f}×")
    speed = speeds[args.threads]
    label_ok = [r["label_correct"] for mode in MODES for r in rows[(mode, "best")]]
    summary = {
        "approx_psnr_mean": means[("approx", "best")]["psnr"],
        "exact_psnr_mean": means[("exact", "best")]["psnr"],
        "approx_ssim_mean": means[("approx", "best")]["ssim"],
        "exact_ssim_mean": means[("exact", "best")]["ssim"],
        "approx_lpips_mean": means[("approx", "best")]["lpips"],
        "exact_lpips_mean": means[("exact", "best")]["lpips"],
        "paper_approx_psnr_mean": means[("approx", "paper")]["psnr"],
        "paper_exact_psnr_mean": means[("exact", "paper")]["psnr"],
        "paper_approx_ssim_mean": means[("approx", "paper")]["ssim"],
        "paper_exact_ssim_mean": means[("exact", "paper")]["ssim"],
        "label_accuracy": sum(label_ok) / len(label_ok),
        "sec_per_iter": statistics.fmean(r["sec_per_iter"] for m in MODES for r in rows[(m, "best")]),
        "paper_sec_per_iter": statistics.fmean(r["sec_per_iter"] for m in MODES for r in rows[(m, "paper")]),
        "restart_speedup": speed["speedup"],
        "restart_speedup_by_threads": {str(t): v["speedup"] for t, v in speeds.items()},
        "iterations": args.iterations,
        "best_iterations_mean": statistics.fmean(r["iterations"] for m in MODES for r in rows[(m, "best")]),
        "seconds_per_sample": statistics.fmean(budgets.values()),
        "paper_restarts": args.paper_restarts,
        "best_restarts": preset("best").restarts,
        "width": args.width, "samples": args.samples, "threads": args.threads, "jobs": args.jobs,
        "base_test_accuracy": setting.accuracy["base_test_accuracy"],
        "total_seconds": time.perf_counter() - started,
    }
    if ablation:
        summary["ablation_approx_psnr"] = ablation
    write_json_atomic(args.out / "results.json", {
        "summary": summary, "rows": {f"{m}/{n}": r for (m, n), r in rows.items()},
        "restarts": {str(t): v for t, v in speeds.items()}, "args": vars(args), "environment": environment_record()})
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    sys.exit(main())
