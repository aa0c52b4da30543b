"""Analytic recovery of a tabular row from ∇* when the model starts with a fully connected layer.

For a first layer ``u = W₁ z + b₁`` on the normalised row ``z = (x − μ)/σ``, the gradient of one sample is
``∂ℓ/∂W₁[i,:] = δ_i·zᵀ`` and ``∂ℓ/∂b₁[i] = δ_i``. Any positive or negative multiple of it (∇* is one)
gives ``z = ∂W₁[i,:] / ∂b₁[i]`` for every hidden unit i with δ_i ≠ 0; we take the least-squares estimate
over all units, ``z = Σ_i b_i W_i / Σ_i b_i²`` (exact for k = 1, robust to the rounding of stored weights),
then undo the model's normalisation. For k > 1 the units mix the samples, so rows are recovered by
optimisation instead (preset ``tabular``).
"""

from __future__ import annotations

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


def analytic_applicable(model: nn.Module, target: TargetGradient, k: int) -> bool:
    """True when one row can be read off ∇* in closed form (k = 1, first layer Linear with bias)."""
    found = first_linear(model)
    if k != 1 or found is None:
        return False
    name = found[0]
    return f"{name}.weight" in target.names and f"{name}.bias" in target.names


def recover_row(model: nn.Module, target: TargetGradient) -> torch.Tensor:
    """The row (1, D) in the model's input units; see the module docstring for the formula.

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
    if isinstance(model, Normalized):
        mean = model.mean.reshape(-1).double().to(z.device)
        std = model.std.reshape(-1).double().to(z.device)
        z = z * std + mean
    return z.reshape(1, -1)
