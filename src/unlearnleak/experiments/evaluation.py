"""Typed evaluation results of both attacks, with the baselines that give their numbers a meaning.

Every metric of an attack is reported beside what an attacker gets *without* the pair: for images the
dataset's mean colour and (references that need the truth) the image's own mean colour and its 4×4 thumbnail
(``unlearnleak.metrics.baselines``), the feature-mean row for tabular rows, chance for labels. ``result()``
gives the row's typed section (``unlearnleak.rows``), ``to_row()`` its JSON-able dict.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from unlearnleak.attacks.feature_recovery import Reconstruction
from unlearnleak.attacks.feature_recovery.config import FeatureRecoveryConfig
from unlearnleak.attacks.label_inference import LabelGuess, ProbeSet
from unlearnleak.attacks.label_inference.config import LabelInferenceConfig
from unlearnleak.metrics import LPIPS, baseline_images, feature_errors, image_metrics
from unlearnleak.rows import FeatureRecoveryResult, LabelInferenceResult

IMAGE_METRICS = ("psnr", "ssim", "lpips")
TABULAR_METRICS = ("mse", "max_abs_error", "mean_abs_error", "mean_categorical_accuracy", "mean_relative_error")


def _mean(values: Sequence[Any]) -> float | None:
    present = [float(v) for v in values if v is not None]
    return sum(present) / len(present) if present else None


def image_baselines(forget_x: torch.Tensor, mean: Sequence[float], lpips: LPIPS | None) -> dict[str, Any]:
    """Mean PSNR/SSIM/LPIPS of each baseline (``unlearnleak.metrics.baselines``): the dataset's mean colour, the
    true image's own mean colour and its 4×4 thumbnail."""
    out = {}
    for name, images in baseline_images(forget_x, mean).items():
        rows = image_metrics(images, forget_x, lpips=lpips)
        out[name] = {m: _mean([r[m] for r in rows]) for m in IMAGE_METRICS}
    return out


def tabular_errors(rows: torch.Tensor, truth: torch.Tensor, transform: Any = None) -> dict[str, float | None]:
    """Mean errors of recovered rows against the true ones (paired by position), in model-input units and,
    with the dataset's transform, in original units (``unlearnleak.metrics.feature_errors``)."""
    diff = rows.detach().cpu().double() - truth.detach().cpu().double()  # (k, D)
    out: dict[str, float | None] = {
        "mse": float(diff.pow(2).mean(dim=1).mean()),
        "max_abs_error": float(diff.abs().amax(dim=1).mean()),
        "mean_abs_error": None, "mean_categorical_accuracy": None, "mean_relative_error": None,
    }
    if transform is not None:
        errors = feature_errors(transform.inverse(rows.float()), transform.inverse(truth.float()),
                                numeric=transform.numeric_columns, categorical=transform.categorical_columns)
        out.update({key: errors[key] for key in ("mean_abs_error", "mean_categorical_accuracy",
                                                 "mean_relative_error")})
    return out


def tabular_baselines(truth: torch.Tensor, feature_mean: torch.Tensor | None,
                      transform: Any = None) -> dict[str, Any] | None:
    """The feature-mean row (of data the attacker may hold) scored like a reconstruction; None without one."""
    if feature_mean is None:
        return None
    guess = feature_mean.detach().cpu().float().reshape(1, -1).expand_as(truth)
    return {"feature_mean": tabular_errors(guess, truth, transform)}


@dataclass(frozen=True)
class FeatureRecoveryEvaluation:
    """The server attack's reconstruction, scored against D_u (when known), with its baselines.

    Attributes:
        scores: ``evaluate_reconstruction``'s result (per-sample metrics, means, matching), None without D_u.
        baselines: image: ``dataset_mean_colour``, ``own_mean_colour`` and ``thumbnail_4x4``; tabular:
            ``feature_mean`` (same keys as the metrics); None without D_u.
        metrics: the image metrics asked for (others are reported as None).
        artifacts: files written for it, relative to the folder they were written into.
    """

    spec: FeatureRecoveryConfig
    reconstruction: Reconstruction
    scores: dict[str, Any] | None
    baselines: dict[str, Any] | None
    metrics: tuple[str, ...] = IMAGE_METRICS
    tabular: dict[str, float | None] | None = None  # tabular rows: tabular_errors of the matched rows
    artifacts: Mapping[str, str] = field(default_factory=dict)
    attacked: str | None = None  # what the server attacked when θ is an ensemble (SISA: the member that moved)
    decoder_scores: dict[str, Any] | None = None  # the learned prior's decoded images alone, scored (or None)

    @property
    def image(self) -> bool:
        return self.reconstruction.kind == "image"

    @property
    def target_cosine(self) -> float | None:
        """cos(∇ of the reconstruction, ∇*) of the kept restart (1 − its gradient-matching cost)."""
        cost = self.reconstruction.best_cost
        return None if math.isnan(cost) else 1.0 - cost

    def metric_means(self) -> dict[str, Any] | None:
        """The headline metrics, means over the k samples (None without ground truth)."""
        if self.scores is None:
            return None
        mean = self.scores["mean"]
        if self.image:
            out: dict[str, Any] = {m: (mean.get(m) if m in self.metrics else None) for m in IMAGE_METRICS}
        else:
            out = dict(self.tabular or {})
        out["label_accuracy"] = self.scores["label_accuracy"]
        return out

    def decoder_alone(self) -> dict[str, Any] | None:
        """The decoded images alone (a feature-inversion attack), scored like the reconstruction; None when
        the learned prior was off or there is no ground truth."""
        if self.decoder_scores is None:
            return None
        mean = self.decoder_scores["mean"]
        return {m: (mean.get(m) if m in self.metrics else None) for m in IMAGE_METRICS}

    def samples(self) -> list[dict[str, Any]]:
        """Per ground-truth sample: its metrics and the true and recovered labels."""
        if self.scores is None:
            return [{"index": i, "label": int(v)} for i, v in enumerate(self.reconstruction.labels.tolist())]
        keys = [m for m in IMAGE_METRICS if m in self.metrics] if self.image else ["mse", "max_abs_error"]
        return [{"index": s["index"], **{k: s.get(k) for k in keys}, "true_label": s["true_label"],
                 "label": s["label"]} for s in self.scores["samples"]]

    def to_row(self) -> dict[str, Any]:
        """The row's ``feature_recovery`` entry, as JSON-able dict (checked by the row model)."""
        return self.result().to_dict()

    def result(self) -> FeatureRecoveryResult:
        """The row's ``feature_recovery`` entry."""
        rec = self.reconstruction
        return FeatureRecoveryResult.model_validate({
                "preset": rec.preset, "mode": rec.target_mode, "method": rec.method, "iterations": rec.iterations,
                "seconds": rec.seconds, "target_cosine": self.target_cosine, "image": self.image,
                "label_source": rec.label_source, "scored": self.scores is not None,
                "metrics": self.metric_means(), "samples": self.samples(),
                "baselines": self.baselines, "artifacts": dict(self.artifacts),
                "learned_prior": rec.config.get("learned_prior"), "decoder_alone": self.decoder_alone(),
                **({} if self.attacked is None else {"attacked": self.attacked})})


@dataclass(frozen=True)
class LabelInferenceEvaluation:
    """The user attack's guess, scored against the deleted classes (when known), with chance beside it.

    ``correct``: the paper's argmin rule names a deleted class; ``detected``: the calibrated verdict says a
    change stands out at ``spec.level``; ``detected_correct``: both, and the detected class was deleted.
    ``deleted_rank``: the best place of a deleted class in the ranking (1 = first). All four are None when
    the guess has no verdict (classes lacked probes: nothing was ranked).
    ``chance``: the probability that a uniformly random class is one of the deleted ones (1/C for a class).
    """

    spec: LabelInferenceConfig
    guess: LabelGuess
    probes: ProbeSet
    deleted: tuple[int, ...] | None
    num_classes: int
    artifacts: Mapping[str, str] = field(default_factory=dict)
    # how the threshold was made beyond its name: own null pairs' cost (pairs, public_rows, seconds, cached,
    # computed_seconds), or a note saying why the command did not calibrate on own null pairs
    calibration_info: Mapping[str, Any] = field(default_factory=dict)

    @property
    def correct(self) -> bool | None:
        if not self.deleted or not self.guess.has_verdict:
            return None
        return self.guess.best in self.deleted

    @property
    def detected(self) -> bool:
        return self.guess.detected

    @property
    def detected_correct(self) -> bool | None:
        if not self.deleted or not self.guess.has_verdict:
            return None
        return self.guess.detected and self.guess.label in self.deleted

    @property
    def deleted_rank(self) -> int | None:
        """The best rank of a deleted class (1 = the largest drop); None without D_u's labels or a verdict."""
        ranks = [r for r in (self.guess.rank(c) for c in self.deleted or ()) if r is not None]
        return min(ranks) if ranks else None

    @property
    def chance(self) -> float:
        return (len(set(self.deleted)) if self.deleted else 1) / self.num_classes

    def to_row(self) -> dict[str, Any]:
        """The row's ``label_inference`` entry, as JSON-able dict (checked by the row model)."""
        return self.result().to_dict()

    def result(self) -> LabelInferenceResult:
        """The row's ``label_inference`` entry (NaN changes of classes without probes become None)."""
        g = self.guess
        return LabelInferenceResult.model_validate({
                "generator": g.generator, "per_class": self.spec.per_class, "statistic": g.statistic,
                "deleted": None if self.deleted is None else list(self.deleted), "best": g.best,
                "ranked": list(g.ranked), "changes": [None if math.isnan(v) else v for v in g.changes],
                "correct": self.correct, "detected": g.detected, "detected_correct": self.detected_correct,
                "verdict": g.verdict, "reason": g.reason, "lacking": list(g.lacking),
                "min_per_class": g.min_per_class, "deleted_rank": self.deleted_rank,
                "predicted": list(g.predicted), "level": g.level, "p_value": g.p_value, "chance": self.chance,
                "calibration": g.calibration, "calibration_info": dict(self.calibration_info) or None,
                "probes": len(self.probes),
                "probe_counts": list(g.probe_counts),
                "queries_original": g.queries_original, "queries_unlearned": g.queries_unlearned,
                "artifacts": dict(self.artifacts)})
