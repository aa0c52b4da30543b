"""Analytic recovery of an input from ∇* when the model starts with a fully connected layer (rows or images).

For a first layer ``u = W₁ z + b₁`` on the normalised row ``z = (x − μ)/σ``, the gradient of one sample is
``∂ℓ/∂W₁[i,:] = δ_i·zᵀ`` and ``∂ℓ/∂b₁[i] = δ_i``. Any positive or negative multiple of it (∇* is one)
gives ``z = ∂W₁[i,:] / ∂b₁[i]`` for every hidden unit i with δ_i ≠ 0; we take the least-squares estimate
over all units, ``z = Σ_i b_i W_i / Σ_i b_i²`` (exact for k = 1, robust to the rounding of stored weights),
then undo the model's normalisation. For k > 1 the units mix the samples, so rows are recovered by
optimisation instead (preset ``tabular``). An image model whose first layer is Linear on the flattened image
(an MLP) gives its image away the same way (Phong et al., 2017); ``recover()`` lets that closed form compete
with the inversion on the attacker's own score, the gradient cost.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from unlearnleak.attacks.feature_recovery.target_gradient import TargetGradient
from unlearnleak.models import Normalized


def first_linear(model: nn.Module) -> tuple[str, nn.Linear] | None:
    """The model's first parametrised module if it is a Linear layer with a bias (else None).

    Registration order is taken as execution order, which holds for sequential models such as the built-in
    MLP; :func:`recover_row` verifies the result by re-computing the gradient.
    """
    for name, module in model.named_modules():
        own = [p for p in module.parameters(recurse=False) if p.requires_grad]
        if not own:
            continue
        if isinstance(module, nn.Linear) and module.bias is not None and module.bias.requires_grad:
            return name, module
        return None
    return None


def analytic_applicable(model: nn.Module, target: TargetGradient, k: int,
                        input_shape: tuple[int, ...] | None = None) -> bool:
    """True when one input can be read off ∇* in closed form (k = 1, first layer Linear with bias, taking the
    whole flattened input when ``input_shape`` is given)."""
    found = first_linear(model)
    if k != 1 or found is None:
        return False
    name, layer = found
    if input_shape is not None and layer.in_features != math.prod(input_shape):
        return False
    return f"{name}.weight" in target.names and f"{name}.bias" in target.names


def recover_row(model: nn.Module, target: TargetGradient, input_shape: tuple[int, ...] | None = None) -> torch.Tensor:
    """The input (1, *input_shape) — a row (1, D) by default — in the model's input units (module docstring).

    Raises:
        ValueError: the model has no leading Linear layer with a bias, or ∇* has no signal on it.
    """
    found = first_linear(model)
    if found is None:
        raise ValueError("analytic row recovery needs a model whose first layer is Linear with a bias")
    name = found[0]
    w = target[f"{name}.weight"].double()  # (h, D)
    b = target[f"{name}.bias"].double()  # (h,)
    denom = (b * b).sum()
    if float(denom) == 0.0:
        raise ValueError("the first layer's bias gradient is zero: the row cannot be read off ∇*")
    z = (b @ w) / denom  # (D,)
    shape = tuple(input_shape) if input_shape is not None else (int(z.numel()),)
    z = z.reshape(shape)
    if isinstance(model, Normalized):  # per feature for rows, per channel (C, 1, 1) for images
        stats_shape = (-1, 1, 1) if len(shape) == 3 else (-1,)
        mean = model.mean.reshape(stats_shape).double().to(z.device)
        std = model.std.reshape(stats_shape).double().to(z.device)
        z = z * std + mean
    return z.unsqueeze(0)
