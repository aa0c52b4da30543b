"""Small models: an MLP for tabular rows and a LeNet-style CNN for fast tests and tiny images."""

from __future__ import annotations

import math

import torch
from torch import nn

from unlearnleak.models.base import register_model

_ACTIVATIONS = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh}


def _activation(name: str) -> type[nn.Module]:
    if name not in _ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; choose one of {sorted(_ACTIVATIONS)}")
    return _ACTIVATIONS[name]


@register_model("mlp")
def mlp(input_shape: tuple[int, ...], num_classes: int, hidden: tuple[int, ...] | list[int] = (64, 64),
        activation: str = "relu") -> nn.Module:
    """Fully connected net; its first layer is Linear with bias, which makes rows analytically recoverable."""
    act = _activation(activation)
    d_in = math.prod(input_shape)
    layers: list[nn.Module] = [nn.Flatten()] if len(input_shape) > 1 else []
    for h in hidden:
        layers += [nn.Linear(d_in, int(h)), act()]
        d_in = int(h)
    layers.append(nn.Linear(d_in, num_classes))
    return nn.Sequential(*layers)


class LeNet(nn.Module):
    """LeNet-style CNN as used by DLG/iDLG: three 5×5 convs (12 channels) and one linear layer."""

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, activation: str = "relu",
                 channels: int = 12) -> None:
        super().__init__()
        act = _activation(activation)
        c = int(channels)
        self.features = nn.Sequential(
            nn.Conv2d(input_shape[0], c, 5, padding=2, stride=2), act(),
            nn.Conv2d(c, c, 5, padding=2, stride=2), act(),
            nn.Conv2d(c, c, 5, padding=2, stride=1), act(),
            nn.Flatten(),
        )
        with torch.no_grad():
            n_flat = self.features(torch.zeros(1, *input_shape)).shape[1]
        self.fc = nn.Linear(n_flat, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


@register_model("lenet")
def lenet(input_shape: tuple[int, ...], num_classes: int, activation: str = "relu",
          channels: int = 12) -> nn.Module:
    """Small CNN for fast tests (milliseconds per inversion step)."""
    if len(input_shape) != 3:
        raise ValueError(f"lenet needs image input (C, H, W), got {input_shape}")
    return LeNet(input_shape, num_classes, activation, channels)
