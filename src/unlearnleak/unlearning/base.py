"""The unlearning-method registry and the context every method receives (DESIGN.md: one file per method)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from unlearnleak.models import ModelSpec, Normalized, build_model, load_weights
from unlearnleak.registry import Registry
from unlearnleak.training import TrainConfig

StateDict = dict[str, torch.Tensor]


@dataclass(frozen=True)
class UnlearningContext:
    """What the model provider holds when a deletion request arrives.

    ``x_train``/``y_train`` is the fine-tuning set D_ft; ``forget_mask`` marks D_u within it.
    ``finetune`` is the configuration θ was fine-tuned with (exact unlearning repeats it).
    """

    spec: ModelSpec
    original: StateDict  # θ
    base: StateDict | None  # θ0, the model θ was fine-tuned from
    x_train: torch.Tensor
    y_train: torch.Tensor
    forget_mask: torch.Tensor  # (N,) bool
    finetune: TrainConfig
    params: Mapping[str, Any] = field(default_factory=dict)
    seed: int = 0
    device: str = "cpu"

    @property
    def forget_x(self) -> torch.Tensor:
        return self.x_train[self.forget_mask]

    @property
    def forget_y(self) -> torch.Tensor:
        return self.y_train[self.forget_mask]

    def fresh_model(self, state: StateDict) -> Normalized:
        """A new module of this architecture holding a copy of ``state``."""
        model = build_model(self.spec)
        load_weights(model, {k: v.clone() for k, v in state.items()})
        return model.to(self.device)


UnlearningMethod = Callable[[UnlearningContext], StateDict]
UNLEARNING: Registry[UnlearningMethod] = Registry("unlearning method")


def register_unlearning(name: str) -> Callable[[UnlearningMethod], UnlearningMethod]:
    """Register an unlearning method: ``method(context) -> unlearned state dict``."""
    return UNLEARNING.register(name)


def unlearn(method: str, context: UnlearningContext) -> StateDict:
    """Run the registered ``method`` and return θ_u as a CPU state dict."""
    state = UNLEARNING.get(method)(context)
    return {k: v.detach().cpu().clone() for k, v in state.items()}


def state_of(model: torch.nn.Module) -> StateDict:
    """A detached CPU copy of ``model``'s state dict."""
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
