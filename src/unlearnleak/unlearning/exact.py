"""Exact unlearning: repeat the fine-tune of θ0 on D_ft without D_u, same hyperparameters and data order."""

from __future__ import annotations

from unlearnleak.errors import ConfigError
from unlearnleak.training import train
from unlearnleak.unlearning.base import (
    NoParams,
    StateDict,
    UnlearningContext,
    parse_params,
    register_unlearning,
    state_of,
)


@register_unlearning("exact")
def exact_retrain(ctx: UnlearningContext) -> StateDict:
    """θ_u = fine-tune(θ0, D_ft \\ D_u) with the original seed, so the retain order is unchanged (docs/paper.md §3)."""
    if ctx.base is None:
        raise ConfigError("exact unlearning retrains from the base model θ0, which this context lacks")
    parse_params(NoParams, ctx.params, "exact")
    model = ctx.fresh_model(ctx.base)
    ctx.meter.add_training(int((~ctx.forget_mask).sum()), ctx.finetune)
    train(model, ctx.x_train, ctx.y_train, ctx.finetune, seed=ctx.seed, device=ctx.device,
          keep=~ctx.forget_mask, desc="exact unlearning")
    return state_of(model)
