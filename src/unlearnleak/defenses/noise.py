"""Parameter obfuscation: Gaussian noise on every trainable tensor of θ_u (docs/paper.md §7, "S1").

``relative=False``: each entry gets N(0, σ²). ``relative=True``: tensor W gets noise of per-entry std
σ·‖W‖/√numel(W), so the noise's norm is about σ·‖W‖ — the same relative perturbation in every layer.
"""

from __future__ import annotations

import math

import torch
from pydantic import BaseModel, ConfigDict, Field

from unlearnleak.defenses.base import DefenseContext, StateDict, register_defense, weight_names


class NoiseParams(BaseModel):
    """σ and whether it is relative to each tensor's norm."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sigma: float = Field(0.0, ge=0)
    relative: bool = True


def noise_std(tensor: torch.Tensor, params: NoiseParams) -> float:
    """The per-entry standard deviation of the noise added to ``tensor``."""
    if not params.relative:
        return params.sigma
    return params.sigma * float(tensor.double().norm()) / math.sqrt(max(1, tensor.numel()))


@register_defense("noise", NoiseParams, strength="sigma")
def add_noise(state: StateDict, context: DefenseContext, params: NoiseParams) -> StateDict:
    """θ_u + ε, ε ~ N(0, std²) per entry, drawn from a generator seeded with the context's seed."""
    if params.sigma == 0:
        return state
    generator = torch.Generator().manual_seed(context.seed)
    for name in weight_names(context):
        t = state[name]
        eps = torch.randn(t.shape, generator=generator, dtype=torch.float32)
        state[name] = t + (noise_std(t, params) * eps).to(t.dtype)
    return state
