"""Training throughput (samples/s) of the paper's ConvNet and the CIFAR ResNet-18 on this machine.

Usage: python benchmarks/training_throughput.py [--device cpu|cuda] [--batch 128] [--steps 10] [--threads N]
Measures full SGD steps (forward, backward, update) with augmentation on 32×32 inputs after 2 warm-up steps.
The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from torch.nn import functional as F

from unlearnleak.devices import check_device
from unlearnleak.models import ModelSpec, build_model
from unlearnleak.training import augment_batch

MEAN, STD = (0.49147, 0.48226, 0.44677), (0.24703, 0.24349, 0.26159)


def measure(name: str, width: int, batch: int, steps: int, device: str) -> float:
    """Samples per second of SGD training steps."""
    torch.manual_seed(0)
    model = build_model(ModelSpec(name, (3, 32, 32), 10, MEAN, STD, {"width": width})).to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(batch, 3, 32, 32, generator=g), torch.randint(0, 10, (batch,), generator=g)

    def step() -> None:
        xb = augment_batch(x, g).to(device)
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(xb), y.to(device)).backward()
        opt.step()

    for _ in range(2):
        step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return batch * steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    device = check_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    results = {}
    for name, width in [("convnet", 16), ("convnet", 64), ("resnet18", 64)]:
        key = f"{name}_w{width}"
        results[key] = round(measure(name, width, args.batch, args.steps, device), 1)
        print(f"{key:14s} {results[key]:10.1f} samples/s  (batch {args.batch}, {args.steps} steps, {device})")
    print(json.dumps({"samples_per_second": results, "device": device, "threads": torch.get_num_threads(),
                      "batch": args.batch}))


if __name__ == "__main__":
    main()
