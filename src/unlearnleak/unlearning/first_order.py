"""First-order closed-form unlearning (Warnecke et al., NDSS 2023): θ_u = θ − τ(∇ℓ(Z̃; θ) − ∇ℓ(Z; θ)).

Z are the points to unlearn and Z̃ their corrected versions. Unlearning a sample means removing it, so Z̃ is
empty and ∇ℓ(Z̃) = 0: the update is θ_u = θ + τ·∇ℓ(D_u; θ), with ℓ the SUMMED loss over D_u as in the paper
(``reduction="mean"`` divides by |D_u|). ``replacement="random_label"`` instead uses Z̃ = D_u with other labels.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

from unlearnleak.errors import ConfigError
from unlearnleak.unlearning.base import (
    StateDict,
    UnlearningContext,
    parse_params,
    register_unlearning,
    state_of,
    trainable,
)
from unlearnleak.unlearning.gradients import Vector, loss_gradient


class FirstOrderParams(BaseModel):
    """τ, how ℓ is reduced over D_u, and what Z̃ is (nothing, or D_u with random other labels)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tau: float = Field(1e-3, gt=0)
    reduction: Literal["sum", "mean"] = "sum"
    replacement: Literal["none", "random_label"] = "none"


def relabel(y: torch.Tensor, num_classes: int, generator: torch.Generator) -> torch.Tensor:
    """Each label replaced by a uniformly drawn OTHER class."""
    shift = torch.randint(1, num_classes, y.shape, generator=generator)
    return (y.cpu() + shift) % num_classes


def gradient_difference(ctx: UnlearningContext, model: torch.nn.Module, params: FirstOrderParams) -> Vector:
    """∇ℓ(Z̃; θ) − ∇ℓ(Z; θ) for Z = D_u (the quantity both closed-form updates are built on)."""
    x, y = ctx.forget_x, ctx.forget_y
    if x.shape[0] == 0:
        raise ConfigError("closed-form unlearning needs a non-empty forget set")
    forget = loss_gradient(model, x, y, reduction=params.reduction, meter=ctx.meter)
    if params.replacement == "none":
        return [-g for g in forget]
    y_new = relabel(y, ctx.spec.num_classes, torch.Generator().manual_seed(ctx.seed))
    replaced = loss_gradient(model, x, y_new, reduction=params.reduction, meter=ctx.meter)
    return [r - g for r, g in zip(replaced, forget, strict=True)]


def apply_update(model: torch.nn.Module, delta: Vector) -> None:
    """θ ← θ + δ for the trainable parameters, in place."""
    with torch.no_grad():
        for p, d in zip(trainable(model), delta, strict=True):
            p.add_(d)


@register_unlearning("first_order", FirstOrderParams)
def first_order(ctx: UnlearningContext) -> StateDict:
    """θ_u = θ − τ(∇ℓ(Z̃) − ∇ℓ(Z)), one update computed at θ with the model in eval mode (BN frozen)."""
    params = parse_params(FirstOrderParams, ctx.params, "first_order")
    model = ctx.fresh_model(ctx.original).eval()
    diff = gradient_difference(ctx, model, params)
    apply_update(model, [-params.tau * d for d in diff])
    return state_of(model)
