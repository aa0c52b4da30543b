"""Model registry, the input-normalisation wrapper, and the serialisable ModelSpec that rebuilds a model."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from unlearnleak.errors import CheckpointError, ConfigError
from unlearnleak.registry import Registry

ModelFactory = Callable[..., nn.Module]
"""``factory(input_shape=(C,H,W) or (D,), num_classes=K, **kwargs) -> nn.Module`` taking normalised input."""

MODELS: Registry[ModelFactory] = Registry("model")


def register_model(name: str) -> Callable[[ModelFactory], ModelFactory]:
    """Register a model factory under ``name``."""
    return MODELS.register(name)


class Normalized(nn.Module):
    """Applies per-channel (or per-feature) standardisation before ``net``, so callers work in raw units.

    Every model in unlearnleak is wrapped like this: training, attacks and oracles all feed [0, 1]
    images (or preprocessed rows), and the normalisation travels with the checkpoint as buffers.
    The constants are buffers, not parameters, so they never enter a gradient.
    """

    def __init__(self, net: nn.Module, mean: tuple[float, ...], std: tuple[float, ...], image: bool) -> None:
        super().__init__()
        self.net = net
        shape = (1, -1, 1, 1) if image else (1, -1)
        self.mean: torch.Tensor
        self.std: torch.Tensor
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).reshape(shape))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).reshape(shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.std)


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild a model's architecture (weights travel separately)."""

    name: str
    input_shape: tuple[int, ...]
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    kwargs: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["input_shape"] = list(self.input_shape)
        d["mean"] = list(self.mean)
        d["std"] = list(self.std)
        d["kwargs"] = dict(self.kwargs)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ModelSpec:
        try:
            return cls(name=str(d["name"]), input_shape=tuple(int(v) for v in d["input_shape"]),
                       num_classes=int(d["num_classes"]), mean=tuple(float(v) for v in d["mean"]),
                       std=tuple(float(v) for v in d["std"]), kwargs=dict(d.get("kwargs", {})))
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"invalid model spec {dict(d)!r}: {exc}") from exc


def build_model(spec: ModelSpec) -> Normalized:
    """Instantiate the architecture of ``spec`` (random weights), wrapped with its normalisation."""
    if len(spec.mean) != len(spec.std):
        raise ConfigError(f"mean has {len(spec.mean)} entries but std has {len(spec.std)}")
    if any(s <= 0 for s in spec.std):
        raise ConfigError(f"std must be positive, got {spec.std}")
    image = len(spec.input_shape) == 3
    channels = spec.input_shape[0]
    if len(spec.mean) not in (1, channels):
        raise ConfigError(f"{len(spec.mean)} normalisation constants for input shape {spec.input_shape}; "
                          f"give 1 or {channels}")
    if spec.name in MODELS:
        factory = MODELS.get(spec.name)
    elif ":" in spec.name:
        from unlearnleak.models.custom import import_model_class

        factory = import_model_class(spec.name)
    else:
        MODELS.get(spec.name)  # raises the ConfigError listing known names
        raise AssertionError("unreachable")
    try:
        net = factory(input_shape=tuple(spec.input_shape), num_classes=spec.num_classes, **dict(spec.kwargs))
    except TypeError as exc:
        raise ConfigError(f"model {spec.name!r} rejected its arguments {dict(spec.kwargs)!r}: {exc}") from exc
    return Normalized(net, spec.mean, spec.std, image=image)


def load_weights(model: nn.Module, state: Mapping[str, torch.Tensor], what: str = "checkpoint") -> None:
    """Load ``state`` strictly, turning shape/key mismatches into a readable CheckpointError."""
    try:
        model.load_state_dict(dict(state), strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[:6]
        raise CheckpointError(f"{what} does not fit the model architecture: " + " ".join(first)) from exc
