"""The embedded offline sets: the foolbox CIFAR PNGs and scikit-learn's digits."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

from unlearnleak.data import load_dataset
from unlearnleak.data.cifar import CIFAR10_CLASSES, CIFAR100_FINE_CLASSES
from unlearnleak.data.embedded import foolbox_data_dir
from unlearnleak.errors import ConfigError, DataError

# Labels of the first 20 official test images (also encoded in the PNG file names).
CIFAR10_TEST_LABELS = [3, 8, 8, 0, 6, 6, 1, 6, 3, 1, 0, 9, 5, 7, 9, 8, 5, 7, 8, 6]
CIFAR100_TEST_LABELS = [49, 33, 72, 51, 71, 92, 15, 14, 23, 0, 71, 75, 81, 69, 40, 43, 92, 97, 70, 53]


def test_embedded_cifar10() -> None:
    ds = load_dataset("embedded_cifar10", "test")
    assert ds.x.shape == (20, 3, 32, 32) and ds.x.dtype == torch.float32
    assert ds.y.tolist() == CIFAR10_TEST_LABELS and ds.classes == CIFAR10_CLASSES
    assert ds.x.min() >= 0.0 and ds.x.max() <= 1.0 and ds.x.std() > 0.1  # real images, not blank
    # Official test image 0 starts with red values 158 159 165 (CIFAR-10 test_batch row 0).
    assert (ds.x[0, 0, 0, :3] * 255).round().tolist() == [158.0, 159.0, 165.0]
    assert len(ds.provenance.files) == 20 and Path(ds.provenance.files[0].path).name == "cifar10_00_3.png"
    assert "foolbox" not in sys.modules  # located on disk, never imported


def test_embedded_cifar100() -> None:
    ds = load_dataset("embedded_cifar100", "test")
    assert ds.x.shape == (20, 3, 32, 32) and ds.y.tolist() == CIFAR100_TEST_LABELS
    assert ds.classes == CIFAR100_FINE_CLASSES and ds.classes[49] == "mountain"
    # Red value of pixel (0, 0) of official test images 0-9.
    assert (ds.x[:10, 0, 0, 0] * 255).round().tolist() == [199, 113, 61, 93, 80, 168, 37, 175, 233, 182]
    # 49 mountain, 33 forest → 10 (large natural outdoor scenes); 72 seal → 0 (aquatic mammals).
    assert ds.extra_labels["coarse"][:3].tolist() == [10, 10, 0]


def test_embedded_sets_have_only_a_test_split() -> None:
    with pytest.raises(ConfigError, match="no split 'train'"):
        load_dataset("embedded_cifar10", "train")


def test_missing_foolbox_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "foolbox" else real(name, *a))
    with pytest.raises(DataError, match="foolbox package, which is not installed"):
        foolbox_data_dir()


def test_digits() -> None:
    train = load_dataset("digits", "train")
    test = load_dataset("digits", "test")
    assert len(train) + len(test) == 1797
    assert train.x.shape[1:] == (1, 8, 8) and train.num_classes == 10
    assert train.x.min() == 0.0 and train.x.max() == 1.0
    assert torch.equal(train.x * 16, (train.x * 16).round())  # values k/16, k = 0..16
    assert set(train.y.tolist()) == set(range(10))
    assert train.mean == test.mean and 0.0 < train.mean[0] < 1.0
    assert abs(train.mean[0] - float(train.x.mean())) < 1e-4
