"""Fixtures for the data tests: tiny datasets in the official on-disk formats, and the shared subsets."""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from unlearnleak.data.cifar import CIFAR10_CLASSES, CIFAR100_COARSE_CLASSES, CIFAR100_FINE_CLASSES

# Sizes chosen so that nothing can assume 10000 (or any fixed number of) images per batch. Tests read sizes
# from the arrays the writers return rather than importing this module (conftest is not importable safely).
CIFAR10_BATCH_SIZES = {1: 7, 2: 3, 3: 4, 4: 5, 5: 6}
CIFAR10_TEST_SIZE = 4
CIFAR100_SIZES = {"train": 9, "test": 5}
STL10_SIZES = {"train": 3, "test": 2}
MEDMNIST_SIZES = {"train": 6, "val": 2, "test": 3}


def shared_data_dir() -> Path | None:
    """The read-only real subsets: $UNLEARNLEAK_SHARED_DATA, else ../shared/data beside the repository."""
    env = os.environ.get("UNLEARNLEAK_SHARED_DATA")
    path = Path(env) if env else Path(__file__).resolve().parents[2].parent / "shared" / "data"
    return path if path.is_dir() else None


@pytest.fixture(scope="session")
def shared_data() -> Path:
    path = shared_data_dir()
    if path is None:
        pytest.skip("the real subsets are absent: set $UNLEARNLEAK_SHARED_DATA or provide ../shared/data")
    return path


def _dump(path: Path, obj: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as handle:
        pickle.dump(obj, handle, protocol=2)


def _images(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)


def write_cifar10(root: Path) -> dict[str, np.ndarray]:
    """Official-format CIFAR-10 under ``root``; returns the raw data/labels written per file.

    Known pixels: data_batch_1 image 0 has red (row 2, col 5) = 200 and green (0, 0) = 17.
    """
    folder = root / "cifar-10-batches-py"
    rng = np.random.default_rng(10)
    written: dict[str, np.ndarray] = {}
    files = {f"data_batch_{k}": n for k, n in CIFAR10_BATCH_SIZES.items()} | {"test_batch": CIFAR10_TEST_SIZE}
    for fname, n in files.items():
        data = _images(rng, n)
        if fname == "data_batch_1":
            data[0, 2 * 32 + 5] = 200
            data[0, 1024] = 17
        labels = [int(v) for v in rng.integers(0, 10, size=n)]
        _dump(folder / fname, {b"batch_label": fname.encode(), b"labels": labels, b"data": data,
                               b"filenames": [f"img_{i}.png".encode() for i in range(n)]})
        written[fname] = data
        written[f"{fname}_labels"] = np.array(labels)
    _dump(folder / "batches.meta", {b"label_names": [c.encode() for c in CIFAR10_CLASSES],
                                    b"num_cases_per_batch": 7, b"num_vis": 3072})
    return written


def write_cifar100(root: Path) -> dict[str, np.ndarray]:
    """Official-format CIFAR-100 under ``root``. Known pixel: train image 1, blue (31, 0) = 99."""
    folder = root / "cifar-100-python"
    rng = np.random.default_rng(100)
    written: dict[str, np.ndarray] = {}
    for split, n in CIFAR100_SIZES.items():
        data = _images(rng, n)
        if split == "train":
            data[1, 2048 + 31 * 32] = 99
        fine = [int(v) for v in rng.integers(0, 100, size=n)]
        coarse = [int(v) for v in rng.integers(0, 20, size=n)]
        _dump(folder / split, {b"filenames": [b"x.png"] * n, b"batch_label": split.encode(),
                               b"fine_labels": fine, b"coarse_labels": coarse, b"data": data})
        written[split] = data
        written[f"{split}_fine"] = np.array(fine)
        written[f"{split}_coarse"] = np.array(coarse)
    _dump(folder / "meta", {b"fine_label_names": [c.encode() for c in CIFAR100_FINE_CLASSES],
                            b"coarse_label_names": [c.encode() for c in CIFAR100_COARSE_CLASSES]})
    return written


STL10_CLASSES = ("airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck")


def write_stl10(root: Path) -> dict[str, np.ndarray]:
    """Official-format STL-10 (column-major images, labels 1..10) under ``root``; returns (C, H, W) images.

    Known pixels: train image 0, channel 0, (row 1, col 5) = 250 and (row 5, col 1) = 10.
    """
    folder = root / "stl10_binary"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(7)
    written: dict[str, np.ndarray] = {}
    for split, n in STL10_SIZES.items():
        images = rng.integers(0, 256, size=(n, 3, 96, 96), dtype=np.uint8)  # (N, C, H, W)
        if split == "train":
            images[0, 0, 1, 5] = 250
            images[0, 0, 5, 1] = 10
        labels = rng.integers(1, 11, size=n, dtype=np.uint8)
        (folder / f"{split}_X.bin").write_bytes(np.ascontiguousarray(images.transpose(0, 1, 3, 2)).tobytes())
        (folder / f"{split}_y.bin").write_bytes(labels.tobytes())
        written[split] = images
        written[f"{split}_labels"] = labels
    (folder / "class_names.txt").write_text("\n".join(STL10_CLASSES) + "\n")
    return written


def write_medmnist(path: Path, channels: int, num_classes: int) -> dict[str, np.ndarray]:
    """An official-format MedMNIST ``.npz``. Known pixel: train image 1, (row 3, col 4), last channel = 77."""
    rng = np.random.default_rng(28)
    arrays: dict[str, np.ndarray] = {}
    for split, n in MEDMNIST_SIZES.items():
        shape = (n, 28, 28) if channels == 1 else (n, 28, 28, channels)
        images = rng.integers(0, 256, size=shape, dtype=np.uint8)
        if split == "train":
            images[(1, 3, 4) if channels == 1 else (1, 3, 4, channels - 1)] = 77
        arrays[f"{split}_images"] = images
        arrays[f"{split}_labels"] = rng.integers(0, num_classes, size=(n, 1), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **arrays)  # type: ignore[arg-type]
    return arrays


@pytest.fixture
def cifar10_dir(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    return tmp_path, write_cifar10(tmp_path)


@pytest.fixture
def cifar100_dir(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    return tmp_path, write_cifar100(tmp_path)


@pytest.fixture
def stl10_dir(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    return tmp_path, write_stl10(tmp_path)


@pytest.fixture
def writers() -> dict[str, Callable[..., dict[str, np.ndarray]]]:
    """The official-format writers, for tests that need them in a folder of their choice."""
    return {"cifar10": write_cifar10, "cifar100": write_cifar100, "stl10": write_stl10,
            "medmnist": write_medmnist}
