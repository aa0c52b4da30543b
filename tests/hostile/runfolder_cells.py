"""Cell functions for the hostile-input tests: real rows and files from each cell's seed, no training and no
model code imported, so that a test sees only what the runner and the report do with a run folder.

``HOSTILE_MARKERS`` (a folder) counts each cell's completed runs: one file per run, named by the cell hash;
``HOSTILE_BLOCK`` (a file path): the cell creates that file, then sleeps (a run to interrupt, or to collide with).
Importable as ``--cell-fn runfolder_cells:image_cell`` (pytest puts this folder on sys.path).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import torch

from unlearnleak.experiments.schema import ExperimentConfig, cell_hash
from unlearnleak.storage import save_tensors_atomic

CELL_FN = "runfolder_cells:image_cell"


def runs(folder: Path) -> dict[str, int]:
    """How many times each cell (by hash) completed."""
    counts: dict[str, int] = {}
    for path in folder.glob("*.done"):
        cell = path.name.split(".")[0]
        counts[cell] = counts.get(cell, 0) + 1
    return counts


def image_cell(config: ExperimentConfig, cell_dir: Path) -> dict[str, Any]:
    """Two 8×8 "true" images and a noisy "reconstruction" of them, with the row the report reads."""
    block = os.environ.get("HOSTILE_BLOCK")
    if block:
        Path(block).write_text(str(os.getpid()))
        time.sleep(300)
    generator = torch.Generator().manual_seed(config.cell_seed() * 1000 + config.scenario.n_train)
    truth = torch.rand(2, 3, 8, 8, generator=generator)
    recon = (truth + 0.1 * torch.randn(truth.shape, generator=generator)).clamp(0, 1)
    save_tensors_atomic(cell_dir / "truth.safetensors", {"x": truth, "y": torch.tensor([0, 1])})
    save_tensors_atomic(cell_dir / "reconstruction.safetensors", {"x": recon})
    mse = float(((recon - truth) ** 2).mean())
    folder = os.environ.get("HOSTILE_MARKERS")
    if folder:
        (Path(folder) / f"{cell_hash(config)}.{os.getpid()}.{time.time_ns()}.done").write_text("done")
    return {
        "dataset": config.scenario.dataset, "n_train": config.scenario.n_train,
        "feature_recovery": {"image": True, "metrics": {"psnr": -10 * torch.log10(torch.tensor(mse)).item()},
                             "artifacts": {"truth": "truth.safetensors",
                                           "reconstruction": "reconstruction.safetensors"}},
    }
