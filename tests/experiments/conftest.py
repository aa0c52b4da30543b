"""Runner test setup: a small two-key sweep and a marker folder that counts each cell's completed runs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from unlearnleak.experiments.schema import ExperimentConfig, load_experiment

HERE = Path(__file__).resolve().parent
SWEEP_YAML = """\
name: runner-test
scenario:
  dataset: cifar10
  holdout: 50
seeds: [0, 1]
sweep:
  scenario.n_train: [4, 6]
"""


@pytest.fixture
def marker_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh marker folder, exported to the cell functions (and to the workers they run in)."""
    folder = tmp_path / "markers"
    folder.mkdir()
    monkeypatch.setenv("UNLEARNLEAK_TEST_MARKERS", str(folder))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]))
    for name in ("INTERRUPT_AFTER", "FAIL_N", "BLOCK_N"):
        monkeypatch.delenv(f"UNLEARNLEAK_TEST_{name}", raising=False)
    return folder


@pytest.fixture
def sweep_file(tmp_path: Path) -> Path:
    path = tmp_path / "sweep.yaml"
    path.write_text(SWEEP_YAML, encoding="utf-8")
    return path


@pytest.fixture
def sweep_config(sweep_file: Path) -> ExperimentConfig:
    """2 values of n_train × 2 seeds = 4 cells."""
    return load_experiment(sweep_file)
