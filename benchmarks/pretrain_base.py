"""Pretrain (or load from the cache) the benchmarks' shared θ0 and print its test accuracy.

Usage: python benchmarks/pretrain_base.py [--width 16] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import time

from common import bench_config
from unlearnleak.data import load_dataset
from unlearnleak.models import build_model, load_weights
from unlearnleak.scenario import pretrained_base
from unlearnleak.training import evaluate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    cfg = bench_config(width=args.width, device=args.device)
    start = time.perf_counter()
    spec, state = pretrained_base(cfg)
    seconds = time.perf_counter() - start
    model = build_model(spec)
    load_weights(model, state)
    test = load_dataset("cifar10", "test", cfg.data_dir)
    acc = evaluate(model.to(args.device), test.x, test.y, device=args.device)
    print(json.dumps({"width": args.width, "test_accuracy": round(acc, 4), "seconds": round(seconds, 1)}))


if __name__ == "__main__":
    main()
