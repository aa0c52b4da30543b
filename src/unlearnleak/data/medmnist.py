"""MedMNIST 2-D (28×28) from the official ``.npz`` files: medical images with train/val/test splits.

Layout: ``<data_dir>/medmnist/<name>.npz`` (or ``<data_dir>/<name>.npz``) with the keys
``{train,val,test}_images`` — uint8 (N, 28, 28) grey or (N, 28, 28, 3) RGB — and ``{train,val,test}_labels``
(N, 1). Class names, channel counts, URLs and MD5s are those of MedMNIST's ``medmnist/info.py``
(v2, Zenodo record 6496656). The multi-label ChestMNIST is not offered (one label per image here).

Normalisation: ``mean``/``std`` are computed per channel from the *train* split (pixel / 255, population
std, rounded to 5 decimals) and are the same whichever split is loaded.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from unlearnleak.data.base import Dataset, DatasetInfo, Loader, Provenance, register_dataset, resolve_data_dir
from unlearnleak.data.convert import channel_stats, images_to_tensor, labels_to_tensor
from unlearnleak.data.files import LAYOUTS, Layout, corrupt, file_record, how_to_obtain
from unlearnleak.errors import DataError

ZENODO = "https://zenodo.org/record/6496656/files"


@dataclass(frozen=True)
class MedMNISTSpec:
    """One MedMNIST subset as described in ``medmnist/info.py``."""

    name: str
    title: str
    channels: int
    md5: str
    classes: tuple[str, ...]
    licence: str = "CC BY 4.0"


_ORGANS = ("bladder", "femur-left", "femur-right", "heart", "kidney-left", "kidney-right", "liver",
           "lung-left", "lung-right", "pancreas", "spleen")

MEDMNIST: dict[str, MedMNISTSpec] = {s.name: s for s in (
    MedMNISTSpec("pathmnist", "PathMNIST (colon pathology)", 3, "a8b06965200029087d5bd730944a56c1", (
        "adipose", "background", "debris", "lymphocytes", "mucus", "smooth muscle", "normal colon mucosa",
        "cancer-associated stroma", "colorectal adenocarcinoma epithelium")),
    MedMNISTSpec("dermamnist", "DermaMNIST (dermatoscope)", 3, "0744692d530f8e62ec473284d019b0c7", (
        "actinic keratoses and intraepithelial carcinoma", "basal cell carcinoma",
        "benign keratosis-like lesions", "dermatofibroma", "melanoma", "melanocytic nevi",
        "vascular lesions"), licence="CC BY-NC 4.0 (HAM10000)"),
    MedMNISTSpec("octmnist", "OCTMNIST (retinal OCT)", 1, "c68d92d5b585d8d81f7112f81e2d0842", (
        "choroidal neovascularization", "diabetic macular edema", "drusen", "normal")),
    MedMNISTSpec("pneumoniamnist", "PneumoniaMNIST (chest X-ray)", 1, "28209eda62fecd6e6a2d98b1501bb15f",
                 ("normal", "pneumonia")),
    MedMNISTSpec("retinamnist", "RetinaMNIST (fundus, DR grade 0-4)", 3, "bd4c0672f1bba3e3a89f0e4e876791e4",
                 ("0", "1", "2", "3", "4")),
    MedMNISTSpec("breastmnist", "BreastMNIST (breast ultrasound)", 1, "750601b1f35ba3300ea97c75c52ff8f6",
                 ("malignant", "normal, benign")),
    MedMNISTSpec("bloodmnist", "BloodMNIST (blood cell microscope)", 3, "7053d0359d879ad8a5505303e11de1dc", (
        "basophil", "eosinophil", "erythroblast",
        "immature granulocytes(myelocytes, metamyelocytes and promyelocytes)", "lymphocyte", "monocyte",
        "neutrophil", "platelet")),
    MedMNISTSpec("tissuemnist", "TissueMNIST (kidney cortex cells)", 1, "ebe78ee8b05294063de985d821c1c34b", (
        "Collecting Duct, Connecting Tubule", "Distal Convoluted Tubule", "Glomerular endothelial cells",
        "Interstitial endothelial cells", "Leukocytes", "Podocytes", "Proximal Tubule Segments",
        "Thick Ascending Limb")),
    MedMNISTSpec("organamnist", "OrganAMNIST (abdominal CT, axial)", 1, "866b832ed4eeba67bfb9edee1d5544e6",
                 _ORGANS),
    MedMNISTSpec("organcmnist", "OrganCMNIST (abdominal CT, coronal)", 1, "0afa5834fb105f7705a7d93372119a21",
                 _ORGANS),
    MedMNISTSpec("organsmnist", "OrganSMNIST (abdominal CT, sagittal)", 1, "e5c39f1af030238290b9557d9503af9d",
                 _ORGANS),
)}

SPLITS = ("train", "val", "test")

_STATS_CACHE: dict[tuple[str, int, int], tuple[tuple[float, ...], tuple[float, ...]]] = {}


def _find_file(spec: MedMNISTSpec, root: Path) -> Path:
    for rel in (f"medmnist/{spec.name}.npz", f"{spec.name}.npz"):
        if (root / rel).is_file():
            return root / rel
    raise DataError(f"{spec.name}: missing file {root / 'medmnist' / f'{spec.name}.npz'} "
                    f"(or {root / f'{spec.name}.npz'}). {how_to_obtain(spec.name, root)}")


def _array(spec: MedMNISTSpec, path: Path, npz: np.lib.npyio.NpzFile, key: str, root: Path) -> np.ndarray:
    if key not in npz.files:
        raise corrupt(spec.name, path, f"expected the key {key!r}, found {', '.join(npz.files)}", root)
    try:
        return np.asarray(npz[key])
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
        raise corrupt(spec.name, path, f"the array {key!r} cannot be read ({exc})", root) from exc


def _images(spec: MedMNISTSpec, path: Path, npz: np.lib.npyio.NpzFile, split: str, root: Path) -> np.ndarray:
    """uint8 (N, C, 28, 28) for ``split`` after checking shape, dtype and channel count."""
    arr = _array(spec, path, npz, f"{split}_images", root)
    expected = "(N, 28, 28)" if spec.channels == 1 else "(N, 28, 28, 3)"
    ok_shape = (arr.ndim == 3 and spec.channels == 1) or (arr.ndim == 4 and arr.shape[3] == spec.channels)
    if arr.dtype != np.uint8 or not ok_shape or arr.shape[1:3] != (28, 28):
        raise corrupt(spec.name, path, f"{split}_images should be uint8 {expected}, found {arr.dtype} "
                      f"{arr.shape}", root)
    return arr[:, None] if arr.ndim == 3 else arr.transpose(0, 3, 1, 2)


def _labels(spec: MedMNISTSpec, path: Path, npz: np.lib.npyio.NpzFile, split: str, n: int, root: Path
            ) -> np.ndarray:
    arr = _array(spec, path, npz, f"{split}_labels", root)
    if arr.size != n or not np.issubdtype(arr.dtype, np.integer):
        raise corrupt(spec.name, path, f"{split}_labels should hold {n} integers (N, 1), found {arr.dtype} "
                      f"{arr.shape}", root)
    labels = arr.reshape(-1).astype(np.int64)
    k = len(spec.classes)
    if n and (labels.min() < 0 or labels.max() >= k):
        raise corrupt(spec.name, path, f"{split}_labels should lie in 0..{k - 1}, found "
                      f"{labels.min()}..{labels.max()}", root)
    return labels


def _open(spec: MedMNISTSpec, path: Path, root: Path) -> np.lib.npyio.NpzFile:
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
        raise corrupt(spec.name, path, f"not a readable .npz archive ({exc})", root) from exc


def _train_stats(spec: MedMNISTSpec, path: Path, npz: np.lib.npyio.NpzFile, root: Path
                 ) -> tuple[tuple[float, ...], tuple[float, ...]]:
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _STATS_CACHE:
        train = _images(spec, path, npz, "train", root)
        if train.shape[0] == 0:
            raise corrupt(spec.name, path, "train_images is empty; the normalisation needs it", root)
        _STATS_CACHE[key] = channel_stats(train)
    return _STATS_CACHE[key]


def load_medmnist(spec: MedMNISTSpec, split: str, data_dir: str | Path | None) -> Dataset:
    """MedMNIST subset ``spec`` for ``split`` ("train", "val" or "test")."""
    root = resolve_data_dir(data_dir)
    path = _find_file(spec, root)
    with _open(spec, path, root) as npz:
        images = _images(spec, path, npz, split, root)
        labels = _labels(spec, path, npz, split, images.shape[0], root)
        mean, std = _train_stats(spec, path, npz, root)
    return Dataset(
        name=spec.name, split=split, kind="image", x=images_to_tensor(images), y=labels_to_tensor(labels),
        classes=spec.classes, mean=mean, std=std,
        provenance=Provenance(
            source=f"MedMNIST v2 {spec.title} (Yang et al. 2023); licence {spec.licence}",
            files=(file_record(path),), counts={split: images.shape[0]},
            notes="mean/std per channel from the train split",
        ),
    )


def _make_loader(spec: MedMNISTSpec) -> Loader:
    def loader(split: str = "train", data_dir: str | Path | None = None) -> Dataset:
        return load_medmnist(spec, split, data_dir)

    loader.__name__ = f"load_{spec.name}"
    loader.__doc__ = f"{spec.title}, 28×28, splits train/val/test."
    return loader


for _spec in MEDMNIST.values():
    LAYOUTS[_spec.name] = Layout(
        alternatives=((f"medmnist/{_spec.name}.npz",), (f"{_spec.name}.npz",)),
        url=f"{ZENODO}/{_spec.name}.npz?download=1", md5=_spec.md5, archive="file",
    )
    register_dataset(DatasetInfo(
        name=_spec.name, kind="image", splits=SPLITS, needs_files=True,
        description=f"MedMNIST {_spec.title}: 28×28, {len(_spec.classes)} classes",
    ))(_make_loader(_spec))
