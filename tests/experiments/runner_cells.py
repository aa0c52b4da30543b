"""Small real cell functions for the runner tests: each computes a row from its config, writes real files, and
leaves a marker per completed run so that tests can count how often each cell ran.

Controlled by environment variables (set by the tests, inherited by pool and Ray workers):
UNLEARNLEAK_TEST_MARKERS  folder for the completion markers (one file per completed run of a cell);
UNLEARNLEAK_TEST_INTERRUPT_AFTER  raise KeyboardInterrupt once this many cells have completed;
UNLEARNLEAK_TEST_FAIL_N  raise ValueError in cells whose scenario.n_train equals it;
UNLEARNLEAK_TEST_BLOCK_N  cells with this n_train write `<hash>.started` (their pid) and then sleep (to be
    interrupted);
UNLEARNLEAK_TEST_BAD_ROW_N  cells with this n_train return a row whose `feature_recovery.metrics` is a string.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import torch

from unlearnleak.experiments.schema import ExperimentConfig, cell_hash
from unlearnleak.storage import save_tensors_atomic

CELL_FN = "runner_cells:counting_cell"  # importable in workers: the tests put this folder on PYTHONPATH


def markers(folder: Path) -> dict[str, int]:
    """How many times each cell (by hash) completed."""
    counts: dict[str, int] = {}
    for path in folder.glob("*.done"):
        cell = path.name.split(".")[0]
        counts[cell] = counts.get(cell, 0) + 1
    return counts


def counting_cell(config: ExperimentConfig, cell_dir: Path) -> dict[str, Any]:
    """Draw n_train×3 numbers from the cell's seed; write them and a note; return their statistics as the row."""
    folder = Path(os.environ["UNLEARNLEAK_TEST_MARKERS"])
    cell = cell_hash(config)
    n = config.scenario.n_train
    interrupt_after = os.environ.get("UNLEARNLEAK_TEST_INTERRUPT_AFTER")
    if interrupt_after is not None and sum(markers(folder).values()) >= int(interrupt_after):
        raise KeyboardInterrupt
    if os.environ.get("UNLEARNLEAK_TEST_FAIL_N") == str(n):
        raise ValueError(f"planned failure for n_train={n}\nsecond line of the message")
    if os.environ.get("UNLEARNLEAK_TEST_BLOCK_N") == str(n):
        (folder / f"{cell}.started").write_text(str(os.getpid()))  # the worker's pid
        time.sleep(600)
    generator = torch.Generator().manual_seed(1000 * config.cell_seed() + n)
    values = torch.rand(n, 3, generator=generator)
    save_tensors_atomic(cell_dir / "values.safetensors", {"values": values})
    (cell_dir / "notes").mkdir()
    (cell_dir / "notes" / "summary.txt").write_text(f"n={n} mean={values.mean().item():.6f}\n", encoding="utf-8")
    (folder / f"{cell}.{os.getpid()}.{time.time_ns()}.done").write_text("done")
    bad = os.environ.get("UNLEARNLEAK_TEST_BAD_ROW_N") == str(n)
    return {
        "dataset": config.scenario.dataset,
        "n_train": n,
        "feature_recovery": {"metrics": "high" if bad else {"psnr": 10.0 + values.mean().item()}},
        "label_inference": {"correct": bool(values[0, 0] > 0.5), "chance": 0.1},
        "total": values.sum().item(),
    }
