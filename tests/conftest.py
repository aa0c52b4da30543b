"""Shared test setup: quiet progress bars, a temp cache, and the location of ../shared/data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("UNLEARNLEAK_PROGRESS", "0")
torch.set_num_threads(min(2, torch.get_num_threads()))

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("UNLEARNLEAK_SHARED_DATA", REPO.parent / "shared" / "data"))
SHARED_WEIGHTS = REPO.parent / "shared" / "weights"


# The user's own settings that would change what a test sees (its data folder, LPIPS weights, download mirror,
# progress bars on stderr); $UNLEARNLEAK_THREADS is kept on purpose: CI runs the suite with it set.
USER_SETTINGS = ("UNLEARNLEAK_DATA_DIR", "UNLEARNLEAK_LPIPS_WEIGHTS", "UNLEARNLEAK_DOWNLOAD_MIRROR")


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test gets its own cache folder (nothing is written to the user's cache or ../shared), and none of
    the user's own settings: the suite passes whatever the environment says."""
    monkeypatch.setenv("UNLEARNLEAK_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
    monkeypatch.setenv("UNLEARNLEAK_PROGRESS", "0")
    for name in USER_SETTINGS:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def shared_data() -> Path:
    """The real subsets in ../shared/data (CI has them); skip with the reason when absent."""
    if not (SHARED_DATA / "cifar-10-batches-py").is_dir():
        pytest.skip(f"real dataset subsets not found at {SHARED_DATA} (set UNLEARNLEAK_SHARED_DATA)")
    return SHARED_DATA

