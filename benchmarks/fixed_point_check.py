"""Is the deleted photo a fixed point of each recipe? Why the recipes fail on trained networks (issue 16).

Per photo of a case (approximate unlearning, k = 1, N = 32, the suite's pairs), two measurements, no tuning:

1. **How well each image explains ∇*, layer by layer.** 1 − cosine between ∇* and the gradient of: the photo
   itself, its own mean colour, and the images each recipe (``--random-recipes``) returns from its usual random
   start (``--iterations``). Reported: the global cosine (one over all parameters, the recipes' objective) and the
   per-tensor cosine of the first parameter tensor and the median over tensors.
2. **Started from the photo itself plus Gaussian noise** (``--starts``, the start's PSNR in dB), where does each
   recipe end? A recipe whose cost has the photo at a minimum stays near it; one whose cost prefers another image
   walks away, whatever start it is given (``--recipes``).

Besides `paper` and `modern`: `modern` with two scale-free objectives registered here (not in the library).
``modern+log`` uses ``log_cosine``, log(1 − cosine), whose gradient ∇c/c grows as the match tightens so the
fixed-weight priors cannot outweigh it; ``modern+layer-log`` uses ``layer_log_cosine``, the mean over parameter
tensors of log(1 − cosine), every layer counting the same. 1 − cosine is computed as ½‖ĝ − t̂‖² (stable when tiny).

Rows (JSON lines) go to ``--out``; ``--summary`` prints the tables.

    python benchmarks/fixed_point_check.py --cases convnet16-1ep,preact-resnet-bn,cnn-nobn-random --samples 2
    python benchmarks/fixed_point_check.py --cases preact-resnet-bn --starts "" --random-recipes modern+log
    python benchmarks/fixed_point_check.py --summary
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
from torch.nn import functional as F

import suite
from common import append_run_header, summary_of
from suite_cases import CASES, Setting
from unlearnleak.attacks.feature_recovery import preset, target_gradient
from unlearnleak.attacks.feature_recovery.inversion import run_inversion
from unlearnleak.attacks.feature_recovery.objectives import OBJECTIVES, Objective
from unlearnleak.metrics import psnr
from unlearnleak.metrics.baselines import own_mean_colour

OUT = Path(__file__).resolve().parent / "results" / "fixed_point_check.jsonl"
EPS = 1e-12  # floor of 1 − cosine inside the logarithm (float32 resolves ~1e-7 on unit vectors)
# recipe label → (preset, overrides); the scale-free objectives are defined below
RECIPES: dict[str, tuple[str, dict[str, Any]]] = {
    "paper": ("paper", {}),
    "modern": ("modern", {}),
    "modern+log": ("modern", {"cost": "log_cosine"}),
    "modern+layer-log": ("modern", {"cost": "layer_log_cosine"}),
}


def _half_squared_distance(g: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """1 − cos(g, t) for unit t, as ½‖g/‖g‖ − t‖² (no cancellation when the two nearly agree)."""
    return 0.5 * (g / g.norm().clamp_min(1e-30) - t).pow(2).sum()


@OBJECTIVES.register("log_cosine")
class LogCosine(Objective):
    """log(1 − cosine) over all parameters: the same minimiser as the cosine, a gradient that does not vanish."""

    name = "log_cosine"

    def __call__(self, g: torch.Tensor) -> torch.Tensor:
        t = self.target / self.target.norm().clamp_min(1e-30)
        return torch.log(_half_squared_distance(self.masked(g), t) + EPS)


@OBJECTIVES.register("layer_log_cosine")
class LayerLogCosine(Objective):
    """The mean over parameter tensors of log(1 − cosine): each layer's relative match counts the same."""

    name = "layer_log_cosine"

    def __call__(self, g: torch.Tensor) -> torch.Tensor:
        g = self.masked(g)
        zeros = torch.zeros(self.n_segments, device=g.device, dtype=g.dtype)
        g_norm = zeros.index_add(0, self.segments, g * g).sqrt()[self.segments].clamp_min(1e-30)
        t_norm = zeros.index_add(0, self.segments, self.target ** 2).sqrt()[self.segments].clamp_min(1e-30)
        distance = zeros.index_add(0, self.segments, (g / g_norm - self.target / t_norm).pow(2))
        return torch.log(0.5 * distance + EPS).mean()


def layer_mismatch(model: torch.nn.Module, names: list[str], target: list[torch.Tensor], x: torch.Tensor,
                   y: torch.Tensor) -> dict[str, float]:
    """1 − cosine between ∇* and x's gradient: globally, on the first tensor, and the median over tensors."""
    params = dict(model.named_parameters())
    grads = torch.autograd.grad(F.cross_entropy(model(x), y), [params[n] for n in names], materialize_grads=True)
    per = [float(_half_squared_distance(g.reshape(-1).double(), (t / t.norm()).reshape(-1).double().to(g.device)))
           for g, t in zip(grads, target, strict=True)]
    flat = torch.cat([g.reshape(-1) for g in grads]).double()
    whole = torch.cat([t.reshape(-1) for t in target]).double().to(flat.device)
    return {"global": float(_half_squared_distance(flat, whole / whole.norm())), "first": per[0],
            "median": statistics.median(per)}


def run_photo(case_name: str, sample: int, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Every measurement of one photo of one case."""
    pair, knowledge, truth, label, _ = suite.build_pair(CASES.get(case_name), Setting("approx", 1, 32), sample, "cpu")
    target = target_gradient(pair, knowledge, "approximate")
    model = pair.model(target.invert_on, "cpu", knowledge).eval()
    shape = tuple(pair.spec.input_shape)
    base = {"case": case_name, "sample": sample, "iterations": args.iterations}
    rows = []

    def mismatch(what: str, x: torch.Tensor) -> None:
        rows.append({**base, "kind": "mismatch", "image": what, "psnr": float(psnr(x, truth).mean()),
                     **layer_mismatch(model, list(target.names), list(target.tensors), x, label)})

    mismatch("photo", truth)
    mismatch("own mean colour", own_mean_colour(truth))
    for label_name in args.random_recipes:
        name, overrides = RECIPES[label_name]
        result = run_inversion(model, target, label, shape, preset(name, iterations=args.iterations, restarts=1,
                                                                     **overrides), seed=sample)
        mismatch(f"{label_name} (random start)", result.x.clamp(0, 1))
    for start_db in args.starts:
        noise = torch.randn(truth.shape, generator=torch.Generator().manual_seed(sample))
        start = (truth + 10 ** (-start_db / 20) * noise).clamp(0, 1)
        for label_name in args.recipes:
            name, overrides = RECIPES[label_name]
            started = time.perf_counter()
            result = run_inversion(model, target, label, shape, preset(name, iterations=args.iterations,
                                                                         restarts=1, **overrides),
                                   seed=sample, init=start.unsqueeze(0), feature_phase=False)
            rows.append({**base, "kind": "from photo", "recipe": label_name, "start_db": start_db,
                         "start_psnr": float(psnr(start, truth).mean()),
                         "psnr": float(psnr(result.x.clamp(0, 1), truth).mean()),
                         "seconds": time.perf_counter() - started})
    return rows


def summary(rows: list[dict[str, Any]]) -> None:
    """Mean over photos per case: the mismatch table, then where each recipe ends from each start."""
    keys = ("case", "sample", "iterations", "kind", "image", "recipe", "start_db")
    latest = {tuple(r.get(k) for k in keys): r for r in rows}  # a rerun's row replaces the earlier one
    rows = list(latest.values())
    cases = sorted({(r["case"], r["iterations"]) for r in rows})
    print("| case | iterations | image | photos | PSNR dB | 1 − cos, global | 1 − cos, first tensor | "
          "1 − cos, median tensor |")
    print("|---|---|---|---|---|---|---|---|")
    for case, its in cases:
        images: dict[str, list[dict[str, Any]]] = {}
        for r in rows:
            if (r["case"], r["iterations"]) == (case, its) and r["kind"] == "mismatch":
                images.setdefault(r["image"], []).append(r)
        for image, rs in images.items():
            mean = {k: statistics.fmean(r[k] for r in rs) for k in ("psnr", "global", "first", "median")}
            shown = "∞" if image == "photo" else f"{mean['psnr']:.2f}"
            print(f"| {case} | {its} | {image} | {len(rs)} | {shown} | {mean['global']:.1e} | {mean['first']:.1e} | "
                  f"{mean['median']:.1e} |")
    print()
    print("| case | start (PSNR dB) | photos | " + " | ".join(RECIPES) + " |")
    print("|---|---|---|" + "---|" * len(RECIPES))
    for case in sorted({c for c, _ in cases}):
        starts = sorted({r["start_db"] for r in rows if r["case"] == case and r["kind"] == "from photo"}, reverse=True)
        for start_db in starts:
            cell = [r for r in rows if r["case"] == case and r["kind"] == "from photo" and r["start_db"] == start_db]
            start_psnr = statistics.fmean({r["sample"]: r["start_psnr"] for r in cell}.values())
            parts = []
            for label_name in RECIPES:
                values = [r["psnr"] for r in cell if r["recipe"] == label_name]
                parts.append(f"{statistics.fmean(values):.2f}" if values else "–")
            photos = len({r["sample"] for r in cell})
            print(f"| {case} | {start_psnr:.2f} | {photos} | " + " | ".join(parts) + " |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", default="convnet16-1ep,preact-resnet-bn,cnn-nobn-random")
    parser.add_argument("--samples", type=int, default=2)
    parser.add_argument("--first-sample", type=int, default=0)
    parser.add_argument("--iterations", type=int, default=1000)
    parser.add_argument("--starts", type=lambda s: [float(v) for v in s.split(",") if v], default=[30.0, 20.0],
                        help="start PSNRs in dB ('' for none)")
    parser.add_argument("--recipes", type=lambda s: [p for p in s.split(",") if p], default=list(RECIPES),
                        help="recipes started from the photo")
    parser.add_argument("--random-recipes", type=lambda s: [p for p in s.split(",") if p],
                        default=["paper", "modern"], help="recipes run from their random start")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--summary", action="store_true", help="print the tables of --out and stop")
    args = parser.parse_args()
    if not args.summary:
        tuning = {n for n in CASES if CASES.get(n).split == "tune"}
        bad = [n for n in args.cases.split(",") if n not in tuning] + \
            [r for r in args.recipes + args.random_recipes if r not in RECIPES]
        if bad or args.samples < 1 or args.iterations < 1:
            print(f"error: {bad or 'samples and iterations must be >= 1'}: choose tuning cases {sorted(tuning)} "
                  f"and recipes {list(RECIPES)}", file=sys.stderr)
            return 2
        torch.set_num_threads(1)
        append_run_header(args)
        for sample in range(args.first_sample, args.first_sample + args.samples):
            for name in args.cases.split(","):
                rows = run_photo(name, sample, args)
                with args.out.open("a") as f:
                    f.writelines(json.dumps(row) + "\n" for row in rows)
                print(f"{name} #{sample}: {len(rows)} rows", flush=True)
    return summary_of(args.out, lambda path: summary([r for r in map(json.loads, path.read_text().splitlines())
                                                      if "kind" in r]))


if __name__ == "__main__":
    sys.exit(main())
