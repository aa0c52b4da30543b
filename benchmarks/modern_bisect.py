"""Side-by-side bisection of our ``modern`` preset against breaching's own ``modern``, from the SAME start.

On one tuning case (default ``convnet16-1ep``, approx-k1-N32; never a held-out case), per photo: one patterned
start in the normalised space, breaching's ``modern`` run by its own code from it (``breaching_peer.py``), and
our ``modern`` from it with one difference from breaching switched at a time (``VARIANTS``). Variants that
are no option of the engine are applied here as temporary patches of ``inversion.py`` for the run:

- ``sched``: breaching's learning rates (its ``GradualWarmupScheduler`` over ``CosineAnnealingLR``: 0 at step 0,
  lr·t/50 up to step 50, then a cosine of period T started one step later, ending at ~0.007·lr, not 0), patched
  in here as measured off its scheduler (not adopted: no better on the tuning cases);
- ``total``: the best iterate kept by the total objective (cosine + priors), as breaching, not by the cosine
  (``best_by="total"``: today's ``modern``; ``ours`` is the recipe before this bisection);
- ``nokeep``: the last iterate.

    UNLEARNLEAK_THREADS=1 python benchmarks/modern_bisect.py --samples 4 --iterations 1000 \
        --variants ours,sched,total,sched+total,nokeep --out benchmarks/results/modern_bisect.jsonl
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import torch

import unlearnleak.attacks.feature_recovery.inversion as inv
from breaching_peer import find_python, run_breaching
from suite import build_pair
from suite_cases import CASES
from unlearnleak.attacks.feature_recovery import target_gradient
from unlearnleak.attacks.feature_recovery.priors import input_normalisation
from unlearnleak.metrics import image_metrics


def breaching_lr(config: inv.InversionConfig, step: int, total: int) -> float:
    """breaching 0.1.2's learning rate at ``step`` for warm-up 50 and cosine-decay (measured off its scheduler)."""
    warm = 50
    if step <= warm:
        return config.lr * step / warm
    return config.lr * 0.5 * (1 + math.cos(math.pi * (step - warm - 1) / total))


@contextmanager
def patched(attr: str, value: Any, owner: Any = inv) -> Iterator[None]:
    """``owner.attr`` = value for the run."""
    old = getattr(owner, attr)
    setattr(owner, attr, value)
    try:
        yield
    finally:
        setattr(owner, attr, old)


@contextmanager
def _stack(*managers: Any) -> Iterator[None]:
    with ExitStack() as stack:
        for m in managers:
            stack.enter_context(m)
        yield


# name → (overrides of today's `modern` preset, patch of the engine for the run). "ours" is the recipe as it was
# before this bisection (best iterate by the cosine); today's `modern` is "total" (best_by="total", as breaching).
VARIANTS: dict[str, tuple[dict[str, Any], Callable[[], Any]]] = {
    "ours": ({"best_by": "objective"}, lambda: _stack()),
    "sched": ({"best_by": "objective"}, lambda: patched("learning_rate", breaching_lr)),
    "total": ({}, lambda: _stack()),
    "sched+total": ({}, lambda: patched("learning_rate", breaching_lr)),
    "nokeep": ({"keep_best": False}, lambda: _stack()),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--case", default="convnet16-1ep")
    parser.add_argument("--setting", default="approx-k1-N32")
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--first-sample", type=int, default=0)
    parser.add_argument("--iterations", type=int, default=1000)
    parser.add_argument("--variants", default="ours,sched,total,nokeep")
    parser.add_argument("--no-breaching", action="store_true")
    parser.add_argument("--clamp-start", action="store_true", help="clamp the start into the box for both (breaching "
                        "takes its first gradient at the unclamped start, ours after clamping)")
    parser.add_argument("--perturb", type=float, default=0.0, help="add this much N(0,1) noise (seed 7) to the start "
                        "(how sensitive each attack is to its start)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "modern_bisect.jsonl")
    args = parser.parse_args()
    torch.set_num_threads(1)
    case = CASES.get(args.case)
    assert case.split == "tune", "bisect on tuning cases only"
    setting = next(s for s in case.settings if s.name == args.setting)
    python, message = (None, "skipped") if args.no_breaching else find_python(None)
    print(message, flush=True)
    for sample in range(args.first_sample, args.first_sample + args.samples):
        pair, knowledge, truth_x, truth_y, _ = build_pair(case, setting, sample, "cpu")
        mode = "approximate" if setting.method == "approx" else "exact"
        target = target_gradient(pair, knowledge, mode)  # type: ignore[arg-type]
        model = pair.model(target.invert_on, "cpu", knowledge)
        norm = input_normalisation(model)
        assert norm is not None
        config = inv.preset("modern", iterations=args.iterations)
        z0 = inv.initial_inputs(config, tuple(truth_x.shape), torch.Generator().manual_seed(1000 + sample))[0]
        x0 = norm[0] + norm[1] * z0  # the same start for both, in pixels (unclamped)
        if args.perturb:
            x0 = x0 + args.perturb * torch.randn(x0.shape, generator=torch.Generator().manual_seed(7))
        if args.clamp_start:
            x0 = x0.clamp(0, 1)
        row: dict[str, Any] = {"case": case.name, "setting": setting.name, "sample": sample,
                               "iterations": args.iterations, "clamp_start": args.clamp_start, "perturb": args.perturb}
        if python is not None:
            started = time.perf_counter()
            peer, _ = run_breaching(python, model, pair.spec, target, truth_y, iterations=args.iterations,
                                    seed=sample, attacks=("modern",), init=x0)
            row["breaching"] = image_metrics(peer["modern"].x, truth_x)[0]["psnr"]
            row["breaching_s"] = time.perf_counter() - started
        for name in [v for v in args.variants.split(",") if v]:
            overrides, patch = VARIANTS[name]
            cfg = config.with_overrides(**overrides)
            started = time.perf_counter()
            with patch():
                result = inv.run_inversion(model, target, truth_y, tuple(truth_x.shape[1:]), cfg, seed=sample,
                                           init=x0[None])
            row[name] = image_metrics(result.x, truth_x)[0]["psnr"]
            row[f"{name}_s"] = time.perf_counter() - started
        print(json.dumps({k: round(v, 2) if isinstance(v, float) else v for k, v in row.items()}), flush=True)
        with args.out.open("a") as f:
            f.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
