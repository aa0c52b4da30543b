"""Cost of the decoder's gradient inputs on big models: ms per public image of its own sketched gradient.

    python benchmarks/sketch_cost.py [--models resnet18,convnet:64] [--images 64] [--threads 1]

Training the learned prior's decoder with ``gradient_sketch`` > 0 computes every public image's own gradient
(and its mirror image's) and count-sketches it (``gradient_sketch.sketched_gradients``); on wide networks that,
not the decoder's epochs, is most of the training time. Here each model (a registry name, ``:WIDTH`` for the
``width`` argument) with random weights (the cost does not depend on them) sketches ``--images`` random images
once to warm up and once timed; prints one JSON line per model with ms per image, the extrapolation to the
24,000 images (12,000 and their mirror images) of the suite's public data, the batch size the memory cap
allows and the process's peak memory.
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import torch

from unlearnleak.attacks.feature_recovery.gradient_sketch import GradientSketch, batch_size_for, sketched_gradients
from unlearnleak.data.cifar import CIFAR10_MEAN, CIFAR10_STD
from unlearnleak.errors import ConfigError
from unlearnleak.models import ModelSpec, build_model

PUBLIC_IMAGES = 24_000  # the suite's 12,000 public CIFAR-10 images and their mirror images


def positive(text: str) -> int:
    """An argparse type: an integer ≥ 1."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return int(text)


def model_of(text: str) -> tuple[torch.nn.Module, ModelSpec]:
    """``name`` or ``name:width`` of the model registry, seeded random weights, eval mode.

    Raises:
        ConfigError: an unknown name or a width that is not an integer.
    """
    name, _, width = text.partition(":")
    if width and not width.isdigit():
        raise ConfigError(f"model {text!r}: the width after ':' must be an integer, e.g. convnet:64")
    spec = ModelSpec(name, (3, 32, 32), 10, CIFAR10_MEAN, CIFAR10_STD, {"width": int(width)} if width else {})
    torch.manual_seed(0)
    return build_model(spec).eval(), spec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", default="resnet18,convnet:64")
    parser.add_argument("--images", type=positive, default=64)
    parser.add_argument("--size", type=positive, default=1024,
                        help="buckets per tensor (DecoderConfig.gradient_sketch)")
    parser.add_argument("--threads", type=positive, default=1)
    args = parser.parse_args()
    try:
        models = [model_of(text)[0] for text in args.models.split(",")]
    except ConfigError as error:
        parser.error(f"--models: {error}")
    torch.set_num_threads(args.threads)
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(args.images, 3, 32, 32, generator=generator)
    y = torch.randint(0, 10, (args.images,), generator=generator)
    for text, model in zip(args.models.split(","), models, strict=True):
        sketch = GradientSketch.of(model, args.size)
        entries = sum(p.numel() for p in model.parameters() if p.requires_grad)
        sketched_gradients(model, x[:2], y[:2], sketch)  # warm-up (vmap's first trace)
        started = time.perf_counter()
        sketched_gradients(model, x, y, sketch)
        per_image = (time.perf_counter() - started) / args.images
        print(json.dumps({"model": text, "parameters": entries, "threads": args.threads, "images": args.images,
                          "sketch_dim": sketch.dim, "ms_per_image": round(1e3 * per_image, 1),
                          f"minutes_for_{PUBLIC_IMAGES}": round(per_image * PUBLIC_IMAGES / 60, 1),
                          "batch_size": batch_size_for(entries),
                          "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, 2)}),
              flush=True)


if __name__ == "__main__":
    main()
