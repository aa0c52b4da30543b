"""Closed forms that several attacks read off gradients or probabilities, defined once.

- :func:`output_layer` — the model's last ``nn.Linear`` with one output per class (where ∇* carries labels).
- :func:`penultimate_features` — the input of that layer for one sample, read off ∇* exactly: its gradient is
  ``∂W[c,:] = (p_c − y_c)·h`` and ``∂b[c] = p_c − y_c``, so ``h = Σ_c ∂b_c ∂W_c / Σ_c ∂b_c²`` (the identity
  that also recovers a table row from a first Linear layer, ``feature_recovery/tabular.py``).
- :func:`log_odds` — ``log((1 − p_c)/p_c)`` from a black-box probability row, exact near p_c = 1.
"""

from __future__ import annotations

import torch
from torch import nn

from unlearnleak.errors import ConfigError


def output_layer(model: nn.Module, num_classes: int) -> tuple[str, nn.Linear]:
    """The last ``nn.Linear`` with ``num_classes`` outputs (module registration order), and its name."""
    found: tuple[str, nn.Linear] | None = None
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and module.out_features == num_classes:
            found = (name, module)
    if found is None:
        raise ConfigError(f"cannot infer labels from the gradient: the model has no Linear layer with "
                          f"{num_classes} outputs; pass the labels explicitly")
    return found


def num_logits(model: nn.Module) -> int:
    """Output width of the model's last ``nn.Linear`` (0 without one)."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return linears[-1].out_features if linears else 0


def features_from_linear_gradient(weight_grad: torch.Tensor, bias_grad: torch.Tensor) -> torch.Tensor | None:
    """The input h (d,) of a Linear layer for one sample from its gradient: Σ_i ∂b_i ∂W_i / Σ_i ∂b_i² (float64).

    Exact for one sample and any positive or negative multiple of its gradient; None when ∂b is zero.
    """
    w, b = weight_grad.double(), bias_grad.double()
    denom = (b * b).sum()
    if float(denom) == 0.0:
        return None
    return (b @ w) / denom


def penultimate_features(model: nn.Module, gradients: dict[str, torch.Tensor],
                         num_classes: int) -> tuple[nn.Module, torch.Tensor] | None:
    """The output layer and its input for k = 1, read off the gradient ``gradients`` (name → tensor).

    None when the model has no output layer with a bias whose gradient is given, or the bias gradient is 0.
    """
    try:
        name, layer = output_layer(model, num_classes)
    except ConfigError:
        return None
    prefix = f"{name}." if name else ""
    if layer.bias is None or f"{prefix}bias" not in gradients or f"{prefix}weight" not in gradients:
        return None
    h = features_from_linear_gradient(gradients[f"{prefix}weight"], gradients[f"{prefix}bias"])
    return None if h is None else (layer, h)


def log_odds(proba: torch.Tensor, target: torch.Tensor | int) -> torch.Tensor:
    """log(Σ_{j≠c} p_j) − log p_c = log((1 − p_c)/p_c) per row, from probabilities (float64).

    The black-box counterpart of the logit log-odds: linear in the logits far from saturation, and the
    threshold p_c ≥ 0.9995 is simply log-odds ≤ log(0.0005/0.9995) ≈ −7.6.
    """
    proba = proba.double()
    tgt = torch.as_tensor(target, dtype=torch.long).expand(proba.shape[0])[:, None]
    own = proba.gather(1, tgt).squeeze(1)
    rest = proba.scatter(1, tgt, 0.0).sum(dim=1)
    return rest.clamp_min(1e-300).log() - own.clamp_min(1e-300).log()
