"""Short-budget tuning of the default (issue 8, item 1) on the suite's TUNING cases only.

Per cell (case, setting, sample — the suite's own pairs, ``suite.build_pair``) ``paper`` runs
``--paper-iterations`` × 1 restart once; then every variant (a preset plus ``InversionConfig`` overrides) gets
``paper``'s optimisation seconds on the same pair. One JSON line per (cell, variant) goes to ``--out``; the
summary prints, per (case, setting) and variant, the mean PSNR / LPIPS and the paired mean difference to
``paper`` over the samples, then the same pooled over all cells.

    python benchmarks/tune_short.py --variants '{"best": {}, "tv0.1": {"race": [], "total_variation": 0.1}}'
    python benchmarks/tune_short.py --summary          # the table of --out

Held-out cases are refused: the split is fixed in ``suite_cases.py``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

from suite import RESULTS, _lpips, baselines, build_pair
from suite_cases import CASES
from unlearnleak.attacks.feature_recovery import evaluate_reconstruction, recover
from unlearnleak.metrics import image_metrics

DEFAULT_CELLS = ("convnet16-1ep:approx-k1-N32,convnet16-1ep:exact-k1-N32,convnet16-1ep:exact-k1-N8,"
                 "lenet:approx-k1-N32,lenet:exact-k1-N32,cnn-nobn-random:approx-k1-N32,cnn-nobn-random:exact-k1-N32")


def _scores(rec: Any, truth_x: torch.Tensor, truth_y: torch.Tensor) -> dict[str, Any]:
    scored = evaluate_reconstruction(rec, truth_x, truth_y, _lpips("cpu"))
    keys = ("psnr", "ssim", "lpips")
    return {k: statistics.fmean(float(s[k]) for s in scored["samples"]) for k in keys} | {
        "seconds": rec.seconds, "iterations": rec.iterations, "race": rec.config.get("race")}


def run(args: argparse.Namespace) -> None:
    torch.set_num_threads(1)
    variants: dict[str, dict[str, Any]] = json.loads(args.variants)
    done = set()
    if args.out.is_file():  # resumable: a (cell, variant) already in --out is not rerun
        done = {(r["case"], r["setting"], r["sample"], r["paper_iterations"], r["variant"])
                for r in map(json.loads, args.out.read_text().splitlines())}
    for cell in args.cells.split(","):
        case_name, setting_name = cell.split(":")
        case = CASES.get(case_name)
        if case.split != "tune":
            sys.exit(f"error: {case_name} is a {case.split} case; tune only on the tuning half")
        setting = next(s for s in case.settings if s.name == setting_name)
        mode = "approximate" if setting.method == "approx" else "exact"
        for sample in range(args.samples):
            if all((case_name, setting_name, sample, args.paper_iterations, v) in done for v in variants):
                continue
            pair, knowledge, truth_x, truth_y, _ = build_pair(case, setting, sample, "cpu")
            paper = recover(pair, knowledge, preset="paper", iterations=args.paper_iterations, restarts=1,
                            seed=sample, mode=mode, method="inversion")
            budget = float(paper.timings.get("optimise_seconds", paper.seconds))
            base = {"case": case_name, "setting": setting_name, "sample": sample, "budget": budget,
                    "paper_iterations": args.paper_iterations}
            rows = [{**base, "variant": "paper", **_scores(paper, truth_x, truth_y)}]
            for m, guess in baselines(truth_x).items():
                per = image_metrics(guess, truth_x, lpips=_lpips("cpu"))
                rows.append({**base, "variant": m, **{k: statistics.fmean(float(s[k]) for s in per)
                                                      for k in ("psnr", "ssim", "lpips")}})
            for name, overrides in variants.items():
                if (case_name, setting_name, sample, args.paper_iterations, name) in done:
                    continue
                spec = dict(overrides)
                preset = spec.pop("preset", "best")
                rec = recover(pair, knowledge, preset=preset, iterations=100_000, seed=sample, mode=mode,
                              time_budget=budget, method="inversion", **spec)
                rows.append({**base, "variant": name, "overrides": overrides, **_scores(rec, truth_x, truth_y)})
            with args.out.open("a") as sink:
                for row in rows:
                    sink.write(json.dumps(row) + "\n")
            line = "  ".join(f"{r['variant']} {r['psnr']:.2f}" for r in rows)
            print(f"{case_name:16s} {setting_name:14s} #{sample} ({budget:.1f} s)  {line}", flush=True)


def summarise(path: Path, only: set[str] | None = None) -> None:
    """Per (case, setting) and variant: mean PSNR, LPIPS, and the paired mean PSNR difference to paper."""
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if only:
        rows = [r for r in rows if r["variant"] in only | {"paper", "mean_colour", "thumbnail"}]
    paper = {(r["case"], r["setting"], r["sample"], r["paper_iterations"]): r for r in rows if r["variant"] == "paper"}
    groups: dict[tuple[str, str], dict[str, list[dict[str, Any]]]] = {}
    for r in rows:
        groups.setdefault((r["case"], r["setting"]), {}).setdefault(r["variant"], []).append(r)
    pooled: dict[str, list[tuple[float, float | None]]] = {}
    print(f"{'case':16s} {'setting':14s} {'variant':22s} {'n':>2s} {'PSNR':>6s} {'Δpaper':>7s} {'LPIPS':>6s} "
          f"{'it':>6s}")
    for (case, setting), by_variant in sorted(groups.items()):
        for variant, rs in by_variant.items():
            diffs = [r["psnr"] - paper[(r["case"], r["setting"], r["sample"], r["paper_iterations"])]["psnr"]
                     for r in rs]
            lp = [r.get("lpips") for r in rs]
            pooled.setdefault(variant, []).extend(zip(diffs, lp, strict=True))
            its = statistics.fmean(r.get("iterations") or 0 for r in rs)
            print(f"{case:16s} {setting:14s} {variant:22s} {len(rs):2d} {statistics.fmean(r['psnr'] for r in rs):6.2f} "
                  f"{statistics.fmean(diffs):+7.2f} {statistics.fmean(v for v in lp if v is not None):6.3f} {its:6.0f}")
    print("\npooled over cells: variant, cells, mean Δ PSNR vs paper, mean LPIPS")
    for variant, vals in sorted(pooled.items(), key=lambda kv: -statistics.fmean(d for d, _ in kv[1])):
        print(f"  {variant:22s} {len(vals):3d} {statistics.fmean(d for d, _ in vals):+6.2f} dB  "
              f"LPIPS {statistics.fmean(v for _, v in vals if v is not None):.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cells", default=DEFAULT_CELLS, help="CASE:SETTING,… (tuning cases only)")
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--paper-iterations", type=int, default=100)
    parser.add_argument("--variants", default='{"best": {}}', help="JSON: name → {preset?, InversionConfig fields}")
    parser.add_argument("--out", type=Path, default=RESULTS / "tune_short.jsonl")
    parser.add_argument("--summary", action="store_true", help="only summarise --out")
    parser.add_argument("--only", help="comma-separated variants to summarise")
    args = parser.parse_args()
    if not args.summary:
        started = time.perf_counter()
        run(args)
        print(f"{time.perf_counter() - started:.0f} s")
    summarise(args.out, set(args.only.split(",")) if args.only else None)


if __name__ == "__main__":
    main()
