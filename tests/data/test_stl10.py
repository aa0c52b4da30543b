"""STL-10 loader on a tiny fixture in the official column-major binary format, and its error messages."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from unlearnleak.data import load_dataset
from unlearnleak.data.stl10 import STL10_MEAN
from unlearnleak.errors import ConfigError, DataError


def test_stl10_reads_column_major_images(stl10_dir: tuple[Path, dict[str, np.ndarray]]) -> None:
    root, raw = stl10_dir
    ds = load_dataset("stl10", "train", data_dir=root)
    assert ds.x.shape == (len(raw["train"]), 3, 96, 96) and ds.x.dtype == torch.float32
    assert ds.x.min() >= 0.0 and ds.x.max() <= 1.0
    # The pixel written at (row 1, col 5) must come back there, not transposed to (5, 1).
    assert ds.x[0, 0, 1, 5].item() == pytest.approx(250 / 255)
    assert ds.x[0, 0, 5, 1].item() == pytest.approx(10 / 255)
    assert torch.equal(ds.x, torch.from_numpy(raw["train"]).float() / 255)
    assert ds.y.tolist() == (raw["train_labels"].astype(int) - 1).tolist()  # 1..10 on disk → 0..9
    assert ds.classes[0] == "airplane" and ds.num_classes == 10 and ds.mean == STL10_MEAN
    test = load_dataset("stl10", "test", data_dir=root)
    assert len(test) == len(raw["test"]) and test.provenance.counts == {"test": len(raw["test"])}


def test_stl10_has_no_unlabelled_split(stl10_dir: tuple[Path, dict[str, np.ndarray]]) -> None:
    with pytest.raises(ConfigError, match="no split 'unlabeled'"):
        load_dataset("stl10", "unlabeled", data_dir=stl10_dir[0])


def test_stl10_size_not_multiple(stl10_dir: tuple[Path, dict[str, np.ndarray]]) -> None:
    root, _ = stl10_dir
    path = root / "stl10_binary" / "train_X.bin"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DataError, match=r"multiple of 3·96·96 = 27648") as info:
        load_dataset("stl10", "train", data_dir=root)
    assert str(path) in str(info.value) and "unlearnleak data download stl10" in str(info.value)


def test_stl10_label_count_and_range(stl10_dir: tuple[Path, dict[str, np.ndarray]]) -> None:
    root, raw = stl10_dir
    path = root / "stl10_binary" / "train_y.bin"
    n = len(raw["train"])
    path.write_bytes(bytes([1] * (n + 1)))
    with pytest.raises(DataError, match=f"holds {n + 1} labels but the images file holds {n} images"):
        load_dataset("stl10", "train", data_dir=root)
    for bad in (0, 11):
        path.write_bytes(bytes([1] * (n - 1) + [bad]))
        with pytest.raises(DataError, match=r"labels should lie in 1\.\.10"):
            load_dataset("stl10", "train", data_dir=root)


def test_stl10_missing_and_bad_class_names(stl10_dir: tuple[Path, dict[str, np.ndarray]]) -> None:
    root, _ = stl10_dir
    names = root / "stl10_binary" / "class_names.txt"
    names.write_text("cat\ndog\n")
    with pytest.raises(DataError, match="expected 10 class names"):
        load_dataset("stl10", "test", data_dir=root)
    (root / "stl10_binary" / "test_y.bin").unlink()
    with pytest.raises(DataError, match=r"missing file .*test_y\.bin") as info:
        load_dataset("stl10", "test", data_dir=root)
    assert "stl10_binary.tar.gz" in str(info.value)
