"""Means with 95 % t-intervals, so every reported number says how sure it is and over how many values."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

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


def fmt(value: float | None, digits: int = 3) -> str:
    """A number with ``digits`` significant digits (no scientific notation for ordinary magnitudes)."""
    if value is None:
        return "n/a"
    if not math.isfinite(value):
        return str(value)
    return f"{value:.{digits}g}" if abs(value) >= 1e-3 or value == 0 else f"{value:.2e}"


def interval(values: Iterable[float | None], level: float = LEVEL,
             bounds: tuple[float, float] | None = None) -> Interval:
    """The mean of the finite values and its t-interval at ``level`` (None/NaN values are left out).

    ``bounds`` clips the interval to a metric's range (an accuracy's t-interval can otherwise leave [0, 1]).
    """
    arr = np.array([float(v) for v in values if v is not None and math.isfinite(float(v))], dtype=np.float64)
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
    """The range of a metric known by name (accuracies and rates in [0, 1], SSIM in [-1, 1], LPIPS ≥ 0)."""
    name = metric.lower()
    if any(word in name for word in ("accuracy", "correct", "detected", "chance")):
        return (0.0, 1.0)
    if name.endswith("ssim"):
        return (-1.0, 1.0)
    if name.endswith("lpips"):
        return (0.0, math.inf)
    return None


def metric_interval(metric: str, values: Iterable[float | None]) -> Interval:
    """:func:`interval` clipped to the metric's range (:func:`bounds_for`)."""
    return interval(values, bounds=bounds_for(metric))
