"""The invertible tabular preprocessing: standardise numeric columns, one-hot encode categorical ones.

Feature attacks reconstruct model-space rows; :meth:`TabularTransform.inverse` maps them back to the
original units and categories (argmax over each one-hot group) so that errors can be reported in the
data's own terms. Statistics are fitted on the train split only and reused for every other split.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from unlearnleak.errors import DataError

Columns = Mapping[str, np.ndarray]
"""Column name → values (float64 for numeric columns, str objects for categorical ones)."""


def column(frame: Any, name: str) -> np.ndarray:
    """Column ``name`` of a pandas DataFrame, a mapping of columns, or a list of row dicts."""
    try:
        if isinstance(frame, list):
            return np.array([row[name] for row in frame], dtype=object)
        return np.asarray(frame[name])
    except KeyError:
        raise DataError(f"the table has no column {name!r}") from None


@dataclass(frozen=True)
class TabularTransform:
    """Standardise numeric columns ((x − mean) / std) and one-hot categorical ones, in column order.

    A numeric column becomes one feature; a categorical column with k categories becomes k features,
    named ``"column=category"``. Columns with zero spread on the train split get a scale of 1.
    """

    columns: tuple[str, ...]
    numeric_stats: Mapping[str, tuple[float, float]]  # column → (mean, std) on the train split
    categories: Mapping[str, tuple[str, ...]]  # column → sorted categories seen on the train split

    @classmethod
    def fit(cls, frame: Any, numeric_columns: Sequence[str], categorical_columns: Sequence[str],
            order: Sequence[str] | None = None) -> TabularTransform:
        """Fit on ``frame`` (the train split); ``order`` fixes the feature order (default: numeric first)."""
        columns = tuple(order) if order is not None else (*numeric_columns, *categorical_columns)
        if sorted(columns) != sorted([*numeric_columns, *categorical_columns]):
            raise ValueError("order must list exactly the numeric and categorical columns")
        stats: dict[str, tuple[float, float]] = {}
        for name in numeric_columns:
            values = _numeric(column(frame, name), name)
            if values.size == 0:
                raise DataError("cannot fit the tabular transform on an empty train split")
            std = float(values.std())
            stats[name] = (float(values.mean()), std if std > 0 else 1.0)
        cats = {name: tuple(sorted(set(_categorical(column(frame, name), name).tolist())))
                for name in categorical_columns}
        return cls(columns=columns, numeric_stats=stats, categories=cats)

    @property
    def numeric_columns(self) -> tuple[str, ...]:
        """Numeric columns in feature order."""
        return tuple(c for c in self.columns if c in self.numeric_stats)

    @property
    def categorical_columns(self) -> tuple[str, ...]:
        """Categorical columns in feature order."""
        return tuple(c for c in self.columns if c in self.categories)

    @property
    def slices(self) -> dict[str, slice]:
        """Column → its slice of the feature vector (width 1 for numeric, k for categorical)."""
        out: dict[str, slice] = {}
        start = 0
        for name in self.columns:
            width = len(self.categories[name]) if name in self.categories else 1
            out[name] = slice(start, start + width)
            start += width
        return out

    @property
    def num_features(self) -> int:
        """Width D of a feature row."""
        return sum(s.stop - s.start for s in self.slices.values())

    @property
    def feature_names(self) -> tuple[str, ...]:
        """One name per feature: the column, or ``column=category`` inside a one-hot group."""
        names: list[str] = []
        for name in self.columns:
            if name in self.categories:
                names.extend(f"{name}={cat}" for cat in self.categories[name])
            else:
                names.append(name)
        return tuple(names)

    def forward(self, frame: Any) -> torch.Tensor:
        """Rows in original units (DataFrame, mapping of columns, or list of row dicts) → float32 (N, D)."""
        blocks: list[np.ndarray] = []
        for name in self.columns:
            values = column(frame, name)
            if name in self.numeric_stats:
                mean, std = self.numeric_stats[name]
                blocks.append(((_numeric(values, name) - mean) / std)[:, None])
            else:
                blocks.append(self._one_hot(name, _categorical(values, name)))
        n = blocks[0].shape[0] if blocks else 0
        out = np.concatenate(blocks, axis=1) if blocks else np.zeros((n, 0))
        return torch.from_numpy(out.astype(np.float32))

    def inverse(self, features: torch.Tensor) -> list[dict[str, Any]]:
        """Features (N, D) → rows in original units; a categorical value is the argmax of its group."""
        if features.ndim != 2 or features.shape[1] != self.num_features:
            raise ValueError(f"expected features of shape (N, {self.num_features}), "
                             f"got {tuple(features.shape)}")
        array = features.detach().to("cpu", torch.float64).numpy()
        rows: list[dict[str, Any]] = [{} for _ in range(array.shape[0])]
        for name, part in self.slices.items():
            block = array[:, part]  # (N, width)
            if name in self.numeric_stats:
                mean, std = self.numeric_stats[name]
                for row, value in zip(rows, block[:, 0] * std + mean, strict=True):
                    row[name] = float(value)
            else:
                cats = self.categories[name]
                for row, idx in zip(rows, block.argmax(axis=1), strict=True):
                    row[name] = cats[int(idx)]
        return rows

    def _one_hot(self, name: str, values: np.ndarray) -> np.ndarray:
        cats = self.categories[name]
        index = {cat: i for i, cat in enumerate(cats)}
        out = np.zeros((values.shape[0], len(cats)))
        for r, value in enumerate(values.tolist()):
            if value not in index:
                raise DataError(f"column {name!r} has the category {value!r}, unseen when the transform was "
                                f"fitted (known: {', '.join(cats)})")
            out[r, index[value]] = 1.0
        return out


def _numeric(values: np.ndarray, name: str) -> np.ndarray:
    try:
        out = np.asarray(values, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as exc:
        raise DataError(f"numeric column {name!r} holds a non-number ({exc})") from exc
    if not np.isfinite(out).all():
        raise DataError(f"numeric column {name!r} holds a missing or infinite value")
    return out


def _categorical(values: np.ndarray, name: str) -> np.ndarray:
    flat = np.asarray(values, dtype=object).reshape(-1)
    if any(is_missing(v) for v in flat.tolist()):
        raise DataError(f"categorical column {name!r} holds a missing value")
    return np.array([str(v) for v in flat.tolist()], dtype=object)


def is_missing(value: Any) -> bool:
    """None, a float NaN, or pandas' NA / NaT."""
    return value is None or (isinstance(value, float) and np.isnan(value)) or type(value).__name__ in (
        "NAType", "NaTType")


def stratified_split(labels: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic stratified train/test row indices (each sorted ascending).

    In every class, ``round(test_fraction · n_class)`` rows drawn with ``numpy.random.default_rng(seed)``
    go to test; the rest go to train. The same labels, fraction and seed always give the same split.
    """
    if not 0.0 < test_fraction < 1.0:
        raise DataError(f"test_fraction must lie strictly between 0 and 1, got {test_fraction}")
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels).reshape(-1)
    test: list[np.ndarray] = []
    for value in np.unique(labels):
        rows = np.flatnonzero(labels == value)
        take = round(test_fraction * rows.size)
        test.append(rng.permutation(rows)[:take])
    test_idx = np.sort(np.concatenate(test)) if test else np.zeros(0, dtype=np.int64)
    mask = np.ones(labels.shape[0], dtype=bool)
    mask[test_idx] = False
    return np.flatnonzero(mask), test_idx
