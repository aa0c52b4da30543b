"""Validate ``--device`` early, so that asking for CUDA on a CPU-only machine is a clear error, not a crash."""

from __future__ import annotations

import torch

from unlearnleak.errors import ConfigError


def check_device(name: str) -> str:
    """Return ``name`` if torch can use it ("cpu", "cuda", "cuda:1"); raise ConfigError otherwise."""
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ConfigError(f"invalid device {name!r}: use 'cpu' or 'cuda' (optionally 'cuda:N')") from exc
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device {name!r} requested but this torch build sees no CUDA GPU; use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"device {name!r} requested but only {torch.cuda.device_count()} GPU(s) exist")
    elif device.type != "cpu":
        raise ConfigError(f"device {name!r} is not supported; use 'cpu' or 'cuda'")
    return name
