"""Does the race's held-out score judge recipes better later in their runs? TUNING cases only (issue 16).

The race scores each recipe after a leg of 100 of 1,000 steps (cooled). On trained networks that score over-rates
`paper` (docs/feature_recovery.md). Here each recipe runs its OWN 1,000-step schedule on the race's fitted half of
∇* (seed = sample, as the race draws it), and at checkpoints (steps 100, 300, 500 and 1,000) its held-out cost is
measured after a cool-down probe of 50 steps on a copy (none at 1,000: the schedule has decayed). One JSON line per
cell: per recipe, the held-out cost at each checkpoint and the PSNR of the fitted-half run at 1,000 (evaluation
only). ``--summary`` joins the recorded recipe-alone PSNRs (tune_race rows) and prints, per checkpoint, how often
the lowest held-out cost picks the best recipe and the mean PSNR of that pick.

    python benchmarks/finalist_score.py --cases allconv-bn-silu,resnet20-w8 --out results/finalist_score.jsonl
    python benchmarks/finalist_score.py --summary --out results/finalist_score.jsonl
"""

from __future__ import annotations

import argparse
import glob
import json
import statistics
import sys
from pathlib import Path

import torch

import suite
from suite_cases import CASES, Setting
from unlearnleak.attacks.feature_recovery import preset, target_gradient
from unlearnleak.attacks.feature_recovery.adaptive import holdout_mask
from unlearnleak.attacks.feature_recovery.inversion import (
    GradientMatcher,
    InversionConfig,
    learning_rate,
    run_inversion,
)
from unlearnleak.metrics import psnr

RECIPES = ("paper", "modern", "smooth")
T, COOL, CHECKPOINTS = 1000, 50, (100, 300, 500, 1000)


def run_cell(case_name: str, method: str, sample: int) -> dict:
    """Held-out costs of each recipe at the checkpoints of its own schedule, on the race's fitted half."""
    pair, knowledge, truth_x, truth_y, _ = suite.build_pair(CASES.get(case_name), Setting(method, 1, 32), sample, "cpu")
    target = target_gradient(pair, knowledge, "approximate" if method == "approx" else "exact")
    model = pair.model(target.invert_on, "cpu", knowledge)
    shape = tuple(pair.spec.input_shape)
    base = preset("best")
    fit = holdout_mask(model, target, base.race_holdout, sample)
    held = GradientMatcher(model, target, truth_y, InversionConfig(cost="cosine"), mask=1 - fit, input_shape=shape)
    out = {}
    for name in RECIPES:
        cfg = preset(name, iterations=T, restarts=1, keep_best=False, prune_at=())
        x, state, done, costs = None, None, 0, {}
        for stop in CHECKPOINTS:
            part = run_inversion(model, target, truth_y, shape, cfg, seed=sample, log_every=0, mask=fit,
                                 feature_phase=False, init=x, optimizer_state=state, start_step=done, stop_step=stop)
            x, state, done = part.candidates, part.optimizer_state, stop
            probe = x
            if stop < T:
                probe = run_inversion(model, target, truth_y, shape, cfg.with_overrides(
                    iterations=COOL, lr=learning_rate(cfg, stop, T), schedule="cosine", warmup=0.0), seed=sample,
                    log_every=0, init=x, mask=fit, feature_phase=False, optimizer_state=state).candidates
            with held.hooks():
                costs[stop] = float(held.score(probe, full=False)[0])
        out[name] = {"heldout": costs, "psnr_fit_half": float(psnr(x[0], truth_x).mean())}
    return {"case": case_name, "method": method, "sample": sample, "out": out}


def summary(rows: list[dict]) -> None:
    """Per checkpoint: right picks and the mean recipe-alone PSNR of the pick, beside the oracle."""
    alone: dict[tuple, dict[str, float]] = {}
    for f in glob.glob(str(Path(__file__).parent / "results" / "tune_race*.jsonl")):
        for line in Path(f).read_text().splitlines():
            r = json.loads(line)
            if r.get("name") in RECIPES and r.get("iterations") == T:
                alone.setdefault((r["case"], r["method"], r["sample"]), {})[r["name"]] = r["psnr"]
    cells = [(r, alone[(r["case"], r["method"], r["sample"])]) for r in rows
             if len(alone.get((r["case"], r["method"], r["sample"]), {})) == 3]
    oracle = statistics.fmean(max(a.values()) for _, a in cells)
    print(f"{len(cells)} cells; oracle (best recipe alone) {oracle:.2f} dB")
    print("| checkpoint | right picks | PSNR of the pick (recipe alone) | picks p/m/s |")
    print("|---|---|---|---|")
    for stop in CHECKPOINTS:
        picks = [min(RECIPES, key=lambda n: r["out"][n]["heldout"][str(stop)]) for r, _ in cells]
        right = sum(a[p] == max(a.values()) for p, (_, a) in zip(picks, cells, strict=True))
        mean = statistics.fmean(a[p] for p, (_, a) in zip(picks, cells, strict=True))
        print(f"| {stop} | {right} of {len(cells)} | {mean:.2f} | "
              + "/".join(str(picks.count(n)) for n in RECIPES) + " |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", default="allconv-bn-silu,preact-resnet-bn,resnet20-w8")
    parser.add_argument("--methods", default="approx")
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--summary", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if not args.summary:
        if any(CASES.get(n).split != "tune" for n in args.cases.split(",")):
            print("error: --cases must be tuning cases (suite_cases.py)", file=sys.stderr)
            return 2
        for sample in range(args.samples):
            for name in args.cases.split(","):
                for method in args.methods.split(","):
                    with args.out.open("a") as f:
                        f.write(json.dumps(run_cell(name, method, sample)) + "\n")
    summary([json.loads(line) for line in args.out.read_text().splitlines() if line.strip()])
    return 0


if __name__ == "__main__":
    sys.exit(main())
