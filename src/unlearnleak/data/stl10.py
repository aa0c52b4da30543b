"""STL-10 (labelled train and test) from the official binary files.

Layout: ``<data_dir>/stl10_binary/{train_X.bin, train_y.bin, test_X.bin, test_y.bin, class_names.txt}``.
``*_X.bin`` holds uint8 images of 3×96×96 bytes each, stored column-major (as MATLAB writes them): read
one image as (3, 96, 96) and swap the last two axes to get (C, H, W). ``*_y.bin`` holds one uint8 label
per image, 1..10 on disk (0..9 here). The unlabelled split is not offered.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from unlearnleak.data.base import Dataset, DatasetInfo, Provenance, register_dataset, resolve_data_dir
from unlearnleak.data.convert import images_to_tensor, labels_to_tensor
from unlearnleak.data.files import LAYOUTS, Layout, corrupt, file_record, require_file

IMAGE_BYTES = 3 * 96 * 96
STL10_MEAN = (0.44671, 0.43981, 0.40665)
STL10_STD = (0.26034, 0.25658, 0.27127)
STL10_DIR = "stl10_binary"

LAYOUTS["stl10"] = Layout(
    alternatives=(tuple(f"{STL10_DIR}/{f}" for f in (
        "train_X.bin", "train_y.bin", "test_X.bin", "test_y.bin", "class_names.txt")),),
    url="http://ai.stanford.edu/~acoates/stl10/stl10_binary.tar.gz",
    md5="91f7769df0f17e558f3565bffb0c7dfb", archive="tar.gz", top_folder=STL10_DIR,
)


def _read_images(path: Path, root: Path) -> np.ndarray:
    """uint8 (n, 3, 96, 96) from a column-major ``*_X.bin``."""
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size == 0 or raw.size % IMAGE_BYTES:
        raise corrupt("stl10", path, f"its size ({raw.size} bytes) should be a positive multiple of "
                      f"3·96·96 = {IMAGE_BYTES}", root)
    return raw.reshape(-1, 3, 96, 96).transpose(0, 1, 3, 2)  # column-major → (n, C, H, W)


def _read_labels(path: Path, n: int, root: Path) -> np.ndarray:
    """Labels 0..9 from a ``*_y.bin`` holding ``n`` bytes 1..10."""
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size != n:
        raise corrupt("stl10", path, f"it holds {raw.size} labels but the images file holds {n} images", root)
    if raw.min() < 1 or raw.max() > 10:
        raise corrupt("stl10", path, f"labels should lie in 1..10, found {raw.min()}..{raw.max()}", root)
    return raw.astype(np.int64) - 1


def _read_class_names(path: Path, root: Path) -> tuple[str, ...]:
    try:
        names = tuple(line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip())
    except UnicodeDecodeError as exc:
        raise corrupt("stl10", path, f"not UTF-8 text ({exc})", root) from exc
    if len(names) != 10:
        raise corrupt("stl10", path, f"expected 10 class names, one per line, found {len(names)}", root)
    return names


@register_dataset(DatasetInfo(
    name="stl10", kind="image", splits=("train", "test"), needs_files=True,
    description="STL-10 (official binaries): 96×96 RGB, 10 classes, labelled train/test",
))
def load_stl10(split: str = "train", data_dir: str | Path | None = None) -> Dataset:
    """STL-10 labelled ``split`` ("train": 5000 images, "test": 8000 in the official files)."""
    root = resolve_data_dir(data_dir)
    x_path = require_file("stl10", root, f"{STL10_DIR}/{split}_X.bin")
    y_path = require_file("stl10", root, f"{STL10_DIR}/{split}_y.bin")
    names_path = require_file("stl10", root, f"{STL10_DIR}/class_names.txt")
    classes = _read_class_names(names_path, root)
    images = _read_images(x_path, root)
    labels = _read_labels(y_path, images.shape[0], root)
    return Dataset(
        name="stl10", split=split, kind="image", x=images_to_tensor(images), y=labels_to_tensor(labels),
        classes=classes, mean=STL10_MEAN, std=STL10_STD,
        provenance=Provenance(source="STL-10 binary version (Coates et al. 2011)",
                              files=(file_record(x_path), file_record(y_path), file_record(names_path)),
                              counts={split: images.shape[0]}),
    )
