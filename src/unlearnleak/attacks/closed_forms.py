"""Closed forms that several attacks read off gradients or probabilities, defined once.

- :func:`output_layer` — the model's ``nn.Linear`` with one output per class that ``forward`` calls last (where
  ∇* carries labels).
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
    """The ``nn.Linear`` with ``num_classes`` outputs that ``forward`` calls last, and its name.

    With one such layer it is that one; with several (a hidden layer as wide as the classes), registration order
    says nothing about which makes the logits, so one forward pass on a zero input of the model's
    ``input_shape`` (set by ``build_model``) tells.
    """
    found = [(name, m) for name, m in model.named_modules()
             if isinstance(m, nn.Linear) and m.out_features == num_classes]
    if not found:
        raise ConfigError(f"cannot infer labels from the gradient: the model has no Linear layer with "
                          f"{num_classes} outputs; pass the labels explicitly (audit --labels)")
    if len(found) == 1:
        return found[0]
    called = [entry for entry in linears_in_call_order(model) if entry[1].out_features == num_classes]
    if not called:
        raise ConfigError(f"cannot tell the output layer: {', '.join(n for n, _ in found)} all have {num_classes} "
                          f"outputs and forward calls none of them")
    return called[-1]


def num_logits(model: nn.Module) -> int:
    """Output width of the ``nn.Linear`` that ``forward`` calls last (0 without one)."""
    called = linears_in_call_order(model)
    return called[-1][1].out_features if called else 0


def linears_in_call_order(model: nn.Module) -> list[tuple[str, nn.Linear]]:
    """The model's ``nn.Linear`` layers in the order ``forward`` last calls them, from one no-grad eval-mode
    pass on zeros of ``model.input_shape``; registration order for a model without one (its forward unknown)."""
    linears = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    shape = getattr(model, "input_shape", None)
    if shape is None or not linears:
        return linears
    calls: list[str] = []
    hooks = [m.register_forward_hook(lambda *_, name=name: calls.append(name)) for name, m in linears]
    first = next(model.parameters(), None)
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, *shape, device=None if first is None else first.device))
    finally:
        model.train(was_training)
        for hook in hooks:
            hook.remove()
    last = {name: i for i, name in enumerate(calls)}  # a layer called twice counts where it was called last
    return sorted(((n, m) for n, m in linears if n in last), key=lambda entry: last[entry[0]])


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
