"""Unlearning by fine-tuning θ on the retain set only, relying on catastrophic forgetting of D_u."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from unlearnleak.errors import ConfigError
from unlearnleak.training import TrainConfig, train
from unlearnleak.unlearning.base import StateDict, UnlearningContext, parse_params, register_unlearning, state_of


class FinetuneParams(BaseModel):
    """Epochs and SGD settings of the fine-tune on D_ft \\ D_u (BN statistics frozen by default)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    epochs: int = Field(5, ge=1)
    lr: float = Field(0.01, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    batch_size: int = Field(64, ge=1)
    freeze_bn: bool = True

    def train_config(self) -> TrainConfig:
        return TrainConfig(epochs=self.epochs, lr=self.lr, momentum=self.momentum,
                           weight_decay=self.weight_decay, batch_size=self.batch_size, freeze_bn=self.freeze_bn)


@register_unlearning("finetune", FinetuneParams)
def finetune(ctx: UnlearningContext) -> StateDict:
    """θ_u = θ fine-tuned on the retain set for a few epochs."""
    params = parse_params(FinetuneParams, ctx.params, "finetune")
    n_retain = int((~ctx.forget_mask).sum())
    if n_retain == 0:
        raise ConfigError("fine-tuning on the retain set needs at least one retained row")
    model = ctx.fresh_model(ctx.original)
    config = params.train_config()
    train(model, ctx.x_train, ctx.y_train, config, seed=ctx.seed, device=ctx.device, keep=~ctx.forget_mask,
          desc="fine-tuning on the retain set")
    ctx.meter.add_training(n_retain, config)
    return state_of(model)
