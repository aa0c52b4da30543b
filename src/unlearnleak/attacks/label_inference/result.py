"""LabelGuess: what the label-inference attack concludes, with the evidence and the queries it cost."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from unlearnleak.verdicts import label_verdict

Verdict = Literal["detected", "not_detected", "no_verdict"]


@dataclass(frozen=True)
class LabelGuess:
    """The classes ranked by confidence change, the top-K guess, and whether any change stands out.

    The verdict has three states (``verdict``): ``"detected"`` (a class's drop stands out at ``level``),
    ``"not_detected"`` (no drop stands out; the ranking is still given) and ``"no_verdict"`` (some classes
    have fewer than ``min_per_class`` probes, listed in ``lacking``: then nothing is ranked or tested, and
    ``reason`` says why — a ranking among the classes that happen to have probes is not a ranking).

    Attributes:
        ranked: every class, most negative mean change first (docs/paper.md §4.2, Eq. 11); () without a verdict.
        changes: per class c, the mean over c's probes (made for c, predicted as c by θ) of the change of their
            confidence in c, measured by ``statistic`` (log-odds or probability, see decision.py); NaN for a
            class without probes.
        probe_counts: per class, the probes made for it that the original model predicts as it (the ones the
            decision uses).
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
        verdict: "detected", "not_detected" or "no_verdict".
        reason: one line: why there is no verdict (empty otherwise).
        lacking: the classes with fewer than ``min_per_class`` probes (no verdict when not empty).
        min_per_class: the fewest probes θ predicts as a class that the test needs for every class.
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
    verdict: Verdict = "not_detected"
    reason: str = ""
    lacking: tuple[int, ...] = ()
    min_per_class: int = 1

    @property
    def label(self) -> int | None:
        """The single most likely deleted class, or None when no change is detectable."""
        return self.predicted[0] if self.predicted else None

    @property
    def best(self) -> int | None:
        """The most negative class regardless of detectability (the paper's argmin, Eq. 11); None without a
        verdict (some classes lack probes, so there is no ranking)."""
        return self.ranked[0] if self.ranked else None

    @property
    def has_verdict(self) -> bool:
        """False when classes lack probes or the model has too few classes: nothing is ranked or tested."""
        return self.verdict != "no_verdict"

    def rank(self, c: int) -> int | None:
        """Class ``c``'s place in the ranking (1 = largest drop), None without a verdict."""
        return self.ranked.index(c) + 1 if c in self.ranked else None

    def change(self, c: int) -> float:
        """The mean confidence change of class ``c``."""
        return self.changes[c]

    @property
    def threshold(self) -> float | None:
        """The detection level on the change scale, ``center − z·scale`` (None without a finite one)."""
        value = self.center - self.z * self.scale if self.has_verdict else math.nan
        return value if math.isfinite(value) else None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able summary (NaN or infinite numbers become None)."""
        return {
            "ranked": list(self.ranked),
            "changes": [None if math.isnan(v) else v for v in self.changes],
            "probe_counts": list(self.probe_counts),
            "top_k": self.top_k,
            "predicted": list(self.predicted),
            "significant": list(self.significant),
            "detected": self.detected,
            "center": _finite(self.center),
            "scale": _finite(self.scale),
            "z": _finite(self.z),
            "queries_original": self.queries_original,
            "queries_unlearned": self.queries_unlearned,
            "generator": self.generator,
            "statistic": self.statistic,
            "level": self.level,
            "p_value": self.p_value,
            "gap": _finite(self.gap),
            "calibration": self.calibration,
            "calibration_source": self.calibration_source,
            "test": self.test,
            "verdict": self.verdict,
            "reason": self.reason,
            "lacking": list(self.lacking),
            "min_per_class": self.min_per_class,
            "threshold": self.threshold,
        }

    def summary(self, class_names: Sequence[str] | None = None) -> str:
        """One human-readable line: the guess and the strongest changes (or why there is no verdict)."""
        def name(c: int) -> str:
            return f"{c} ({class_names[c]})" if class_names is not None and c < len(class_names) else str(c)

        if not self.has_verdict:
            return self.no_verdict_line(class_names)
        at = "" if self.level is None else f" at level {self.level:g}"
        p = "" if self.p_value is None else f", p = {self.p_value:.2g}"
        head = (f"deleted class(es): {', '.join(name(c) for c in self.predicted)} (detected{at}{p})"
                if self.detected else f"no detectable change{at}{p}")
        top = ", ".join(f"{name(c)}: {self.changes[c]:+.3g}" for c in self.ranked[:max(3, self.top_k)])
        return (f"{head} — largest drops {top}; queries: original {self.queries_original}, "
                f"unlearned {self.queries_unlearned}")

    def no_verdict_line(self, class_names: Sequence[str] | None = None) -> str:
        """The shared label phrase (unlearnleak.verdicts) for a guess without a verdict: "no verdict on the
        label: class 4 (e) has fewer than 3 probes: why; nothing was ranked or tested; queries …"."""
        return label_verdict(self.to_dict(), class_names).sentence


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None
