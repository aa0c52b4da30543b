"""LabelGuess: what the label-inference attack concludes, with the evidence and the queries it cost."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class LabelGuess:
    """The classes ranked by confidence change, the top-K guess, and whether any change stands out.

    Attributes:
        ranked: every class with at least one probe, most negative mean change first (PAPER.md §4.2, Eq. 11);
            classes without probes follow, in class order.
        changes: per class c, the mean over probes predicted as c (by θ) of the change of their confidence
            in c, measured by ``statistic`` (log-odds or probability, see decision.py); NaN for a class no
            probe was predicted as.
        probe_counts: per class, the number of probes predicted as that class by the original model.
        top_k: how many deleted classes were asked for.
        predicted: the top-K guess, ``ranked[:top_k]``, or () when no change is detectable.
        significant: the classes among ``ranked[:top_k]`` whose gap statistic exceeds the calibrated threshold.
        detected: False means "no detectable change" at ``level``: no candidate's drop stands out from the
            other classes' drops by more than the threshold (calibration.py).
        center, scale, z: the other classes' center, the unit of the gap statistic and the threshold on it:
            a class is detected when its change lies below ``center − z·scale``.
        queries_original: queries spent on the original model (probe generation plus any re-queries).
        queries_unlearned: queries spent on the unlearned model (one per probe).
        generator: the probe generator's name.
        statistic: how a change is measured: "log_odds" (default) or "probability" (the paper's Eq. 11).
        level: the false-detection rate the verdict holds when no class was deleted (None: not calibrated).
        p_value: the test's p-value for the first candidate (None for an uncalibrated threshold).
        gap: the first candidate's gap statistic T.
        calibration, calibration_source: the calibrator's name and how the threshold ``z`` was obtained.
        test: the gap statistic's center/spread ("student": mean/std, "robust": median/MAD).
    """

    ranked: tuple[int, ...]
    changes: tuple[float, ...]
    probe_counts: tuple[int, ...]
    top_k: int
    predicted: tuple[int, ...]
    significant: tuple[int, ...]
    detected: bool
    center: float
    scale: float
    z: float
    queries_original: int
    queries_unlearned: int
    generator: str
    statistic: str = "log_odds"
    level: float | None = None
    p_value: float | None = None
    gap: float = 0.0
    calibration: str = "fixed"
    calibration_source: str = ""
    test: str = "student"

    @property
    def label(self) -> int | None:
        """The single most likely deleted class, or None when no change is detectable."""
        return self.predicted[0] if self.predicted else None

    @property
    def best(self) -> int:
        """The most negative class regardless of detectability (the paper's argmin, Eq. 11)."""
        return self.ranked[0]

    def change(self, c: int) -> float:
        """The mean confidence change of class ``c``."""
        return self.changes[c]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able summary (NaN changes become None)."""
        return {
            "ranked": list(self.ranked),
            "changes": [None if math.isnan(v) else v for v in self.changes],
            "probe_counts": list(self.probe_counts),
            "top_k": self.top_k,
            "predicted": list(self.predicted),
            "significant": list(self.significant),
            "detected": self.detected,
            "center": self.center,
            "scale": self.scale,
            "z": self.z,
            "queries_original": self.queries_original,
            "queries_unlearned": self.queries_unlearned,
            "generator": self.generator,
            "statistic": self.statistic,
            "level": self.level,
            "p_value": self.p_value,
            "gap": None if math.isinf(self.gap) else self.gap,
            "calibration": self.calibration,
            "calibration_source": self.calibration_source,
            "test": self.test,
        }

    def summary(self, class_names: tuple[str, ...] | list[str] | None = None) -> str:
        """One human-readable line: the guess and the strongest changes."""
        def name(c: int) -> str:
            return f"{c} ({class_names[c]})" if class_names is not None and c < len(class_names) else str(c)

        at = "" if self.level is None else f" at level {self.level:g}"
        p = "" if self.p_value is None else f", p = {self.p_value:.2g}"
        head = (f"deleted class(es): {', '.join(name(c) for c in self.predicted)} (detected{at}{p})"
                if self.detected else f"no detectable change{at}{p}")
        top = ", ".join(f"{name(c)}: {self.changes[c]:+.3g}" for c in self.ranked[:max(3, self.top_k)])
        return (f"{head} — largest drops {top}; queries: original {self.queries_original}, "
                f"unlearned {self.queries_unlearned}")
