"""Means with 95 % t-intervals, so every reported number says how sure it is and over how many values."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

LEVEL = 0.95


@dataclass(frozen=True)
class Interval:
    """Mean of ``n`` values and its two-sided t-interval (None when n < 2: no spread to estimate)."""

    mean: float | None
    low: float | None
    high: float | None
    n: int

    def text(self, digits: int = 3) -> str:
        """``"18.2 [17.1, 19.3] (n=12)"`` — or ``"n/a"`` when nothing was measured."""
        if self.mean is None:
            return "n/a"
        if self.low is None or self.high is None:
            return f"{fmt(self.mean, digits)} (n={self.n})"
        return f"{fmt(self.mean, digits)} [{fmt(self.low, digits)}, {fmt(self.high, digits)}] (n={self.n})"


def as_number(value: Any) -> float | None:
    """A row's number as a float: ints, floats, and the strings "nan"/"inf"/"-inf" that strict JSON files hold
    for non-finite values (unlearnleak.storage.to_json); anything else (None, text, bools) is None."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str) and value.strip().lower() in ("nan", "inf", "-inf", "+inf"):
        return float(value)
    return None


def fmt(value: Any, digits: int = 3) -> str:
    """A number with ``digits`` significant digits (no scientific notation for ordinary magnitudes)."""
    number = as_number(value)
    if number is None:
        return "n/a" if value is None else str(value)
    if not math.isfinite(number):
        return str(number)
    return f"{number:.{digits}g}" if abs(number) >= 1e-3 or number == 0 else f"{number:.2e}"


def interval(values: Iterable[Any], level: float = LEVEL,
             bounds: tuple[float, float] | None = None) -> Interval:
    """The mean of the finite values and its t-interval at ``level`` (None/NaN values are left out).

    ``bounds`` clips the interval to a metric's range (an accuracy's t-interval can otherwise leave [0, 1]).
    """
    numbers = [float(v) if isinstance(v, bool) else as_number(v) for v in values]
    arr = np.array([v for v in numbers if v is not None and math.isfinite(v)], dtype=np.float64)
    n = int(arr.size)
    if n == 0:
        return Interval(None, None, None, 0)
    mean = float(arr.mean())
    if n < 2:
        return Interval(mean, None, None, 1)
    half = float(stats.t.ppf(0.5 + level / 2, n - 1) * arr.std(ddof=1) / math.sqrt(n))
    low, high = mean - half, mean + half
    if bounds is not None:
        low, high = max(low, bounds[0]), min(high, bounds[1])
    return Interval(mean, low, high, n)


def bounds_for(metric: str) -> tuple[float, float] | None:
    """The range of a metric known by name (accuracies and rates in [0, 1], SSIM in [-1, 1], LPIPS and the
    error metrics — MSE, absolute and relative errors — ≥ 0)."""
    name = metric.lower()
    if any(word in name for word in ("accuracy", "correct", "detected", "chance")):
        return (0.0, 1.0)
    if name.endswith("ssim"):
        return (-1.0, 1.0)
    if name.endswith(("lpips", "mse", "_error")):
        return (0.0, math.inf)
    return None


def metric_interval(metric: str, values: Iterable[Any]) -> Interval:
    """:func:`interval` clipped to the metric's range (:func:`bounds_for`)."""
    return interval(values, bounds=bounds_for(metric))
