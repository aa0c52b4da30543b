"""The loaders on the real subsets in ../shared/data (read-only), checked against values in its README."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch

from unlearnleak.data import Dataset, load_dataset
from unlearnleak.data.cifar import (
    CIFAR10_CLASSES,
    CIFAR100_COARSE_CLASSES,
    CIFAR100_FINE_CLASSES,
    CIFAR100_FINE_TO_COARSE,
)
from unlearnleak.data.files import LAYOUTS

pytestmark = pytest.mark.shared_data

CIFAR10_PER_BATCH = {
    1: [396, 366, 420, 384, 422, 393, 414, 385, 407, 413],
    2: [407, 410, 398, 400, 378, 400, 414, 406, 407, 380],
    3: [390, 428, 376, 413, 395, 384, 401, 401, 401, 411],
    4: [386, 371, 422, 369, 435, 417, 397, 390, 425, 388],
    5: [405, 415, 378, 401, 433, 384, 399, 392, 386, 407],
}
CIFAR10_TEST = [103, 89, 100, 103, 90, 86, 112, 102, 106, 109]


def _bytes(x: torch.Tensor) -> list[int]:
    return [int(v) for v in (x * 255).round().tolist()]


def _counts(ds: Dataset, labels: torch.Tensor | None = None, k: int | None = None) -> list[int]:
    y = ds.y if labels is None else labels
    return torch.bincount(y, minlength=k or ds.num_classes).tolist()


@pytest.fixture(scope="module")
def cifar10_train(shared_data: Path) -> Dataset:
    return load_dataset("cifar10", "train", data_dir=shared_data)


def test_cifar10_train(cifar10_train: Dataset) -> None:
    ds = cifar10_train
    assert len(ds) == 20000 and ds.x.shape == (20000, 3, 32, 32) and ds.classes == CIFAR10_CLASSES
    for k, expected in CIFAR10_PER_BATCH.items():
        assert _counts(ds.subset(torch.arange((k - 1) * 4000, k * 4000))) == expected
    # data_batch_1 row 0 starts 59 43 50 (red plane, row 0) and ends 140 84 72 (blue plane, row 31).
    assert _bytes(ds.x[0, 0, 0, :3]) == [59, 43, 50]
    assert _bytes(ds.x[0, 2, 31, 29:]) == [140, 84, 72]
    assert _bytes(ds.x[1, 0, 0, :3]) == [154, 126, 105] and _bytes(ds.x[1, 2, 31, 29:]) == [139, 142, 144]
    assert ds.provenance.counts == {**{f"data_batch_{k}": 4000 for k in range(1, 6)}, "train": 20000}


def test_cifar10_batches_option(shared_data: Path, cifar10_train: Dataset) -> None:
    pretrain = load_dataset("cifar10", "train", data_dir=shared_data, batches=(2, 3, 4, 5))
    finetune = load_dataset("cifar10", "train", data_dir=shared_data, batches=(1,))
    assert len(pretrain) == 16000 and _counts(finetune) == CIFAR10_PER_BATCH[1]
    assert torch.equal(pretrain.x[:5], cifar10_train.x[4000:4005])


def test_cifar10_test(shared_data: Path) -> None:
    ds = load_dataset("cifar10", "test", data_dir=shared_data)
    assert len(ds) == 1000 and _counts(ds) == CIFAR10_TEST
    assert _bytes(ds.x[0, 0, 0, :9]) == [158, 159, 165, 166, 160, 156, 162, 159, 158]
    sha = {Path(r.path).name: r.sha256 for r in ds.provenance.files}
    assert sha["test_batch"] == "2de92896e546b4f5bd7e893bcfabc10b0f1d49d7ef9706839c44f7b6af8867d8"
    embedded = load_dataset("embedded_cifar10", "test")  # foolbox's PNGs are official test images 0-19
    assert torch.equal(embedded.x, ds.x[:20]) and torch.equal(embedded.y, ds.y[:20])


def test_cifar100(shared_data: Path) -> None:
    train = load_dataset("cifar100", "train", data_dir=shared_data)
    test = load_dataset("cifar100", "test", data_dir=shared_data)
    assert len(train) == 10000 and len(test) == 2000
    assert train.classes == CIFAR100_FINE_CLASSES
    assert train.y[:5].tolist() == [19, 29, 0, 11, 1]
    assert test.y[:10].tolist() == [49, 33, 72, 51, 71, 92, 15, 14, 23, 0]
    assert _bytes(train.x[:10, 0, 0, 0]) == [255, 255, 250, 124, 43, 190, 50, 178, 122, 255]
    assert _bytes(test.x[:10, 0, 0, 0]) == [199, 113, 61, 93, 80, 168, 37, 175, 233, 182]
    pixels = train.x[0, :, 0, 17:21].T  # (4 pixels, RGB)
    assert [_bytes(p) for p in pixels] == [[255, 252, 248], [231, 222, 213], [176, 168, 163], [237, 236, 235]]
    assert _counts(train, train.extra_labels["coarse"], 20) == [
        533, 492, 511, 494, 514, 499, 505, 466, 475, 456, 500, 512, 531, 509, 498, 490, 480, 483, 539, 513]
    assert _counts(test)[:10] == [20, 19, 24, 22, 14, 18, 23, 24, 21, 22]
    mapped = torch.tensor(CIFAR100_FINE_TO_COARSE)[train.y]
    assert torch.equal(mapped, train.extra_labels["coarse"])
    coarse = load_dataset("cifar100", "test", data_dir=shared_data, label="coarse")
    assert coarse.classes == CIFAR100_COARSE_CLASSES and _counts(coarse)[:3] == [90, 89, 93]
    embedded = load_dataset("embedded_cifar100", "test")
    assert torch.equal(embedded.x, test.x[:20]) and torch.equal(embedded.extra_labels["coarse"],
                                                                test.extra_labels["coarse"][:20])


def test_retinamnist(shared_data: Path) -> None:
    expected = {"train": [486, 128, 206, 194, 66], "val": [54, 12, 28, 20, 6], "test": [174, 46, 92, 68, 20]}
    for split, counts in expected.items():
        ds = load_dataset("retinamnist", split, data_dir=shared_data)
        assert ds.x.shape == (sum(counts), 3, 28, 28) and _counts(ds) == counts
    path = shared_data / "medmnist" / "retinamnist.npz"
    assert hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest() == LAYOUTS["retinamnist"].md5
