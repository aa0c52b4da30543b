"""Unlearning by fine-tuning θ on D_u relabelled at random (Graves et al., AAAI 2021, "amnesiac" relabelling).

Each forget sample gets a uniformly drawn OTHER label; optionally the retain set is mixed in so the
model keeps its accuracy elsewhere.
"""

from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict, Field

from unlearnleak.errors import ConfigError
from unlearnleak.training import TrainConfig, train
from unlearnleak.unlearning.base import StateDict, UnlearningContext, parse_params, register_unlearning, state_of
from unlearnleak.unlearning.first_order import relabel


class RandomLabelParams(BaseModel):
    """Epochs and SGD settings; ``with_retain`` also trains on the retain set (true labels)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    epochs: int = Field(3, ge=1)
    lr: float = Field(0.01, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    batch_size: int = Field(64, ge=1)
    with_retain: bool = False
    freeze_bn: bool = True


@register_unlearning("random_label", RandomLabelParams)
def random_label(ctx: UnlearningContext) -> StateDict:
    """θ_u = θ fine-tuned on (D_u, random other labels) [∪ retain set]."""
    params = parse_params(RandomLabelParams, ctx.params, "random_label")
    if int(ctx.forget_mask.sum()) == 0:
        raise ConfigError("random relabelling needs a non-empty forget set")
    y = ctx.y_train.clone()
    y[ctx.forget_mask] = relabel(ctx.forget_y, ctx.spec.num_classes, torch.Generator().manual_seed(ctx.seed))
    keep = None if params.with_retain else ctx.forget_mask
    config = TrainConfig(epochs=params.epochs, lr=params.lr, momentum=params.momentum,
                         batch_size=params.batch_size, freeze_bn=params.freeze_bn)
    model = ctx.fresh_model(ctx.original)
    train(model, ctx.x_train, y.to(ctx.y_train.dtype), config, seed=ctx.seed, device=ctx.device, keep=keep,
          desc="random-label fine-tuning")
    ctx.meter.add_training(ctx.x_train.shape[0] if keep is None else int(keep.sum()), config)
    return state_of(model)
