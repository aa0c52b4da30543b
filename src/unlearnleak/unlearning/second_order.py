"""Second-order closed-form unlearning (Warnecke et al., NDSS 2023): θ_u = θ − τ·H⁻¹(∇ℓ(Z̃) − ∇ℓ(Z)).

H is the Hessian of the training loss at θ. We use the mean cross-entropy over the retain set (the data the
model should still fit) plus damping λI, which keeps H + λI positive definite on a non-convex network, and
solve with conjugate gradient or LiSSA (``scale`` s must exceed the largest eigenvalue of H + λI for LiSSA to
converge). With the summed forget loss and the mean Hessian, τ = 1/n_retain is the influence-function step
(Koh & Liang 2017) — the default ``tau=None`` picks exactly that.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from unlearnleak.errors import ConfigError
from unlearnleak.unlearning.base import StateDict, UnlearningContext, parse_params, register_unlearning, state_of
from unlearnleak.unlearning.first_order import FirstOrderParams, apply_update, gradient_difference
from unlearnleak.unlearning.gradients import Solution, hvp_operator, solve


class SecondOrderParams(BaseModel):
    """The step τ, the forget-loss reduction, Z̃, and the inverse-HVP solver's settings."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tau: float | None = Field(None, gt=0)  # None: 1 / |retain set| (the influence-function step)
    reduction: Literal["sum", "mean"] = "sum"
    replacement: Literal["none", "random_label"] = "none"
    solver: Literal["cg", "lissa"] = "cg"
    damping: float = Field(1.0, ge=0)  # λ; the CIFAR LeNet's Hessian is indefinite, λ = 0.01 or 0.1 left CG
    # residuals of 3.5 and 4.8 there while λ = 1 reached 0.009 (docs/unlearning_methods.md)
    scale: float = Field(25.0, gt=0)  # s, LiSSA only
    iterations: int = Field(20, ge=1)
    hessian_rows: int | None = Field(None, ge=1)  # None: the whole retain set; else its first rows
    batch_size: int = Field(256, ge=1)


def inverse_hvp(ctx: UnlearningContext, params: SecondOrderParams) -> tuple[Any, Solution]:
    """The model at θ and the solution x ≈ (H + λI)⁻¹(∇ℓ(Z̃) − ∇ℓ(Z)) with its residual."""
    model = ctx.fresh_model(ctx.original).eval()
    first = FirstOrderParams(tau=1.0, reduction=params.reduction, replacement=params.replacement)
    b = gradient_difference(ctx, model, first)
    x, y = ctx.retain_x, ctx.retain_y
    if params.hessian_rows is not None:
        x, y = x[:params.hessian_rows], y[:params.hessian_rows]
    if x.shape[0] == 0:
        raise ConfigError("second-order unlearning estimates the Hessian on the retain set, which is empty")
    apply = hvp_operator(model, x, y, damping=params.damping, batch_size=params.batch_size, meter=ctx.meter)
    return model, solve(apply, b, solver=params.solver, iterations=params.iterations, scale=params.scale)


@register_unlearning("second_order", SecondOrderParams)
def second_order(ctx: UnlearningContext) -> StateDict:
    """θ_u = θ − τ·(H + λI)⁻¹(∇ℓ(Z̃) − ∇ℓ(Z)) at θ, model in eval mode (BN frozen)."""
    params = parse_params(SecondOrderParams, ctx.params, "second_order")
    model, solution = inverse_hvp(ctx, params)
    ctx.meter.notes["hvp_relative_residual"] = solution.residual
    tau = params.tau if params.tau is not None else 1.0 / max(1, int((~ctx.forget_mask).sum()))
    apply_update(model, [-tau * d for d in solution.x])
    return state_of(model)
