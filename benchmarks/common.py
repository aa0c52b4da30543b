"""The setting the benchmarks share: ConvNet pretrained on CIFAR-10 batches 2–5 of the real subset (cached).

Both `feature_recovery.py` and `label_inference.py` call :func:`bench_config` so that θ0 is pretrained
once and reused from the cache (``unlearnleak.scenario.pretrained_base``; key = config hash).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from unlearnleak.scenario import ScenarioConfig
from unlearnleak.storage import environment_record
from unlearnleak.training import TrainConfig

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = Path(os.environ.get("UNLEARNLEAK_DATA_DIR", REPO.parent / "shared" / "data"))

# CPU budget: 10 epochs with momentum reach > 50 % test accuracy at width 16 (the paper: 120 epochs,
# no momentum, lr 0.1, decays at 44/74/105 — far beyond a 2-core CPU).
BENCH_PRETRAIN = TrainConfig(epochs=10, lr=0.05, momentum=0.9, weight_decay=5e-4, batch_size=128, augment=True,
                             drop_last=True, milestones=(6, 9), gamma=0.1)


def bench_config(*, width: int = 16, n_train: int = 32, data_dir: str | Path | None = None,
                 device: str = "cpu", **overrides: Any) -> ScenarioConfig:
    """The shared benchmark scenario: holdout = 4000 (batch 1 is the private pool), public = batches 2–5."""
    return ScenarioConfig(dataset="cifar10", data_dir=str(data_dir or DEFAULT_DATA), model="convnet",
                          model_kwargs={"width": width}, holdout=4000, pretrain=BENCH_PRETRAIN,
                          n_train=n_train, device=device, **overrides)


def summary_of(path: Path, summarise: Callable[[Path], None]) -> int:
    """A tuning script's ``--summary``: ``summarise(path)`` and exit code 0, or one ``error:`` line and 2 when
    ``path`` does not exist (nothing has been measured there yet)."""
    if not path.is_file():
        print(f"error: --out {path}: no such file (run without --summary first)", file=sys.stderr)
        return 2
    summarise(path)
    return 0


def append_run_header(args: argparse.Namespace) -> None:
    """Open a run in the JSON-lines file ``args.out``: one line with the environment and the arguments, before the
    run's rows (a file may hold several runs; its readers skip these lines)."""
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("a") as f:
        f.write(json.dumps({"environment": environment_record(), "args": vars(args) | {"out": str(args.out)}},
                           default=str) + "\n")
