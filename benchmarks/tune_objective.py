"""Does the per-layer cosine (``layer_cosine``) recover more than the one global cosine? TUNING cases only (issue 16).

On a trained network ∇*'s norm sits mostly in the last layers, so one cosine over all parameters says little
about the first layers, where the spatial detail is; ``layer_cosine`` weighs every parameter tensor the same.
Per (case, sample) each ``--recipes`` preset runs once per ``--costs`` objective at ``--iterations`` on the same
cached pair (approximate unlearning, k = 1, N = 32, true label), and its PSNR is recorded beside the photo's own
mean colour and 4×4 thumbnail: one JSON line per run.

    python benchmarks/tune_objective.py --cases lenet,convnet16-1ep --samples 4
    python benchmarks/tune_objective.py --summary
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

import suite
from common import summary_of
from suite_cases import CASES, Setting, not_tuning
from unlearnleak.attacks.feature_recovery.attack import recover
from unlearnleak.attacks.feature_recovery.inversion import PRESETS
from unlearnleak.attacks.feature_recovery.objectives import OBJECTIVES
from unlearnleak.metrics import psnr
from unlearnleak.metrics.baselines import own_mean_colour, thumbnail_4x4
from unlearnleak.storage import environment_record

OUT = Path(__file__).resolve().parent / "results" / "tune_objective.jsonl"


def summary(path: Path) -> None:
    """Per (case, recipe, cost): mean PSNR ± 95 % interval over the photos, the paired difference to ``cosine``,
    and the photos' own mean colour and 4×4 thumbnail beside them."""
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    groups: dict[tuple[str, str, str], dict[int, dict[str, float]]] = {}
    for r in rows:  # a rerun of a photo replaces its row
        groups.setdefault((r["case"], r["recipe"], r["cost"]), {})[r["sample"]] = r
    for (case, recipe, cost), by_sample in sorted(groups.items()):
        base = groups.get((case, recipe, "cosine"), {})
        cell = suite.interval([r["psnr"] for r in by_sample.values()])
        mean_colour = statistics.fmean(r["own_mean_colour"] for r in by_sample.values())
        thumb = statistics.fmean(r["thumbnail_4x4"] for r in by_sample.values())
        paired = suite.interval([by_sample[s]["psnr"] - base[s]["psnr"] for s in by_sample if s in base])
        diff = f"  − cosine {paired['mean']:+.2f} ± {paired['ci95']:.2f} dB" if cost != "cosine" and paired else ""
        print(f"{case:16s} {recipe:8s} {cost:13s} n={cell['n']}  {cell['mean']:6.2f} ± {cell['ci95']:.2f} dB{diff}"
              f"  (own mean colour {mean_colour:.2f}, thumbnail {thumb:.2f})")


def main() -> int:
    """Entry point."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", default="lenet,convnet16-1ep")
    parser.add_argument("--recipes", default="modern")
    parser.add_argument("--costs", default="cosine,layer_cosine")
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--iterations", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--summary", action="store_true")
    args = parser.parse_args()
    if args.summary:
        return summary_of(args.out, summary)
    cases, costs = args.cases.split(","), args.costs.split(",")
    refused = not_tuning(cases)
    if refused:
        print(refused, file=sys.stderr)
        return 2
    recipes = args.recipes.split(",")
    bad = [r for r in recipes if r not in PRESETS or PRESETS.get(r).race]
    if bad:  # a racing preset's candidates keep their own costs: the override would not reach them
        print(f"error: --recipes {bad}: name plain presets that do not race "
              f"({[n for n in PRESETS.names() if not PRESETS.get(n).race]})", file=sys.stderr)
        return 2
    unknown = [c for c in costs if c not in OBJECTIVES]
    if unknown:
        print(f"error: unknown cost(s) {unknown}; known: {OBJECTIVES.names()}", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    env = environment_record()
    for case_name in cases:
        for sample in range(args.samples):
            pair, knowledge, truth, labels, _ = suite.build_pair(CASES.get(case_name), Setting("approx", 1, 32),
                                                                 sample, "cpu")
            baselines = {name: float(psnr(fn(truth), truth).mean())
                         for name, fn in (("own_mean_colour", own_mean_colour), ("thumbnail_4x4", thumbnail_4x4))}
            for recipe in recipes:
                for cost in costs:
                    started = time.perf_counter()
                    rec = recover(pair, knowledge, preset=recipe, iterations=args.iterations, seed=sample,
                                  labels=labels, cost=cost)
                    row = {"case": case_name, "setting": "approx-k1-N32", "sample": sample, "recipe": recipe,
                           "cost": cost, "iterations": args.iterations,
                           "psnr": float(psnr(rec.x.clamp(0, 1), truth).mean()),
                           "seconds": time.perf_counter() - started, **baselines,
                           "environment": {k: env.get(k) for k in ("torch", "git", "threads") if k in env}}
                    suite.append_row(args.out, row)
                    print(json.dumps({k: row[k] for k in ("case", "sample", "recipe", "cost", "psnr")}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
