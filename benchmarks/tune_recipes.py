"""Does the race's score rank whole recipes as PSNR does? Measured on the suite's TUNING cases only (issue 16).

For each (case, setting, sample) every recipe runs its race leg exactly as ``best`` would run it — its own
optimiser, start, space and priors, its schedule compressed to ``--race-steps`` steps, fitted to the race's
half of ∇*'s coordinates — and then, unlike ``best``, EVERY recipe is continued (``--iterations`` − race
steps on all of ∇*, fresh schedule, as the winner would be). One JSON line per (cell, recipe) with the
attacker-side scores of the race iterate (held-out cost, fitted cost, TV, batch-norm statistics distance) and
the PSNR of the race iterate and of the continued result (evaluation only). ``--summary`` prints, per cell
and pick rule (the lowest held-out cost alone; ``best``'s rule: the lowest TV within 1.75× of it), whether the
pick was the recipe with the best final PSNR, and the mean PSNR it got.

    python benchmarks/tune_recipes.py --cases lenet,cnn-nobn-random --samples 4 --iterations 1000
    python benchmarks/tune_recipes.py --summary
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
from torch import nn

import suite
from common import append_run_header
from suite_cases import CASES, Setting
from unlearnleak.attacks.feature_recovery import preset, target_gradient
from unlearnleak.attacks.feature_recovery.adaptive import holdout_mask
from unlearnleak.attacks.feature_recovery.inversion import GradientMatcher, InversionConfig, run_inversion
from unlearnleak.attacks.feature_recovery.priors import total_variation
from unlearnleak.metrics import psnr

OUT = Path(__file__).resolve().parent / "results" / "tune_recipes.jsonl"
RECIPES = {  # name → (preset, overrides)
    "paper": ("paper", {}),
    "modern": ("modern", {}),
    "smooth": ("smooth", {}),
}


def bn_distance(model: nn.Module, x: torch.Tensor) -> float:
    """Σ over trained batch-norm layers of ‖μ(h) − μ_BN‖ + ‖σ²(h) − σ²_BN‖ for the inputs x (the white-box
    server's naturalness check; 0 for a network without batch norm)."""
    terms: list[float] = []
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]

    def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        h = inputs[0]
        dims = [0, *range(2, h.dim())]
        terms.append(float((h.mean(dims) - module.running_mean).norm()
                           + (h.var(dims, unbiased=False) - module.running_var).norm()))
    handles = [m.register_forward_pre_hook(hook) for m in norms]
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    return sum(terms)


def run_cell(case_name: str, method: str, sample: int, args: argparse.Namespace) -> list[dict[str, Any]]:
    case = CASES.get(case_name)
    setting = Setting(method, 1, 32)
    pair, knowledge, truth_x, truth_y, _ = suite.build_pair(case, setting, sample, "cpu")
    mode = "approximate" if method == "approx" else "exact"
    target = target_gradient(pair, knowledge, mode)
    model = pair.model(target.invert_on, "cpu", knowledge)
    shape = tuple(pair.spec.input_shape)
    fit = holdout_mask(model, target, 0.5, sample)
    held = GradientMatcher(model, target, truth_y, InversionConfig(cost="cosine"), mask=1 - fit, input_shape=shape)
    fitm = GradientMatcher(model, target, truth_y, InversionConfig(cost="cosine"), mask=fit, input_shape=shape)
    full = GradientMatcher(model, target, truth_y, InversionConfig(cost="cosine"), input_shape=shape)
    rows = []
    for j, (name, (base, overrides)) in enumerate(RECIPES.items()):
        if args.recipes and name not in args.recipes:
            continue
        started = time.perf_counter()
        cfg = preset(base, **overrides).with_overrides(restarts=1, keep_best=True, prune_at=())
        leg = run_inversion(model, target, truth_y, shape, cfg.with_overrides(iterations=args.race_steps),
                            seed=sample + 101 * j, log_every=0, mask=fit if args.fit == "half" else None)
        assert leg.candidates is not None
        xr = leg.candidates  # (1, k, C, H, W)
        scores = {"heldout": float(held.score(xr, full=False)[0]), "fit": float(fitm.score(xr, full=False)[0]),
                  "full": float(full.score(xr)[0]), "tv": float(total_variation(xr[0])),
                  "bn": bn_distance(model, xr[0])}
        cont = run_inversion(model, target, truth_y, shape,
                             cfg.with_overrides(iterations=max(1, args.iterations - leg.iterations),
                                                lr=cfg.lr * args.cont_lr), seed=sample,
                             log_every=0, init=xr, feature_phase=False)
        assert cont.candidates is not None
        final = cont.candidates
        row = {"case": case_name, "method": method, "sample": sample, "recipe": name, "race_steps": args.race_steps,
               "fit": args.fit, "cont_lr": args.cont_lr,
               "iterations": args.iterations, "scores": scores,
               "final_scores": {"full": float(full.score(final)[0]), "tv": float(total_variation(final[0]))},
               "psnr_race": float(psnr(xr[0], truth_x).mean()), "psnr_final": float(psnr(final[0], truth_x).mean()),
               "seconds": time.perf_counter() - started}
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def _pick(rows: list[dict[str, Any]], tolerance: float) -> dict[str, Any]:
    """``best``'s pick: the lowest TV among the rows within (1 + tolerance) × the lowest held-out cost."""
    lowest = min(r["scores"]["heldout"] for r in rows)
    eligible = [r for r in rows if r["scores"]["heldout"] <= (1 + tolerance) * lowest]
    return min(eligible, key=lambda r: (r["scores"]["tv"], r["scores"]["heldout"]))


def summary(rows: list[dict[str, Any]], tolerances: tuple[float, ...] = (0.0, 0.75)) -> None:
    """Per (case, setting, leg length, continuation): mean final PSNR per recipe, the best possible, and what
    each pick rule (held-out cost alone: tolerance 0; ``best``'s: 0.75) got."""
    cells: dict[tuple[str, str, int, int, int, str], list[dict[str, Any]]] = {}
    for r in rows:
        cells.setdefault((r["case"], r["method"], r["sample"], r["race_steps"], r["iterations"],
                          f'{r.get("fit", "half")}, cont lr ×{r.get("cont_lr", 1.0):g}'), []).append(r)
    by_case: dict[tuple[str, str, int, int, str], list[list[dict[str, Any]]]] = {}
    for key, rs in sorted(cells.items()):
        if len(rs) == len(RECIPES):
            by_case.setdefault((key[0], key[1], key[3], key[4], key[5]), []).append(rs)
    print("| case | setting | leg / leg + continuation | cells | " + " | ".join(f"`{n}`" for n in RECIPES)
          + " | best possible | " + " | ".join(f"pick (tol. {t:g}) | right" for t in tolerances) + " |")
    print("|---|---|---|---|" + "---|" * (len(RECIPES) + 1 + 2 * len(tolerances)))
    for (case, method, steps, its, variant), cs in by_case.items():
        mean = {n: statistics.fmean(r["psnr_final"] for c in cs for r in c if r["recipe"] == n) for n in RECIPES}
        oracle = statistics.fmean(max(r["psnr_final"] for r in c) for c in cs)
        picks = []
        for t in tolerances:
            chosen = [_pick(c, t) for c in cs]
            hits = sum(p is max(c, key=lambda r: r["psnr_final"]) for p, c in zip(chosen, cs, strict=True))
            picks.append(f"{statistics.fmean(p['psnr_final'] for p in chosen):.2f} | {hits}/{len(cs)}")
        print(f"| {case} | {method} | {steps} / {its} ({variant}) | {len(cs)} | "
              + " | ".join(f"{mean[n]:.2f}" for n in RECIPES) + f" | {oracle:.2f} | " + " | ".join(picks) + " |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", default="lenet,cnn-nobn-random,convnet16-1ep")
    parser.add_argument("--methods", default="approx,exact")
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--first-sample", type=int, default=0)
    parser.add_argument("--iterations", type=int, default=1000)
    parser.add_argument("--race-steps", type=int, default=100)
    parser.add_argument("--recipes", type=lambda s: s.split(","), default=None)
    parser.add_argument("--cont-lr", type=float, default=1.0, help="factor on the continuation's learning rate")
    parser.add_argument("--fit", choices=("half", "all"), default="half",
                        help="the race leg fits the race's half of ∇* (as best does) or all of it")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--summary", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if not args.summary:
        tuning = {n for n in CASES if CASES.get(n).split == "tune"}
        for name in args.cases.split(","):
            if name not in tuning:
                print(f"error: {name} is not a tuning case ({sorted(tuning)})", file=sys.stderr)
                return 2
        append_run_header(args)
        for name in args.cases.split(","):
            for method in args.methods.split(","):
                for sample in range(args.first_sample, args.first_sample + args.samples):
                    for row in run_cell(name, method, sample, args):
                        with args.out.open("a") as f:
                            f.write(json.dumps(row) + "\n")
    rows = [json.loads(line) for line in args.out.read_text().splitlines() if line.strip()]
    summary([r for r in rows if "recipe" in r])
    return 0


if __name__ == "__main__":
    sys.exit(main())
