"""How should the race and its winner share the budget? Measured on the suite's TUNING cases only (issue 16).

Per (case, setting, sample), at equal total iterations: each recipe run ALONE (one trajectory, the whole
budget), and ``best`` under several race rules (``--variants``, names of ``VARIANTS``: overrides of the ``best``
preset). One JSON line per (cell, method) with the PSNR (evaluation only; the race never sees the truth), the
race's pick and its held-out costs. ``--summary`` prints per case the mean PSNR of each method, of the best
recipe alone (the oracle) and the paired difference of each rule to the oracle.

    python benchmarks/tune_race.py --cases lenet,cnn-nobn-random,convnet16-1ep --samples 2 --iterations 1000
    python benchmarks/tune_race.py --summary
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

import suite
from common import append_run_header
from suite_cases import CASES, Setting
from unlearnleak.attacks.feature_recovery import invert, preset, target_gradient
from unlearnleak.attacks.feature_recovery.inversion import InversionConfig, RaceEntry
from unlearnleak.errors import UnlearnleakError
from unlearnleak.metrics import psnr, ssim

OUT = Path(__file__).resolve().parent / "results" / "tune_race.jsonl"
ALONE = ("paper", "modern", "smooth")
# rule name → overrides of the best preset; a variant that does not set race_agreement runs without the
# agreement gate (race_agreement 0: the rules measured before the gate, unchanged)
VARIANTS: dict[str, dict[str, Any]] = {
    "compressed": {"race_schedule": "compressed", "race_share": 0.75, "race_cooldown": 0.0,  # the rule before:
                   "race_continue_lr": 0.3, "race_tolerance": 0.75},  # 3 compressed legs of 1/4, winner at 0.3× lr
    "trunc30": {"race_schedule": "truncated", "race_share": 0.30, "race_continue_lr": 1.0},
    "trunc45": {"race_schedule": "truncated", "race_share": 0.45, "race_continue_lr": 1.0},
    "trunc30-tol0": {"race_schedule": "truncated", "race_share": 0.30, "race_continue_lr": 1.0,
                     "race_tolerance": 0.0},
    # the rule chosen: legs of 10 % each on the recipe's own schedule, scored after a cool-down probe of half a
    # leg, tolerance 0.25; the winner continues its schedule (the preset's values today)
    "trunc-cool": {"race_schedule": "truncated", "race_share": 0.30, "race_cooldown": 0.5, "race_tolerance": 0.25},
    # instead of the cool-down, the mean of the leg's last half is scored: no extra steps, a longer winner's schedule
    "trunc-avg": {"race_schedule": "truncated", "race_share": 0.30, "race_cooldown": 0.0, "race_average": 0.5,
                  "race_tolerance": 0.25},
    "trunc-avg-s20": {"race_schedule": "truncated", "race_share": 0.20, "race_cooldown": 0.0, "race_average": 0.5,
                      "race_tolerance": 0.25},
    # cheaper cool-downs: a quarter leg, or legs of 2/3 the length
    "trunc-cool25": {"race_schedule": "truncated", "race_share": 0.30, "race_cooldown": 0.25, "race_tolerance": 0.25},
    "trunc-s20-cool": {"race_schedule": "truncated", "race_share": 0.20, "race_cooldown": 0.5, "race_tolerance": 0.25},
    # the chosen rule with the lowest held-out cost alone deciding (no TV tie-break): ahead on the tuning half,
    # behind on the held-out half (measured and rejected: docs/feature_recovery.md, benchmarks/race_replay.py)
    "trunc-cool-tol0": {"race_schedule": "truncated", "race_share": 0.30, "race_cooldown": 0.5, "race_tolerance": 0.0},
    # the chosen rule with its three recipes named (= trunc-cool, whatever the preset's race says)
    "trunc-cool-pms": {"race_schedule": "truncated", "race_share": 0.30, "race_cooldown": 0.5, "race_tolerance": 0.25,
                       "race": (RaceEntry(recipe="paper", prior="total_variation", weights=(0.01,)),
                                RaceEntry(recipe="modern", prior="colour_tv", weights=(0.1,)),
                                RaceEntry(recipe="smooth", prior="total_variation", weights=(0.3,)))},
    # two recipes only (paper, modern; legs of 15 %): ahead on the tuning half, 1 dB behind on the held-out half
    # (`smooth` wins the BN-GELU network there; measured and rejected: docs/feature_recovery.md)
    "trunc-cool-pm": {"race_schedule": "truncated", "race_share": 0.30, "race_cooldown": 0.5, "race_tolerance": 0.25,
                      "race": (RaceEntry(recipe="paper", prior="total_variation", weights=(0.01,)),
                               RaceEntry(recipe="modern", prior="colour_tv", weights=(0.1,)))},
    # the chosen rule with the agreement gate (today's preset): `paper` wins outright if its scored image agrees
    # with another recipe's to >= 22 dB PSNR, else the rule above. (Rows named "trunc-cool-agree22" were measured at
    # commit 7c105a7, where below the threshold `paper` also left the race: rejected on the held-out half.)
    "trunc-cool-gate22": {"race_schedule": "truncated", "race_share": 0.30, "race_cooldown": 0.5,
                          "race_tolerance": 0.25, "race_agreement": 22.0},
    # the gate plus the consensus: where the gate does not fire, half the winner's final image and half the mean of
    # the other recipes' scored images (no extra steps)
    "trunc-cool-gate22-cons50": {"race_schedule": "truncated", "race_share": 0.30, "race_cooldown": 0.5,
                                 "race_tolerance": 0.25, "race_agreement": 22.0, "race_consensus": 0.5},
    # the gate with a wider tolerance: the smoothest candidate within 2x (not 1.25x) the lowest held-out cost
    "trunc-cool-gate22-tol1": {"race_schedule": "truncated", "race_share": 0.30, "race_cooldown": 0.5,
                               "race_tolerance": 1.0, "race_agreement": 22.0},
    # the gate, the same wider tolerance, and the agreement tie-break instead of TV: among the candidates within 2x
    # the lowest held-out cost, the image that agrees most with the other candidates' scored images
    "trunc-cool-gate22-agree1": {"race_schedule": "truncated", "race_share": 0.30, "race_cooldown": 0.5,
                                 "race_tolerance": 1.0, "race_agreement": 22.0, "race_pick": "agreement"},
}


def alone_recipe(spec: str, iterations: int) -> InversionConfig:
    """A recipe run alone: a preset name, optionally with numeric overrides (``modern+bn_prior=0.01``)."""
    name, *overrides = spec.split("+")
    values = {key: float(value) for key, value in (o.split("=", 1) for o in overrides)}
    return preset(name, iterations=iterations, restarts=1, **values)


def run_cell(case_name: str, method: str, sample: int, args: argparse.Namespace) -> list[dict[str, Any]]:
    case = CASES.get(case_name)
    setting = Setting(method, 1, 32)
    pair, knowledge, truth_x, truth_y, _ = suite.build_pair(case, setting, sample, "cpu")
    target = target_gradient(pair, knowledge, "approximate" if method == "approx" else "exact")
    model = pair.model(target.invert_on, "cpu", knowledge)
    shape = tuple(pair.spec.input_shape)
    rows = []
    methods = [(n, alone_recipe(n, args.iterations)) for n in args.alone] + [
        (v, preset("best", iterations=args.iterations, race_min_steps=0, **({"race_agreement": 0.0} | VARIANTS[v])))
        for v in args.variants]
    for name, cfg in methods:
        started = time.perf_counter()
        result = invert(model, target, truth_y, shape, cfg, seed=sample)
        race = result.race or {}
        row = {"case": case_name, "method": method, "sample": sample, "name": name, "iterations": args.iterations,
               "psnr": float(psnr(result.x, truth_x).mean()), "ssim": float(ssim(result.x.clamp(0, 1), truth_x).mean()),
               "seconds": time.perf_counter() - started,
               "chosen": race.get("chosen_recipe"), "heldout": race.get("heldout_costs"),
               "tv": race.get("total_variation"), "leg": race.get("steps_per_candidate"),
               "agreement": race.get("agreement_db"), "agreements": race.get("agreements_db"),
               "consensus": (race.get("consensus") or {}).get("applied")}
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def summary(rows: list[dict[str, Any]]) -> None:
    """Per case: mean PSNR per method, the oracle (best recipe alone per cell) and each rule's gap to it."""
    cells: dict[tuple[str, str, int, int], dict[str, dict[str, Any]]] = {}
    for r in rows:
        cells.setdefault((r["case"], r["method"], r["sample"], r["iterations"]), {})[r["name"]] = r
    names = sorted({r["name"] for r in rows}, key=lambda n: (n not in ALONE, n))
    by_case: dict[tuple[str, str, int], list[dict[str, dict[str, Any]]]] = {}
    for (case, method, _, its), c in sorted(cells.items()):
        if all(a in c for a in ALONE):
            by_case.setdefault((case, method, its), []).append(c)
    print("| case | setting | iterations | cells | " + " | ".join(names) + " | best alone |")
    print("|---|---|---|---|" + "---|" * (len(names) + 1))
    for (case, method, its), cs in by_case.items():
        oracle = [max(c[a]["psnr"] for a in ALONE) for c in cs]
        parts = []
        for n in names:
            vals = [(c[n]["psnr"], o, c[n].get("chosen")) for c, o in zip(cs, oracle, strict=True) if n in c]
            if not vals:
                parts.append("–")
                continue
            mean = statistics.fmean(v for v, _, _ in vals)
            gap = statistics.fmean(v - o for v, o, _ in vals)
            picks = "" if n in ALONE else " [" + ",".join((p or "?")[0] for _, _, p in vals) + "]"
            parts.append(f"{mean:.2f} ({gap:+.2f}){picks}")
        print(f"| {case} | {method} | {its} | {len(cs)} | " + " | ".join(parts)
              + f" | {statistics.fmean(oracle):.2f} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", default="lenet,cnn-nobn-random,convnet16-1ep")
    parser.add_argument("--methods", default="approx")
    parser.add_argument("--samples", type=int, default=2)
    parser.add_argument("--first-sample", type=int, default=0)
    parser.add_argument("--iterations", type=int, default=1000)
    parser.add_argument("--alone", type=lambda s: [p for p in s.split(",") if p], default=list(ALONE),
                        help="recipes run alone: preset names, optionally with overrides (modern+bn_prior=0.01)")
    parser.add_argument("--variants", type=lambda s: [p for p in s.split(",") if p], default=list(VARIANTS))
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--summary", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if not args.summary:
        tuning = {n for n in CASES if CASES.get(n).split == "tune"}
        bad = [n for n in args.cases.split(",") if n not in tuning] + [v for v in args.variants if v not in VARIANTS]
        if bad:
            print(f"error: {bad} are not tuning cases ({sorted(tuning)}) or variants ({list(VARIANTS)})",
                  file=sys.stderr)
            return 2
        for spec in args.alone:
            try:
                alone_recipe(spec, args.iterations)
            except (ValueError, KeyError, UnlearnleakError) as exc:  # pydantic's ValidationError: a ValueError
                print(f"error: --alone {spec!r}: write PRESET or PRESET+FIELD=NUMBER (e.g. modern+bn_prior=0.01); "
                      f"{' '.join(str(exc).split())[:300]}", file=sys.stderr)
                return 2
        append_run_header(args)
        for sample in range(args.first_sample, args.first_sample + args.samples):
            for name in args.cases.split(","):
                for method in args.methods.split(","):
                    for row in run_cell(name, method, sample, args):
                        with args.out.open("a") as f:
                            f.write(json.dumps(row) + "\n")
    rows = [json.loads(line) for line in args.out.read_text().splitlines() if line.strip()]
    summary([r for r in rows if "name" in r])
    return 0


if __name__ == "__main__":
    sys.exit(main())
