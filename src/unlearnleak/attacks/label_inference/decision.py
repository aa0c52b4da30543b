"""The decision rule: which class lost the most confidence on its probes after the deletion (docs/paper.md §4.2).

For each class c, the mean over the probes that θ predicts as c of the change of their confidence in c;
the most negative mean is the deleted class (Eq. 9–11 in the code's sign convention), the K most negative for
K deleted classes. The change is measured by ``statistic``:

- ``"probability"`` — p_c after − p_c before, the paper's Eq. 11;
- ``"log_odds"`` (default) — log(p/(1−p)) after − before. Probes sit at p_c ≥ 0.9995, where the softmax is
  saturated: a probability moves by ≈ p(1−p)·Δlogit, so the paper's mean is dominated by whichever probes
  are least saturated, not by how far the class moved. The log-odds change is that Δlogit margin itself.
  On the label-inference benchmark it raised the accuracy of the synthetic probes from 0.5–0.8 (nes) and
  0.33–0.67 (zoo) to 0.9–1.0 (benchmarks/README.md); both are reported there.

The "before" probabilities are the ones stored in the ProbeSet at generation time: after
the deletion a user can no longer query θ (pass ``requery_original=True`` when both models are at hand, e.g.
in an audit, to use fresh answers instead).

**Detected at a stated level.** Whether the candidate's drop stands out is a test at false-detection level
``level`` (5 %): the gap statistic T (the candidate's drop against the spread of the *other classes'*
drops) must exceed a threshold from a registered calibrator (calibration.py: ``auto``, the default —
``null_pairs``, measured on null pairs, where the shipped table covers the probes' generator and number of
classes, else ``gaussian``; ``student_t``; ``fixed``, no level; ``own_nulls``, the audited model's own null
pairs, passed as ``calibration=calibrate_on_own_model(...)`` by whoever holds θ: the test is then on each
class's change against the drift those pairs predict for it, the only calibration whose level held on held-out
architectures). The LabelGuess states the level, the threshold, the p-value and how the threshold was
obtained. When no candidate passes, the guess is "no detectable change" at that level. Identical models give
all-zero changes, which never pass.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Literal, get_args

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator

from unlearnleak.attacks.label_inference.calibration import (
    CALIBRATORS,
    Calibration,
    Gap,
    Test,
    calibrate,
    gap_statistic,
)
from unlearnleak.attacks.label_inference.probes import log_odds
from unlearnleak.attacks.label_inference.probeset import ProbeSet
from unlearnleak.attacks.label_inference.result import LabelGuess
from unlearnleak.errors import ConfigError
from unlearnleak.oracle import Oracle
from unlearnleak.registry import registered

Statistic = Literal["log_odds", "probability"]
STATISTICS: tuple[str, ...] = get_args(Statistic)
MIN_PER_CLASS = 3  # the fewest probes per class a verdict is given with (docs/label_inference.md)


class DecisionConfig(BaseModel):
    """Parameters of the decision rule."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    top_k: int = Field(1, ge=1)  # how many deleted classes to name
    level: float = Field(0.05, gt=0, lt=1)  # false-detection rate the verdict holds when no class was deleted
    calibration: str = "auto"  # registered calibrator (calibration.CALIBRATORS) giving the threshold
    test: Test = "student"  # center/spread of the other classes: mean/std, median/MAD ("robust"), "lower"
    z: float = Field(3.0, ge=0)  # the threshold on T for calibration="fixed" only
    atol: float = Field(1e-9, ge=0)  # changes this small are float rounding, not signal
    requery_original: bool = False  # re-query θ instead of reusing the stored answers
    statistic: Statistic = "log_odds"  # "probability": the paper's Eq. 11
    min_per_class: int = Field(MIN_PER_CLASS, ge=1)  # fewer probes for any class: no verdict (at most the
    # number the probe set asked per class, so that 2 probes per class asked and made gives a verdict)

    @field_validator("calibration")
    @classmethod
    def _known_calibration(cls, value: str) -> str:
        return registered(CALIBRATORS, value)


@dataclass(frozen=True)
class Decision:
    """The ranking, the gap statistic of the candidates, and the calibrated verdict on them; or, when some
    classes have fewer than ``min_per_class`` probes, none of these (``lacking`` names those classes)."""

    ranked: list[int]  # [] without a verdict
    means: torch.Tensor  # (K,) mean change per class (NaN without probes)
    counts: torch.Tensor  # (K,) probes per class
    significant: list[int]  # candidates with T > threshold
    gap: Gap | None  # None without a verdict
    calibration: Calibration | None
    p_value: float | None  # of the first candidate
    lacking: list[int]
    reason: str = ""  # why there is no verdict when no class lacks probes (too few classes for the test)

    @property
    def verdict(self) -> str:
        """"detected", "not_detected" or "no_verdict"."""
        return "no_verdict" if self.lacking or self.reason else "detected" if self.significant else "not_detected"


def confidence_changes(before: torch.Tensor, after: torch.Tensor, predicted: torch.Tensor,
                       statistic: str = "log_odds") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-probe and per-class confidence changes in the class θ predicted for each probe.

    Args:
        before, after: (m, K) probabilities from θ and θ_u.
        predicted: (m,) θ's predicted class of each probe.
        statistic: ``"log_odds"`` (log(p/(1−p)) after − before) or ``"probability"`` (p after − p before).

    Returns:
        per_probe (m,) changes; means (K,) their mean per class (NaN without probes); counts (K,) probes per
        class.
    """
    if statistic not in STATISTICS:
        raise ConfigError(f"unknown statistic {statistic!r}; use one of {STATISTICS}")
    idx = predicted.long()[:, None]
    if statistic == "log_odds":  # log_odds() is log((1 − p)/p), from the other classes' mass (exact near p = 1)
        per_probe = log_odds(before, predicted) - log_odds(after, predicted)  # (m,)
    else:
        per_probe = (after.double().gather(1, idx) - before.double().gather(1, idx)).squeeze(1)
    k = before.shape[1]
    counts = torch.bincount(predicted.long(), minlength=k)
    sums = torch.zeros(k, dtype=torch.float64).index_add_(0, predicted.long(), per_probe)
    means = torch.where(counts > 0, sums / counts.clamp(min=1), torch.full_like(sums, math.nan))
    return per_probe, means, counts


def rank_classes(means: torch.Tensor) -> list[int]:
    """Classes with probes by mean change, most negative first (ties by class id), then those without."""
    have = [c for c in range(means.numel()) if not math.isnan(float(means[c]))]
    have.sort(key=lambda c: (float(means[c]), c))
    return have + [c for c in range(means.numel()) if c not in set(have)]


def decide(before: torch.Tensor, after: torch.Tensor, predicted: torch.Tensor, config: DecisionConfig,
           generator: str = "", calibration: Calibration | None = None,
           target: torch.Tensor | None = None) -> Decision:
    """The ranking and the calibrated test, on raw probabilities (no oracles involved).

    Args:
        predicted: (m,) θ's predicted class of each probe: probes are grouped by it (docs/paper.md §4.2).
        generator: the probes' generator (the ``null_pairs`` calibration is measured per generator).
        calibration: a threshold obtained elsewhere, e.g. by :func:`calibrate_on_nulls` on your own null
            pairs (made with the same test, statistic and top_k); default: ``config.calibration``'s.
        target: (m,) the class each probe was made for; only probes θ predicts as their target are used
            (a probe made for c that θ predicts as d says nothing about c, and little about d).

    Returns:
        The decision; without a verdict (``lacking`` not empty) when a class has fewer than
        ``config.min_per_class`` probes, or (``reason``) when the model has fewer than ``top_k`` + 2 classes:
        then nothing is ranked and no threshold is computed.
    """
    if target is not None:
        keep = predicted == target
        before, after, predicted = before[keep], after[keep], predicted[keep]
    _, means, counts = confidence_changes(before, after, predicted, config.statistic)
    lacking = [c for c in range(counts.numel()) if int(counts[c]) < config.min_per_class]
    if lacking:
        return Decision([], means, counts, [], None, None, None, lacking)
    if counts.numel() - config.top_k < 2:  # gap_statistic: T = 0 without two other classes to spread
        return Decision([], means, counts, [], None, None, None, [], reason=(
            f"the test weighs the drop of {config.top_k} candidate class{'es' if config.top_k > 1 else ''} "
            f"against the spread of at least two other classes, so it needs at least {config.top_k + 2} classes; "
            f"this model has {counts.numel()}: compare the classes' changes yourself"))
    tested = calibration.standardize(means) if calibration is not None else means  # per-model units, if any
    ranked = rank_classes(tested)
    candidates = ranked[:config.top_k]
    gap = gap_statistic(tested, counts, candidates, config.test, config.atol if tested is means else 0.0)
    if calibration is None:
        calibration = calibrate(config.calibration, level=config.level, gap=gap, test=config.test,
                                statistic=config.statistic, generator=generator, top_k=config.top_k, z=config.z)
    significant = [c for c, t in zip(candidates, gap.values, strict=True) if t > calibration.threshold
                   and (tested is means or float(means[c]) < -config.atol)]  # standardized: c must also drop
    p_value = calibration.p_value(gap.values[0]) if gap.values else None
    return Decision(ranked, means, counts, significant, gap, calibration, p_value, [])


def infer_label(original: Oracle, unlearned: Oracle, probes: ProbeSet, top_k: int = 1, *,
                config: DecisionConfig | None = None, calibration: Calibration | None = None) -> LabelGuess:
    """Infer the deleted class(es) from black-box answers of θ (stored) and θ_u (queried now).

    Args:
        original: the oracle of θ the probes were generated against; queried only with
            ``config.requery_original`` (a user cannot query θ after the deletion).
        unlearned: the oracle of θ_u; queried once per probe.
        probes: probes made against ``original`` before the deletion, with its answers.
        top_k: how many deleted classes to name (overridden by ``config.top_k`` when a config is given).
        calibration: a threshold from your own null pairs (:func:`calibrate_on_nulls`) instead of
            ``config.calibration``'s.

    Returns:
        The guess, with the per-class changes and the queries spent on each oracle.
    """
    config = config or DecisionConfig(top_k=top_k)
    for name, oracle in (("original", original), ("unlearned", unlearned)):
        if oracle.num_classes != probes.num_classes or oracle.input_shape != probes.input_shape:
            raise ConfigError(f"the {name} oracle answers {oracle.num_classes} classes for inputs "
                              f"{oracle.input_shape}, but the probes are {probes.input_shape} with "
                              f"{probes.num_classes} classes")
    if len(probes) == 0:
        raise ConfigError("the probe set is empty; generate probes before inferring a label")
    before = probes.original_proba
    requeried = 0
    if config.requery_original:
        start = original.queries
        before = original.predict_proba(probes.x)
        requeried = original.queries - start
    start = unlearned.queries
    after = unlearned.predict_proba(probes.x)
    spent_unlearned = unlearned.queries - start
    minimum = probes.verdict_minimum(config.min_per_class)  # at most what was asked per class
    if minimum < config.min_per_class:
        config = config.model_copy(update={"min_per_class": minimum})
    d = decide(before, after, before.argmax(dim=1), config, probes.generator, calibration, target=probes.target)
    no_verdict = LabelGuess(
        ranked=(), changes=tuple(float(v) for v in d.means), probe_counts=tuple(int(v) for v in d.counts),
        top_k=config.top_k, predicted=(), significant=(), detected=False, center=0.0, scale=0.0, z=math.inf,
        queries_original=probes.total_queries + requeried, queries_unlearned=spent_unlearned,
        generator=probes.generator, statistic=config.statistic, level=config.level, p_value=None, gap=0.0,
        calibration=config.calibration, calibration_source="", test=config.test, verdict="no_verdict",
        reason=_lacking_reason(probes, d.lacking) if d.lacking else d.reason, lacking=tuple(d.lacking),
        min_per_class=config.min_per_class)
    if d.gap is None or d.calibration is None:  # classes lack probes, or too few classes: nothing is tested
        return no_verdict
    detected = bool(d.significant)
    cal = d.calibration
    return replace(
        no_verdict, ranked=tuple(d.ranked), predicted=tuple(d.ranked[:config.top_k]) if detected else (),
        significant=tuple(d.significant), detected=detected, center=d.gap.center, scale=d.gap.scale,
        z=cal.threshold, level=cal.level, p_value=d.p_value, gap=d.gap.values[0] if d.gap.values else 0.0,
        calibration=cal.method, calibration_source=cal.source, verdict="detected" if detected else "not_detected")


def _lacking_reason(probes: ProbeSet, lacking: list[int]) -> str:
    """Why the lacking classes have too few probes: the generator's own account where it gave one."""
    clauses = [part.strip() for part in probes.notes.removeprefix("no probe for ").split(";")
               if any(part.strip().startswith(f"class {c}:") for c in lacking)]
    if clauses:
        return "; ".join(clauses)
    counts, made = probes.class_counts(), torch.bincount(probes.target, minlength=probes.num_classes).tolist()
    return "probes θ predicts as their class / probes made, per class: " + ", ".join(
        f"{c}: {counts[c]}/{made[c]}" for c in lacking)
