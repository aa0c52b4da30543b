"""How should the learned prior's decoder be trained? Measured on the suite's TUNING cases only (issue 16).

Per case, each decoder setting (``--variants``: names of ``VARIANTS``, overrides of ``DecoderConfig``) is trained
on θ0's features of θ0's public pretraining rows (as ``decoder_prior.py`` does) and scored on images it never
saw: ``--val`` rows of the case's private pool (train rows below ``holdout``), decoded from θ0's own features of
them (for k = 1 the attack reads exactly these features off ∇*, on θ instead of θ0) and, for a ``gradient_sketch``
setting, their own sketched gradients with their true labels (what ∇* of one deleted image is, up to scale).
One JSON line per (case, variant): decoder-alone PSNR mean ± 95 % interval, training seconds, and the baselines on
the same images.

    python benchmarks/tune_decoder.py --cases convnet16-1ep,lenet --variants base,epochs12,width64
    python benchmarks/tune_decoder.py --summary
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

import suite
from common import summary_of
from suite_cases import CASES, not_tuning
from unlearnleak.attacks.feature_recovery.decoder import DecoderConfig, penultimate, train_decoder
from unlearnleak.attacks.feature_recovery.gradient_sketch import GradientSketch, sketched_gradients
from unlearnleak.metrics import psnr
from unlearnleak.metrics.baselines import own_mean_colour, thumbnail_4x4
from unlearnleak.models import build_model, load_weights
from unlearnleak.storage import environment_record

OUT = Path(__file__).resolve().parent / "results" / "tune_decoder.jsonl"
VARIANTS: dict[str, dict[str, Any]] = {  # name → DecoderConfig overrides
    "base": {},
    "epochs12": {"epochs": 12},
    "epochs24": {"epochs": 24},
    "width64": {"width": 64},
    "width64-epochs12": {"width": 64, "epochs": 12},
    "width128-epochs12": {"width": 128, "epochs": 12},
    "batch32-epochs12": {"batch_size": 32, "epochs": 12},
    "lr1e-3-epochs12": {"lr": 1e-3, "epochs": 12},
    "features": {"gradient_sketch": 0},  # the penultimate features alone (the default before the sketch)
    "sketch256": {"gradient_sketch": 256},
    "sketch1024": {"gradient_sketch": 1024},
}


def measure(case_name: str, variant: str, val: int) -> dict[str, Any]:
    """Train one decoder setting on one tuning case and score it on ``val`` private-pool images."""
    case = CASES.get(case_name)
    base, train = suite._base(case, "cpu")
    model = build_model(base.spec)
    load_weights(model, base.state)
    model.eval()
    public = train.x[case.holdout:]
    rows = torch.randperm(case.holdout, generator=torch.Generator().manual_seed(7))[:val]
    truth, labels = train.x[rows], train.y[rows]
    config = DecoderConfig(**VARIANTS[variant])
    started = time.perf_counter()
    decoder = train_decoder(model, public, base.spec.num_classes, config, desc=f"{case_name} {variant}")
    seconds = time.perf_counter() - started
    inputs = penultimate(model, truth, base.spec.num_classes)
    if config.gradient_sketch:  # what ∇* of one deleted image gives: its own gradient, with its true label
        sketch = GradientSketch.of(model, config.gradient_sketch, config.seed)
        inputs = torch.cat([inputs, sketched_gradients(model, truth, labels, sketch)], 1)
    with torch.no_grad():
        decoded = decoder(inputs)
    out: dict[str, Any] = {"case": case_name, "variant": variant, "config": config.model_dump(mode="json"),
                           "public_images": int(public.shape[0]), "val_images": int(val), "seconds": seconds}
    for name, image in (("decoder", decoded), ("own_mean_colour", own_mean_colour(truth)),
                        ("thumbnail_4x4", thumbnail_4x4(truth))):
        values = psnr(image.clamp(0, 1), truth).tolist()
        out[name] = suite.interval(values)
    return out


def summary(path: Path) -> None:
    """Print one line per (case, variant) from the rows in ``path``."""
    for line in path.read_text().splitlines():
        r = json.loads(line)
        print(f"{r['case']:16s} {r['variant']:20s} decoder {r['decoder']['mean']:6.2f}±{r['decoder']['ci95']:.2f}  "
              f"thumb {r['thumbnail_4x4']['mean']:6.2f}  own-mean {r['own_mean_colour']['mean']:6.2f}  "
              f"{r['seconds']:6.0f} s")


def main() -> int:
    """Entry point."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", default="convnet16-1ep,lenet")
    parser.add_argument("--variants", default="base")
    parser.add_argument("--val", type=int, default=512)
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--summary", action="store_true")
    args = parser.parse_args()
    if args.summary:
        return summary_of(args.out, summary)
    unknown = [v for v in args.variants.split(",") if v not in VARIANTS]
    if unknown:
        print(f"error: unknown variant(s) {unknown}; known: {sorted(VARIANTS)}", file=sys.stderr)
        return 2
    refused = not_tuning(args.cases.split(","))
    if refused:
        print(refused, file=sys.stderr)
        return 2
    env = environment_record()
    for case_name in args.cases.split(","):
        for variant in args.variants.split(","):
            row = measure(case_name, variant, args.val)
            row["environment"] = {k: env.get(k) for k in ("torch", "git", "threads") if k in env}
            suite.append_row(args.out, row)
            print(json.dumps({k: row[k] for k in ("case", "variant", "decoder", "thumbnail_4x4", "seconds")}),
                  flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
