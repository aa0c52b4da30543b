"""The Dataset value every loader returns, and the registry that maps names to loaders."""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import torch

from unlearnleak.errors import ConfigError
from unlearnleak.registry import Registry

DATA_DIR_ENV = "UNLEARNLEAK_DATA_DIR"


@dataclass(frozen=True)
class FileRecord:
    """One source file a dataset was read from: where, how big, and its sha256."""

    path: str
    size: int
    sha256: str


@dataclass(frozen=True)
class Provenance:
    """Where a dataset came from: the files read, their checksums, and counts per split."""

    source: str
    files: tuple[FileRecord, ...] = ()
    counts: Mapping[str, int] = field(default_factory=dict)
    notes: str = ""


class FeatureTransform(Protocol):
    """An invertible preprocessing of tabular rows: original units ↔ model features."""

    def forward(self, frame: Any) -> torch.Tensor: ...

    def inverse(self, features: torch.Tensor) -> list[dict[str, Any]]: ...


@dataclass(frozen=True)
class Dataset:
    """A labelled dataset in model-ready form.

    Images are float32 tensors in [0, 1] of shape (N, C, H, W); tabular rows are float32 (N, D) already
    preprocessed by ``transform`` (which maps them back to original units). ``mean``/``std`` are the
    per-channel (images) or per-feature (tables) normalisation constants that a model applies first.
    """

    name: str
    split: str
    kind: Literal["image", "tabular"]
    x: torch.Tensor
    y: torch.Tensor  # (N,) int64
    classes: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    provenance: Provenance
    extra_labels: Mapping[str, torch.Tensor] = field(default_factory=dict)  # e.g. CIFAR-100 "coarse"
    transform: FeatureTransform | None = None
    feature_names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.x.shape[0] != self.y.shape[0]:
            raise ValueError(f"{self.name}: {self.x.shape[0]} inputs but {self.y.shape[0]} labels")

    def __len__(self) -> int:
        return int(self.x.shape[0])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one input: (C, H, W) for images, (D,) for tables."""
        return tuple(self.x.shape[1:])

    def subset(self, indices: torch.Tensor | list[int]) -> Dataset:
        """The rows at ``indices`` (same metadata)."""
        idx = torch.as_tensor(indices, dtype=torch.long)
        return Dataset(
            name=self.name, split=self.split, kind=self.kind, x=self.x[idx], y=self.y[idx],
            classes=self.classes, mean=self.mean, std=self.std, provenance=self.provenance,
            extra_labels={k: v[idx] for k, v in self.extra_labels.items()},
            transform=self.transform, feature_names=self.feature_names,
        )


Loader = Callable[..., Dataset]
"""A loader: ``loader(split=..., data_dir=..., **options) -> Dataset``."""

DATASETS: Registry[Loader] = Registry("dataset")


@dataclass(frozen=True)
class DatasetInfo:
    """What ``unlearnleak data list/info`` prints about a registered dataset."""

    name: str
    kind: Literal["image", "tabular"]
    splits: tuple[str, ...]
    description: str
    needs_files: bool  # True when files must be placed in --data-dir (or downloaded)


DATASET_INFO: dict[str, DatasetInfo] = {}


def register_dataset(info: DatasetInfo) -> Callable[[Loader], Loader]:
    """Register a loader under ``info.name`` together with its description."""

    def decorator(loader: Loader) -> Loader:
        DATASET_INFO[info.name] = info
        return DATASETS.register(info.name)(loader)

    return decorator


def resolve_data_dir(data_dir: str | Path | None) -> Path:
    """The folder image datasets are read from: the argument, else $UNLEARNLEAK_DATA_DIR, else ./data."""
    if data_dir is not None:
        return Path(data_dir).expanduser()
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        return Path(env).expanduser()
    return Path("data")


def load_dataset(name: str, split: str = "train", data_dir: str | Path | None = None,
                 **options: Any) -> Dataset:
    """Load dataset ``name`` (see ``DATASETS.names()``) for ``split``."""
    loader = DATASETS.get(name)
    info = DATASET_INFO[name]
    if split not in info.splits:
        raise ConfigError(f"dataset {name!r} has no split {split!r}; choose one of: {', '.join(info.splits)}")
    _check_options(name, loader, options)
    return loader(split=split, data_dir=data_dir, **options)


def _check_options(name: str, loader: Loader, options: Mapping[str, Any]) -> None:
    """A ConfigError naming the accepted options when ``options`` do not fit ``loader``'s signature."""
    try:
        inspect.signature(loader).bind(split="train", data_dir=None, **options)
    except TypeError as exc:
        params = inspect.signature(loader).parameters
        accepted = [p for p in params if p not in ("split", "data_dir")]
        raise ConfigError(f"dataset {name!r} does not accept the options {sorted(options)} ({exc}); "
                          f"its options are: {', '.join(accepted) or '(none)'}") from None
