"""Fixtures of the report tests: run folders laid out as the issue-11 contract says (see runs.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from runs import make_cell, write_run


@pytest.fixture
def k_sweep(tmp_path: Path) -> Path:
    """A sweep over k ∈ {1, 3} × seeds {0, 1, 2}, both attacks, plus one failed cell."""
    run = tmp_path / "run"
    rows = [make_cell(run, f"c{k}s{seed}", {"scenario.forget.k": k, "seed": seed}, k=k, noise=0.05 * k)
            for k in (1, 3) for seed in (0, 1, 2)]
    rows.append(make_cell(run, "bad0", {"scenario.forget.k": 5, "seed": 0}, status="error",
                          error="ConfigError: <script>alert('x')</script> k=5 exceeds N"))
    return write_run(run, rows)


@pytest.fixture
def defense_sweep(tmp_path: Path) -> Path:
    """A noise-defense sweep: stronger noise, lower served accuracy, worse recovery."""
    run = tmp_path / "defended"
    rows = [make_cell(run, f"d{i}s{seed}", {"defense.params.sigma": sigma, "seed": seed}, k=2, noise=0.05 + sigma,
                      defense={"name": "noise", "params": {"sigma": sigma}}, served=0.6 - sigma,
                      correct=sigma < 0.2)
            for i, sigma in enumerate((0.0, 0.1, 0.3)) for seed in (0, 1)]
    return write_run(run, rows)
