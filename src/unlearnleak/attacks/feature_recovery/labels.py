"""Labels of the unlearned samples read off the target gradient ∇* (iDLG-style, docs/paper.md §2.1).

For softmax cross-entropy the output-layer bias gradient of one sample is ``p − onehot(y)``: negative only
at the true class. ∇* is a positive multiple of the summed gradient of D_u (see ``target_gradient``), so
its output-bias entries are ``s·(P_c − n_c)`` with ``P_c = Σ_i p_ic`` and ``n_c`` the count of class c in
D_u. The classes with a negative entry are the unlearned classes; for k = 1 the most negative entry is the
label (exact, whatever the model). Without an output bias the row sums of the output weight gradient,
``s·Σ_i (p_ic − y_ic)·Σ_j h_ij``, carry the same signs when the penultimate features are non-negative (ReLU).
For k = 1 and K ≥ 3 they carry them up to one common sign whatever the features (tanh, GELU): the label's entry
``1 − p_y = Σ_{c≠y} p_c`` is the largest in magnitude, so the scores are turned to make it negative when a
positive entry leads by more than 1 % (a near-tie, or K = 2 where the two entries tie, keeps the non-negative
reading).

Counts for k > 1: the positive entries of classes absent from D_u estimate the probability mass every
class receives from other classes' samples (``s·P̄``); for a present class ``ḡ⁺ − g_c ≈ s·n_c·(1 − p̄)``,
so the k samples are shared among the negative classes in proportion to ``ḡ⁺ − g_c`` (largest remainder,
at least one each). This is exact for an untrained model with uniform predictions and a good estimate when
the model's confidence is similar across the unlearned samples.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from unlearnleak.attacks.closed_forms import output_layer  # re-exported: defined once there
from unlearnleak.attacks.feature_recovery.target_gradient import TargetGradient
from unlearnleak.errors import ConfigError


@dataclass(frozen=True)
class LabelEstimate:
    """Inferred labels (sorted, with repeats for k > 1) and the per-class scores they came from."""

    labels: torch.Tensor  # (k,) int64
    scores: torch.Tensor  # (C,) output-layer gradient entries of ∇*, scaled to max |·| = 1
    source: Literal["output_bias", "output_weight_rows"]


def label_scores(model: nn.Module, target: TargetGradient, num_classes: int) -> tuple[torch.Tensor, str]:
    """The per-class entries of ∇* at the output layer (bias, else weight row sums), float64 (C,)."""
    name, layer = output_layer(model, num_classes)
    prefix = f"{name}." if name else ""
    if layer.bias is not None and f"{prefix}bias" in target.names:
        return target[f"{prefix}bias"].double(), "output_bias"
    if f"{prefix}weight" in target.names:
        return target[f"{prefix}weight"].double().sum(dim=1), "output_weight_rows"
    raise ConfigError(f"cannot infer labels from the gradient: the output layer {name!r} has no trainable "
                      f"parameters of its own (frozen, or tied to another layer's); pass the labels explicitly "
                      f"(audit --labels)")


# Flip the bias-free scores only when the positive entry clearly leads: the label's entry exceeds the next by
# the probability mass of the remaining classes, which a confidently misclassified sample can make smaller than
# the float noise of ∇*; a near-tie keeps the non-negative-features reading (ReLU), the common case.
FLIP_MARGIN = 1.01


def infer_labels(model: nn.Module, target: TargetGradient, k: int, num_classes: int) -> LabelEstimate:
    """The k labels of D_u (a multiset, sorted) from the output-layer entries of ∇*."""
    if k < 1:
        raise ConfigError(f"k must be at least 1, got {k}")
    scores, source = label_scores(model, target, num_classes)
    if source == "output_weight_rows" and k == 1 and num_classes >= 3 \
            and float(scores.max()) > FLIP_MARGIN * float(-scores.min()):
        scores = -scores  # the features summed below 0 (tanh, GELU): the largest entry, 1 − p_y, is the label's
    counts = estimate_counts(scores, k)
    labels = torch.repeat_interleave(torch.arange(num_classes), counts)
    scale = scores.abs().max().clamp_min(torch.finfo(torch.float64).tiny)
    return LabelEstimate(labels=labels, scores=(scores / scale).float(), source=source)  # type: ignore[arg-type]


def estimate_counts(scores: torch.Tensor, k: int) -> torch.Tensor:
    """How many of the k samples belong to each class, from per-class scores ``s·(P_c − n_c)``; (C,) int64."""
    c = scores.numel()
    counts = torch.zeros(c, dtype=torch.long)
    negative = torch.nonzero(scores < 0).flatten()
    if negative.numel() == 0:  # degenerate (e.g. an all-zero output layer): fall back to the smallest
        negative = scores.argsort()[:1]
    if negative.numel() >= k:
        counts[scores.argsort()[:k]] = 1
        return counts
    positive = scores[scores >= 0]
    baseline = positive.mean() if positive.numel() else scores.new_zeros(())
    weight = (baseline - scores[negative]).clamp_min(0)
    if float(weight.sum()) <= 0:
        weight = torch.ones_like(weight)
    share = weight / weight.sum() * k  # the ideal (fractional) counts
    alloc = torch.floor(share).long().clamp_min(1)
    while int(alloc.sum()) < k:  # largest remainder first
        alloc[int((share - alloc).argmax())] += 1
    while int(alloc.sum()) > k:  # too many because of the minimum of one: take from the most over-served
        over = torch.where(alloc > 1, alloc - share, torch.full_like(share, -torch.inf))
        alloc[int(over.argmax())] -= 1
    counts[negative] = alloc
    return counts
