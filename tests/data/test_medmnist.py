"""MedMNIST loaders on tiny official-format .npz fixtures (grey and RGB), and their error messages."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from unlearnleak.data import DATASET_INFO, load_dataset
from unlearnleak.data.files import LAYOUTS
from unlearnleak.data.medmnist import MEDMNIST
from unlearnleak.errors import DataError

Writers = dict[str, Callable[..., dict[str, np.ndarray]]]


def test_required_subsets_are_registered() -> None:
    for name in ("retinamnist", "dermamnist", "bloodmnist", "pathmnist", "organamnist", "pneumoniamnist",
                 "breastmnist", "octmnist"):
        assert DATASET_INFO[name].splits == ("train", "val", "test")
        assert len(LAYOUTS[name].md5) == 32
    assert LAYOUTS["retinamnist"].md5 == "bd4c0672f1bba3e3a89f0e4e876791e4"
    assert MEDMNIST["bloodmnist"].classes[0] == "basophil" and len(MEDMNIST["organamnist"].classes) == 11


def test_rgb_npz_in_medmnist_folder(tmp_path: Path, writers: Writers) -> None:
    raw = writers["medmnist"](tmp_path / "medmnist" / "bloodmnist.npz", 3, 8)
    for split in ("train", "val", "test"):
        ds = load_dataset("bloodmnist", split, data_dir=tmp_path)
        assert ds.x.shape == (len(raw[f"{split}_images"]), 3, 28, 28) and ds.x.dtype == torch.float32
        assert ds.y.tolist() == raw[f"{split}_labels"].reshape(-1).tolist()
        assert ds.x.min() >= 0.0 and ds.x.max() <= 1.0
    train = load_dataset("bloodmnist", "train", data_dir=tmp_path)
    assert train.x[1, 2, 3, 4].item() == pytest.approx(77 / 255)  # (N, H, W, C) → (N, C, H, W)
    expected_mean = (raw["train_images"].astype(np.float64) / 255).mean(axis=(0, 1, 2))
    expected_std = (raw["train_images"].astype(np.float64) / 255).std(axis=(0, 1, 2))
    assert train.mean == pytest.approx(tuple(expected_mean), abs=1e-5)
    assert train.std == pytest.approx(tuple(expected_std), abs=1e-5)
    assert load_dataset("bloodmnist", "test", data_dir=tmp_path).mean == train.mean  # train statistics
    assert train.classes == MEDMNIST["bloodmnist"].classes


def test_grey_npz_at_top_level(tmp_path: Path, writers: Writers) -> None:
    raw = writers["medmnist"](tmp_path / "breastmnist.npz", 1, 2)
    ds = load_dataset("breastmnist", "val", data_dir=tmp_path)
    assert ds.x.shape == (len(raw["val_images"]), 1, 28, 28) and len(ds.mean) == 1
    train = load_dataset("breastmnist", "train", data_dir=tmp_path)
    assert train.x[1, 0, 3, 4].item() == pytest.approx(77 / 255)
    assert train.classes == ("malignant", "normal, benign")


def test_missing_file_names_both_places(tmp_path: Path) -> None:
    with pytest.raises(DataError) as info:
        load_dataset("pathmnist", "train", data_dir=tmp_path)
    message = str(info.value)
    assert str(tmp_path / "medmnist" / "pathmnist.npz") in message
    assert str(tmp_path / "pathmnist.npz") in message
    assert "unlearnleak data download pathmnist" in message and "zenodo.org" in message


def test_missing_key(tmp_path: Path, writers: Writers) -> None:
    raw = writers["medmnist"](tmp_path / "medmnist" / "retinamnist.npz", 3, 5)
    del raw["val_labels"]
    np.savez(tmp_path / "medmnist" / "retinamnist.npz", **raw)  # type: ignore[arg-type]
    with pytest.raises(DataError, match="expected the key 'val_labels'") as info:
        load_dataset("retinamnist", "val", data_dir=tmp_path)
    assert "retinamnist.npz" in str(info.value)


def test_corrupt_and_wrong_shape(tmp_path: Path, writers: Writers) -> None:
    path = tmp_path / "medmnist" / "dermamnist.npz"
    raw = writers["medmnist"](path, 3, 7)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(DataError, match=r"dermamnist\.npz is truncated, corrupt"):
        load_dataset("dermamnist", "train", data_dir=tmp_path)
    raw["train_images"] = raw["train_images"][..., 0]  # grey images where RGB is expected
    np.savez(path, **raw)  # type: ignore[arg-type]
    with pytest.raises(DataError, match=r"train_images should be uint8 \(N, 28, 28, 3\)"):
        load_dataset("dermamnist", "test", data_dir=tmp_path)


def test_label_out_of_range(tmp_path: Path, writers: Writers) -> None:
    path = tmp_path / "medmnist" / "breastmnist.npz"
    raw = writers["medmnist"](path, 1, 2)
    raw["test_labels"][0, 0] = 5
    np.savez(path, **raw)  # type: ignore[arg-type]
    with pytest.raises(DataError, match=r"test_labels should lie in 0\.\.1"):
        load_dataset("breastmnist", "test", data_dir=tmp_path)
