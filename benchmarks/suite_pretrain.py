"""Pretrain (or load from the cache) every suite case's θ0 and print its test accuracy and time, one JSON line each.

    python benchmarks/suite_pretrain.py [--case NAME ...] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from suite_cases import cases
from unlearnleak.data import load_dataset
from unlearnleak.models import build_model, load_weights
from unlearnleak.scenario import pretrained_base
from unlearnleak.training import evaluate


def pretrain(name: str | None = None, *, device: str = "cpu") -> list[dict[str, object]]:
    """θ0 of each case (cached), with its test accuracy."""
    out = []
    for case in cases("all", [name] if name else None):
        cfg = case.config(device=device)
        started = time.perf_counter()
        spec, state = pretrained_base(cfg)
        model = build_model(spec)
        load_weights(model, state)
        test = load_dataset(case.dataset, case.test_split, cfg.data_dir, **case.dataset_options)
        row = {"case": case.name, "split": case.split, "test_accuracy": round(evaluate(model, test.x, test.y), 4),
               "test_rows": len(test), "chance": round(1 / test.num_classes, 4),
               "seconds": round(time.perf_counter() - started, 1)}
        print(json.dumps(row), flush=True)
        out.append(row)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--case", action="append")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for name in args.case or [None]:
        pretrain(name, device=args.device)


if __name__ == "__main__":
    main()
