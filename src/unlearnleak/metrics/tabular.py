"""Metrics for recovered tabular rows and inferred labels (definitions in docs/metrics.md)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from unlearnleak.metrics.image import MetricInputError


def feature_errors(rows_pred: Sequence[Mapping[str, Any]], rows_true: Sequence[Mapping[str, Any]],
                   numeric: Sequence[str], categorical: Sequence[str]) -> dict[str, Any]:
    """How close recovered rows are to the true ones, feature by feature (rows paired by position).

    Returns:
        ``numeric_abs_error``: {feature: mean |pred − true|} (lower is better);
        ``categorical_accuracy``: {feature: share of rows with pred == true} (higher is better);
        ``mean_abs_error`` / ``mean_categorical_accuracy``: their means over features (None if no such
        feature); ``mean_relative_error``: mean of |pred − true| / |true| over all numeric cells whose
        true value is non-zero (None if there is none), with ``relative_error_cells`` counting them;
        ``n_rows``.
    """
    if len(rows_pred) != len(rows_true):
        raise MetricInputError(f"{len(rows_pred)} predicted rows but {len(rows_true)} true rows")
    if not rows_true:
        raise MetricInputError("cannot score zero rows")
    if not numeric and not categorical:
        raise MetricInputError("name at least one numeric or categorical feature")
    overlap = sorted(set(numeric) & set(categorical))
    if overlap:
        raise MetricInputError(f"features listed as both numeric and categorical: {overlap}")
    for side, rows in (("predicted", rows_pred), ("true", rows_true)):
        for i, row in enumerate(rows):
            missing = [f for f in (*numeric, *categorical) if f not in row]
            if missing:
                raise MetricInputError(f"{side} row {i} lacks features {missing}")

    abs_error: dict[str, float] = {}
    relative: list[float] = []
    for feature in numeric:
        diffs = []
        for i, (pred, true) in enumerate(zip(rows_pred, rows_true, strict=True)):
            p, t = _number(pred[feature], feature, i), _number(true[feature], feature, i)
            diffs.append(abs(p - t))
            if t != 0:
                relative.append(abs(p - t) / abs(t))
        abs_error[feature] = sum(diffs) / len(diffs)
    pairs = list(zip(rows_pred, rows_true, strict=True))
    accuracy = {f: sum(p[f] == t[f] for p, t in pairs) / len(pairs) for f in categorical}
    return {
        "numeric_abs_error": abs_error,
        "categorical_accuracy": accuracy,
        "mean_abs_error": _mean(list(abs_error.values())),
        "mean_categorical_accuracy": _mean(list(accuracy.values())),
        "mean_relative_error": _mean(relative),
        "relative_error_cells": len(relative),
        "n_rows": len(rows_true),
    }


def label_accuracy(pred: Sequence[int] | torch.Tensor, true: Sequence[int] | torch.Tensor) -> float:
    """Share of positions where the inferred label equals the true one (higher is better, in [0, 1])."""
    p = torch.as_tensor(pred).flatten()
    t = torch.as_tensor(true).flatten()
    if p.numel() != t.numel():
        raise MetricInputError(f"{p.numel()} predicted labels but {t.numel()} true labels")
    if t.numel() == 0:
        raise MetricInputError("cannot score zero labels")
    return float((p == t).double().mean())


def _number(value: Any, feature: str, row: int) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError) as err:
        message = f"numeric feature {feature!r} in row {row} is not a number: {value!r}"
        raise MetricInputError(message) from err
    if not math.isfinite(number):
        raise MetricInputError(f"numeric feature {feature!r} in row {row} is not finite: {value!r}")
    return number


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None
