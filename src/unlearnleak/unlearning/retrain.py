"""Retraining from scratch: a freshly initialised model trained on D_ft \\ D_u only (the gold standard, for small sets).

Unlike ``exact`` (which repeats the fine-tune from θ0), nothing of θ or θ0 survives: the weights are
re-initialised from ``init_seed`` and trained with this method's own schedule.
"""

from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict, Field

from unlearnleak.errors import ConfigError
from unlearnleak.models import build_model
from unlearnleak.training import TrainConfig, train
from unlearnleak.unlearning.base import StateDict, UnlearningContext, parse_params, register_unlearning, state_of


class RetrainParams(BaseModel):
    """The schedule of the retraining (SGD with momentum by default) and the seed of the fresh weights."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    epochs: int = Field(30, ge=1)
    lr: float = Field(0.05, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(5e-4, ge=0)
    batch_size: int = Field(64, ge=1)
    augment: bool = False
    init_seed: int | None = None  # None: the context's seed

    def train_config(self) -> TrainConfig:
        return TrainConfig(epochs=self.epochs, lr=self.lr, momentum=self.momentum,
                           weight_decay=self.weight_decay, batch_size=self.batch_size, augment=self.augment)


@register_unlearning("retrain", RetrainParams)
def retrain(ctx: UnlearningContext) -> StateDict:
    """θ_u = train(fresh init, D_ft \\ D_u) with the seeded schedule of :class:`RetrainParams`."""
    params = parse_params(RetrainParams, ctx.params, "retrain")
    if int((~ctx.forget_mask).sum()) == 0:
        raise ConfigError("retraining needs at least one retained row; D_u covers all of D_ft")
    with torch.random.fork_rng(devices=[]):  # the initialisation must not touch the global generator
        torch.manual_seed(ctx.seed if params.init_seed is None else params.init_seed)
        model = build_model(ctx.spec)
    config = params.train_config()
    train(model, ctx.x_train, ctx.y_train, config, seed=ctx.seed, device=ctx.device, keep=~ctx.forget_mask,
          desc="retraining from scratch")
    ctx.meter.add_training(int((~ctx.forget_mask).sum()), config)
    return state_of(model)
