"""The Ray executor in a local Ray instance gives the same rows and files as the local executor."""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from runner_cells import CELL_FN, markers

from extras import require_integration
from unlearnleak.experiments.runner import read_results, run_experiment
from unlearnleak.experiments.schema import ExperimentConfig, expand_cells

require_integration("ray", "the Ray executor")
import ray  # noqa: E402  (after the check above, which skips or fails with the reason)


@pytest.fixture
def local_ray(marker_dir: Path) -> Iterator[None]:
    """A local two-CPU Ray instance whose workers can import the test cell functions and see the markers."""
    env = {"PYTHONPATH": os.environ["PYTHONPATH"], "UNLEARNLEAK_TEST_MARKERS": str(marker_dir)}
    ray.init(num_cpus=2, include_dashboard=False, runtime_env={"env_vars": env}, logging_level="WARNING")
    try:
        yield
    finally:
        ray.shutdown()


def stable(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {row["cell"]: {k: v for k, v in row.items() if k != "seconds"} for row in rows}


def cell_files(run_dir: Path) -> dict[str, bytes]:
    return {p.relative_to(run_dir).as_posix(): p.read_bytes()
            for p in sorted((run_dir / "cells").rglob("*")) if p.is_file()}


def test_ray_executor_matches_the_local_executor(sweep_config: ExperimentConfig, marker_dir: Path, tmp_path: Path,
                                                 local_ray: None) -> None:
    console = Console(file=io.StringIO())
    by_ray = run_experiment(sweep_config, tmp_path / "ray", executor="ray", cell_fn=CELL_FN, console=console)
    cells = expand_cells(sweep_config)
    assert [r["cell"] for r in by_ray] == [c.hash for c in cells] and all(r["status"] == "ok" for r in by_ray)
    assert markers(marker_dir) == {c.hash: 1 for c in cells}
    assert str(os.getpid()) not in {p.name.split(".")[1] for p in marker_dir.glob("*.done")}  # in Ray workers
    by_local = run_experiment(sweep_config, tmp_path / "local", executor="local", workers=1, cell_fn=CELL_FN,
                              console=console)
    assert stable(by_ray) == stable(by_local)
    assert stable(read_results(tmp_path / "ray")) == stable(by_local)
    assert cell_files(tmp_path / "ray") == cell_files(tmp_path / "local")
    assert json.loads((tmp_path / "ray" / "run.json").read_text())["executor"] == "ray"
    assert ray.is_initialized()  # the caller's instance is left running for the caller to shut down
