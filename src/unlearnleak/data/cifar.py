"""CIFAR-10 and CIFAR-100 from the official "python version" pickles (any number of images per batch).

Layout: ``<data_dir>/cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}`` and
``<data_dir>/cifar-100-python/{train, test, meta}``. Each batch is a pickled dict with bytes keys;
``b"data"`` is uint8 (n, 3072): 1024 red, then 1024 green, then 1024 blue values, each plane a row-major
32×32 image. The pickles are read with :class:`~unlearnleak.data.safe_pickle.NumpyOnlyUnpickler`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from unlearnleak.data.base import (
    Dataset,
    DatasetInfo,
    FileRecord,
    Provenance,
    register_dataset,
    resolve_data_dir,
)
from unlearnleak.data.convert import images_to_tensor, labels_to_tensor
from unlearnleak.data.files import LAYOUTS, Layout, corrupt, file_record, require_file
from unlearnleak.data.safe_pickle import load_restricted
from unlearnleak.errors import ConfigError, DataError

ROW_BYTES = 3 * 32 * 32

CIFAR10_MEAN = (0.49147, 0.48226, 0.44677)
CIFAR10_STD = (0.24703, 0.24349, 0.26159)
CIFAR100_MEAN = (0.50716, 0.48669, 0.44120)
CIFAR100_STD = (0.26733, 0.25644, 0.27615)

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
"""The official ``batches.meta`` label names (used by the embedded set, which has no meta file)."""

CIFAR100_FINE_CLASSES = (
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle", "bottle",
    "bowl", "boy", "bridge", "bus", "butterfly", "camel", "can", "castle", "caterpillar", "cattle",
    "chair", "chimpanzee", "clock", "cloud", "cockroach", "couch", "crab", "crocodile", "cup", "dinosaur",
    "dolphin", "elephant", "flatfish", "forest", "fox", "girl", "hamster", "house", "kangaroo", "keyboard",
    "lamp", "lawn_mower", "leopard", "lion", "lizard", "lobster", "man", "maple_tree", "motorcycle",
    "mountain", "mouse", "mushroom", "oak_tree", "orange", "orchid", "otter", "palm_tree", "pear",
    "pickup_truck", "pine_tree", "plain", "plate", "poppy", "porcupine", "possum", "rabbit", "raccoon",
    "ray", "road", "rocket", "rose", "sea", "seal", "shark", "shrew", "skunk", "skyscraper", "snail",
    "snake", "spider", "squirrel", "streetcar", "sunflower", "sweet_pepper", "table", "tank", "telephone",
    "television", "tiger", "tractor", "train", "trout", "tulip", "turtle", "wardrobe", "whale",
    "willow_tree", "wolf", "woman", "worm",
)
"""The official ``meta`` fine label names."""

CIFAR100_COARSE_CLASSES = (
    "aquatic_mammals", "fish", "flowers", "food_containers", "fruit_and_vegetables",
    "household_electrical_devices", "household_furniture", "insects", "large_carnivores",
    "large_man-made_outdoor_things", "large_natural_outdoor_scenes", "large_omnivores_and_herbivores",
    "medium_mammals", "non-insect_invertebrates", "people", "reptiles", "small_mammals", "trees",
    "vehicles_1", "vehicles_2",
)
"""The official ``meta`` coarse (superclass) names."""

CIFAR100_FINE_TO_COARSE = (
    4, 1, 14, 8, 0, 6, 7, 7, 18, 3, 3, 14, 9, 18, 7, 11, 3, 9, 7, 11,
    6, 11, 5, 10, 7, 6, 13, 15, 3, 15, 0, 11, 1, 10, 12, 14, 16, 9, 11, 5,
    5, 19, 8, 8, 15, 13, 14, 17, 18, 10, 16, 4, 17, 4, 2, 0, 17, 4, 18, 17,
    10, 3, 2, 12, 12, 16, 12, 1, 9, 19, 2, 10, 0, 1, 16, 12, 9, 13, 15, 13,
    16, 19, 2, 4, 6, 19, 5, 5, 8, 19, 18, 1, 2, 15, 6, 0, 17, 8, 14, 13,
)
"""The standard fine → coarse map (the superclass table on the CIFAR page); index = fine label."""

CIFAR10_DIR = "cifar-10-batches-py"
CIFAR100_DIR = "cifar-100-python"

LAYOUTS["cifar10"] = Layout(
    alternatives=(tuple(f"{CIFAR10_DIR}/{f}" for f in (
        *(f"data_batch_{i}" for i in range(1, 6)), "test_batch", "batches.meta")),),
    url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
    md5="c58f30108f718f92721af3b95e74349a", archive="tar.gz", top_folder=CIFAR10_DIR,
)
LAYOUTS["cifar100"] = Layout(
    alternatives=(tuple(f"{CIFAR100_DIR}/{f}" for f in ("train", "test", "meta")),),
    url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
    md5="eb9058c3a382ffc7106e4002c42a8d85", archive="tar.gz", top_folder=CIFAR100_DIR,
)


def _unpickle_dict(name: str, path: Path, data_dir: Path) -> dict[bytes, Any]:
    """Read one official pickle as a dict with bytes keys; a DataError for anything else."""
    try:
        obj = load_restricted(path)
    except DataError as exc:
        raise corrupt(name, path, str(exc), data_dir) from exc
    except Exception as exc:  # truncated or garbled pickles raise many different exception types
        raise corrupt(name, path, f"cannot be unpickled ({type(exc).__name__}: {exc})", data_dir) from exc
    if not isinstance(obj, dict):
        raise corrupt(name, path, f"expected a pickled dict, found {type(obj).__name__}", data_dir)
    return obj


def _key(name: str, path: Path, batch: dict[bytes, Any], key: bytes, data_dir: Path) -> Any:
    if key not in batch:
        found = ", ".join(repr(k) for k in batch)
        raise corrupt(name, path, f"expected the key {key!r}, found only {found}", data_dir)
    return batch[key]


def _images(name: str, path: Path, batch: dict[bytes, Any], data_dir: Path) -> np.ndarray:
    """The batch's ``b"data"`` as uint8 (n, 3, 32, 32), after checking dtype and row size."""
    data = _key(name, path, batch, b"data", data_dir)
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2:
        what = (f"{data.dtype} array of shape {data.shape}" if isinstance(data, np.ndarray)
                else type(data).__name__)
        raise corrupt(name, path, f"b'data' should be a uint8 array (n, {ROW_BYTES}), found {what}", data_dir)
    if data.shape[1] != ROW_BYTES:
        raise corrupt(name, path, f"b'data' rows should hold {ROW_BYTES} bytes (3×32×32), found "
                      f"{data.shape[1]}", data_dir)
    return data.reshape(-1, 3, 32, 32)


def _labels(name: str, path: Path, batch: dict[bytes, Any], key: bytes, n: int, num_classes: int,
            data_dir: Path) -> np.ndarray:
    """The batch's labels under ``key`` as int64 (n,), checked for length and range."""
    raw = _key(name, path, batch, key, data_dir)
    try:
        labels = np.asarray(raw, dtype=np.int64).reshape(-1)
    except (TypeError, ValueError) as exc:
        raise corrupt(name, path, f"{key!r} should be a list of integers ({exc})", data_dir) from exc
    if labels.shape[0] != n:
        raise corrupt(name, path, f"{key!r} has {labels.shape[0]} entries but b'data' has {n} rows", data_dir)
    if n and (labels.min() < 0 or labels.max() >= num_classes):
        raise corrupt(name, path, f"{key!r} should lie in 0..{num_classes - 1}, found "
                      f"{labels.min()}..{labels.max()}", data_dir)
    return labels


def _names(name: str, path: Path, meta: dict[bytes, Any], key: bytes, count: int, data_dir: Path
           ) -> tuple[str, ...]:
    """Class names stored as a list of bytes under ``key``; exactly ``count`` of them."""
    raw = _key(name, path, meta, key, data_dir)
    if not isinstance(raw, list) or len(raw) != count or not all(isinstance(v, bytes | str) for v in raw):
        raise corrupt(name, path, f"{key!r} should list {count} class names", data_dir)
    return tuple(v.decode("utf-8") if isinstance(v, bytes) else v for v in raw)


def _cifar10_batches(split: str, batches: Sequence[int] | None) -> list[str]:
    """The files of ``split``. ``batches`` is validated for every split but only shapes "train": the
    test split is always ``test_batch``, so one options dict can serve both splits of a scenario."""
    chosen = (1, 2, 3, 4, 5) if batches is None else tuple(batches)
    if not chosen or any(b not in (1, 2, 3, 4, 5) for b in chosen) or len(set(chosen)) != len(chosen):
        raise ConfigError(f"cifar10: batches must be distinct numbers in 1..5, got {chosen!r}")
    if split == "test":
        return ["test_batch"]
    return [f"data_batch_{b}" for b in chosen]


@register_dataset(DatasetInfo(
    name="cifar10", kind="image", splits=("train", "test"), needs_files=True,
    description="CIFAR-10 (official python pickles): 32×32 RGB, 10 classes",
))
def load_cifar10(split: str = "train", data_dir: str | Path | None = None,
                 batches: Sequence[int] | None = None) -> Dataset:
    """CIFAR-10 ``split``; ``batches`` picks training batches (e.g. (2, 3, 4, 5) to pretrain, (1,) to tune).

    Images are concatenated in the order of ``batches`` and, within a batch, in file order. ``batches``
    does not change the test split (always ``test_batch``); provenance notes which files were read.
    """
    root = resolve_data_dir(data_dir)
    files = _cifar10_batches(split, batches)
    meta_path = require_file("cifar10", root, f"{CIFAR10_DIR}/batches.meta")
    paths = [require_file("cifar10", root, f"{CIFAR10_DIR}/{f}") for f in files]
    meta = _unpickle_dict("cifar10", meta_path, root)
    classes = _names("cifar10", meta_path, meta, b"label_names", 10, root)
    images: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    counts: dict[str, int] = {}
    for path in paths:
        batch = _unpickle_dict("cifar10", path, root)
        x = _images("cifar10", path, batch, root)
        labels.append(_labels("cifar10", path, batch, b"labels", x.shape[0], 10, root))
        images.append(x)
        counts[path.name] = x.shape[0]
    x_all = np.concatenate(images)
    counts[split] = x_all.shape[0]
    records: tuple[FileRecord, ...] = tuple(file_record(p) for p in [*paths, meta_path])
    return Dataset(
        name="cifar10", split=split, kind="image", x=images_to_tensor(x_all),
        y=labels_to_tensor(np.concatenate(labels)), classes=classes, mean=CIFAR10_MEAN, std=CIFAR10_STD,
        provenance=Provenance(source="CIFAR-10 python version (Krizhevsky 2009)", files=records,
                              counts=counts, notes=f"batches: {', '.join(files)}"),
    )


@register_dataset(DatasetInfo(
    name="cifar100", kind="image", splits=("train", "test"), needs_files=True,
    description="CIFAR-100 (official python pickles): 32×32 RGB, 100 fine / 20 coarse classes",
))
def load_cifar100(split: str = "train", data_dir: str | Path | None = None,
                  label: Literal["fine", "coarse"] = "fine") -> Dataset:
    """CIFAR-100 ``split``, ``y`` at the ``label`` granularity; ``extra_labels`` holds "fine" and "coarse"."""
    if label not in ("fine", "coarse"):
        raise ConfigError(f"cifar100: label must be 'fine' or 'coarse', got {label!r}")
    root = resolve_data_dir(data_dir)
    path = require_file("cifar100", root, f"{CIFAR100_DIR}/{split}")
    meta_path = require_file("cifar100", root, f"{CIFAR100_DIR}/meta")
    meta = _unpickle_dict("cifar100", meta_path, root)
    fine_names = _names("cifar100", meta_path, meta, b"fine_label_names", 100, root)
    coarse_names = _names("cifar100", meta_path, meta, b"coarse_label_names", 20, root)
    batch = _unpickle_dict("cifar100", path, root)
    x = _images("cifar100", path, batch, root)
    fine = labels_to_tensor(_labels("cifar100", path, batch, b"fine_labels", x.shape[0], 100, root))
    coarse = labels_to_tensor(_labels("cifar100", path, batch, b"coarse_labels", x.shape[0], 20, root))
    y: torch.Tensor = fine if label == "fine" else coarse
    return Dataset(
        name="cifar100", split=split, kind="image", x=images_to_tensor(x), y=y,
        classes=fine_names if label == "fine" else coarse_names, mean=CIFAR100_MEAN, std=CIFAR100_STD,
        provenance=Provenance(source="CIFAR-100 python version (Krizhevsky 2009)",
                              files=(file_record(path), file_record(meta_path)), counts={split: x.shape[0]},
                              notes=f"y = {label} labels"),
        extra_labels={"fine": fine, "coarse": coarse},
    )
