"""The defense registry: transformations of θ_u applied before it is released (docs/paper.md §7, DESIGN.md).

A defense is ``defense(state, context, params) -> released state``; its parameters are a pydantic model with
``extra="forbid"`` and every defense is the identity at strength 0 (σ = 0, sparsity = 0, epochs = 0).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from pydantic import BaseModel, ValidationError

from unlearnleak.errors import ConfigError
from unlearnleak.models import ModelSpec, Normalized, build_model, load_weights
from unlearnleak.registry import Registry

StateDict = dict[str, torch.Tensor]


@dataclass(frozen=True)
class DefenseContext:
    """What the provider has at release time: the architecture and data it may still train on."""

    spec: ModelSpec
    retain_x: torch.Tensor | None = None  # D_ft \ D_u (for the fine-tuning defense)
    retain_y: torch.Tensor | None = None
    seed: int = 0
    device: str = "cpu"

    def model(self, state: StateDict) -> Normalized:
        """A fresh module holding a copy of ``state``."""
        model = build_model(self.spec)
        load_weights(model, {k: v.clone() for k, v in state.items()})
        return model.to(self.device)


@dataclass(frozen=True)
class Defense:
    """A registered defense: its parameter model, the strength parameter swept in studies, and the function."""

    params: type[BaseModel]
    strength: str
    apply: Callable[[StateDict, DefenseContext, Any], StateDict]


DEFENSES: Registry[Defense] = Registry("defense")


def register_defense(name: str, params: type[BaseModel], strength: str
                     ) -> Callable[[Callable[[StateDict, DefenseContext, Any], StateDict]],
                                   Callable[[StateDict, DefenseContext, Any], StateDict]]:
    """Register ``fn(state, context, params) -> state`` under ``name``; ``strength`` names its sweep parameter."""

    def decorator(fn: Callable[[StateDict, DefenseContext, Any], StateDict]
                  ) -> Callable[[StateDict, DefenseContext, Any], StateDict]:
        DEFENSES.register(name)(Defense(params=params, strength=strength, apply=fn))
        return fn

    return decorator


def defense_params(name: str, params: Mapping[str, Any]) -> BaseModel:
    """``params`` validated by defense ``name``'s model (a typo names the defense and its keys)."""
    model = DEFENSES.get(name).params
    try:
        return model(**dict(params))
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '(params)'}: {e['msg']}"
                             for e in exc.errors())
        raise ConfigError(f"invalid parameters for defense {name!r}: {problems} "
                          f"(its parameters: {', '.join(model.model_fields)})") from None


def defend(name: str, state: StateDict, context: DefenseContext, params: Mapping[str, Any] | None = None
           ) -> StateDict:
    """The released weights: defense ``name`` applied to ``state`` (a CPU copy; ``state`` is not modified)."""
    parsed = defense_params(name, params or {})
    out = DEFENSES.get(name).apply({k: v.clone() for k, v in state.items()}, context, parsed)
    return {k: v.detach().cpu().clone() for k, v in out.items()}


def weight_names(context: DefenseContext) -> list[str]:
    """Trainable parameter names of the architecture (what noise and pruning act on; buffers excluded)."""
    return [n for n, p in build_model(context.spec).named_parameters() if p.requires_grad]
