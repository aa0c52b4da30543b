"""Fine-tuning θ_u for a few epochs on retained data before release (docs/paper.md §7, "S3")."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from unlearnleak.defenses.base import DefenseContext, StateDict, register_defense
from unlearnleak.errors import ConfigError
from unlearnleak.training import TrainConfig, train
from unlearnleak.unlearning import state_of


class FinetuneDefenseParams(BaseModel):
    """Epochs (the strength) and SGD settings; BN statistics frozen by default."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    epochs: int = Field(0, ge=0)
    lr: float = Field(0.01, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    batch_size: int = Field(64, ge=1)
    freeze_bn: bool = True


@register_defense("finetune", FinetuneDefenseParams, strength="epochs")
def finetune_defense(state: StateDict, context: DefenseContext, params: FinetuneDefenseParams) -> StateDict:
    """θ_u trained ``epochs`` more epochs on the retain set (seeded)."""
    if params.epochs == 0:
        return state
    if context.retain_x is None or context.retain_y is None or context.retain_x.shape[0] == 0:
        raise ConfigError("the finetune defense needs retained data (DefenseContext.retain_x/retain_y)")
    model = context.model(state)
    config = TrainConfig(epochs=params.epochs, lr=params.lr, momentum=params.momentum,
                         batch_size=params.batch_size, freeze_bn=params.freeze_bn)
    train(model, context.retain_x, context.retain_y, config, seed=context.seed + 1, device=context.device,
          desc="fine-tuning defense")
    return state_of(model)
