"""Would another score judge the race's recipes better: later in their runs, per layer, or by naturalness? TUNING only.

The race scores each recipe after a leg of 100 of 1,000 steps (cooled). On trained networks that score over-rates
`paper` (docs/feature_recovery.md). Here each recipe runs its OWN 1,000-step schedule on the race's fitted half of
∇* (seed = sample, as the race draws it), and at checkpoints (steps 100, 300, 500 and 1,000) its held-out cost is
measured after a cool-down probe of 50 steps on a copy (none at 1,000: the schedule has decayed). One JSON line per
cell: per recipe, the held-out cost at each checkpoint and the PSNR of the fitted-half run at the last one
(evaluation only), and per parameter tensor the held-out cosine cost (``layers``: 1 − cos over that tensor's
held-out coordinates). ``--summary`` joins the recorded recipe-alone PSNRs (tune_race rows) and prints, per
checkpoint, how often the lowest score picks the best recipe and the mean PSNR of that pick; ``--score`` chooses
the score: ``global`` (the race's: the cosine over all held-out coordinates), ``layer-mean`` (the mean of the
tensors' costs, every layer weighing the same), ``first`` / ``last`` (the first / last parameter tensor's),
``slope`` (the image whose power-spectrum slope is closest to the median of θ0's public images: a naturalness
measure no recipe's prior targets; ``slope-tol1``: the same among the recipes within 2× the lowest held-out cost).

    python benchmarks/finalist_score.py --cases allconv-bn-silu,resnet20-w8 --out results/finalist_score.jsonl
    python benchmarks/finalist_score.py --summary --out results/finalist_score.jsonl --score layer-mean
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
from unlearnleak.attacks.feature_recovery.target_gradient import TargetGradient
from unlearnleak.metrics import psnr

RECIPES = ("paper", "modern", "smooth")
T, COOL = 1000, 50
SCORES = ("global", "layer-mean", "first", "last", "slope", "slope-tol1")
_PUBLIC_SLOPE: dict[str, float] = {}


def spectral_slope(x: torch.Tensor) -> float:
    """The slope of log power against log spatial frequency of an image's grey levels (natural photos: about −2;
    white noise: 0), from its radially averaged power spectrum at integer radii 1 … H/2 (C, H, W)."""
    grey = x.reshape(-1, *x.shape[-2:]).mean(0).double()
    power = torch.fft.fft2(grey - grey.mean()).abs() ** 2
    h, w = grey.shape
    fy, fx = torch.meshgrid(torch.fft.fftfreq(h) * h, torch.fft.fftfreq(w) * w, indexing="ij")
    radius = torch.sqrt(fx ** 2 + fy ** 2).round().long()
    bins = torch.arange(1, min(h, w) // 2 + 1)
    mean_power = torch.stack([power[radius == r].mean() for r in bins])
    design = torch.stack([torch.log(bins.double()), torch.ones(len(bins), dtype=torch.float64)], 1)
    return float(torch.linalg.lstsq(design, torch.log(mean_power + 1e-12).unsqueeze(1)).solution[0, 0])


def public_slope(case_name: str, count: int = 256) -> float:
    """The median spectral slope of the first ``count`` of θ0's public pretraining images (the server holds them)."""
    if case_name not in _PUBLIC_SLOPE:
        from decoder_prior import public_rows

        images = public_rows(CASES.get(case_name)).x[:count]
        _PUBLIC_SLOPE[case_name] = float(torch.tensor([spectral_slope(x) for x in images]).median())
    return _PUBLIC_SLOPE[case_name]


def layer_costs(model: torch.nn.Module, target: TargetGradient, x: torch.Tensor, y: torch.Tensor,
                held_out: torch.Tensor) -> list[float]:
    """Per parameter tensor of ∇* (in its order): 1 − cosine between x's gradient and ∇* on the held-out
    coordinates of that tensor (``held_out``: (P,) 0/1); tensors without held-out coordinates are left out."""
    named = dict(model.named_parameters())
    params = [named[n] for n in target.names]
    grads = torch.autograd.grad(torch.nn.functional.cross_entropy(model(x), y), params, allow_unused=True)
    out, offset = [], 0
    for param, g, t in zip(params, grads, target.tensors, strict=True):
        n = param.numel()
        mask = held_out[offset:offset + n]
        if mask.sum() > 0:
            flat = torch.zeros(n, dtype=torch.float64) if g is None else g.reshape(-1).double()
            ref = t.reshape(-1).double()
            out.append(float(1 - torch.nn.functional.cosine_similarity(flat * mask, ref * mask, dim=0)))
        offset += n
    return out


def run_cell(case_name: str, method: str, sample: int, checkpoints: tuple[int, ...]) -> dict:
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
        x, state, done, costs, layers, slopes = None, None, 0, {}, {}, {}
        for stop in checkpoints:
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
            layers[stop] = layer_costs(model, target, probe[0], truth_y, (1 - fit).double())
            slopes[stop] = spectral_slope(probe[0].clamp(0, 1))
        out[name] = {"heldout": costs, "layers": layers, "slope": slopes,
                     "psnr_fit_half": float(psnr(x[0], truth_x).mean())}
    return {"case": case_name, "method": method, "sample": sample, "out": out,
            "public_slope": public_slope(case_name), "truth_slope": spectral_slope(truth_x)}


def score_of(recipe: dict, stop: str, score: str, row: dict | None = None) -> float:
    """One recipe's ``score`` at a checkpoint (``SCORES``; the slope scores need the cell's ``row``)."""
    if score == "global":
        return float(recipe["heldout"][stop])
    if score.startswith("slope"):
        assert row is not None
        distance = abs(recipe["slope"][stop] - row["public_slope"])
        if score == "slope":
            return distance
        lowest = min(r["heldout"][stop] for r in row["out"].values())
        return distance if recipe["heldout"][stop] <= 2 * lowest else float("inf")
    layers = recipe["layers"][stop]
    return {"layer-mean": statistics.fmean(layers), "first": layers[0], "last": layers[-1]}[score]


def summary(rows: list[dict], score: str = "global") -> None:
    """Per checkpoint: right picks by ``score`` and the mean recipe-alone PSNR of the pick, beside the oracle."""
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
    print(f"score: {score}")
    print("| checkpoint | right picks | PSNR of the pick (recipe alone) | picks p/m/s |")
    print("|---|---|---|---|")
    for stop in sorted({int(k) for r, _ in cells for k in r["out"]["paper"]["heldout"]}):
        need = "slope" if score.startswith("slope") else "layers"
        if score != "global" and any(str(stop) not in r["out"]["paper"].get(need, {}) for r, _ in cells):
            continue
        picks = [min(RECIPES, key=lambda n: score_of(r["out"][n], str(stop), score, r)) for r, _ in cells]
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
    parser.add_argument("--checkpoints", default="100,300,500,1000", help="steps to score at, ascending")
    parser.add_argument("--summary", action="store_true")
    parser.add_argument("--score", choices=SCORES, default="global", help="the score --summary ranks by")
    args = parser.parse_args()
    torch.set_num_threads(1)
    try:
        checkpoints = tuple(int(c) for c in args.checkpoints.split(","))
    except ValueError:
        checkpoints = ()
    ascending = bool(checkpoints) and list(checkpoints) == sorted(set(checkpoints))
    if not ascending or not 0 < checkpoints[0] <= checkpoints[-1] <= T:
        print(f"error: --checkpoints {args.checkpoints!r}: give ascending steps in 1 … {T}, e.g. 100,300,1000",
              file=sys.stderr)
        return 2
    if not args.summary:
        if any(CASES.get(n).split != "tune" for n in args.cases.split(",")):
            print("error: --cases must be tuning cases (suite_cases.py)", file=sys.stderr)
            return 2
        for sample in range(args.samples):
            for name in args.cases.split(","):
                for method in args.methods.split(","):
                    with args.out.open("a") as f:
                        f.write(json.dumps(run_cell(name, method, sample, checkpoints)) + "\n")
    summary([json.loads(line) for line in args.out.read_text().splitlines() if line.strip()], args.score)
    return 0


if __name__ == "__main__":
    sys.exit(main())
