"""Extra CNNs that stress the attacks differently: no batch-norm (LeakyReLU), and BN + GELU with a tanh head."""

from __future__ import annotations

import torch
from torch import nn

from unlearnleak.models.base import register_model


def _flat_size(features: nn.Module, input_shape: tuple[int, ...]) -> int:
    with torch.no_grad():
        return int(features(torch.zeros(1, *input_shape)).shape[1])


class PlainCNN(nn.Module):
    """Three 3×3 conv + LeakyReLU layers (two stride 2), no normalisation, one linear layer."""

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, width: int = 16) -> None:
        super().__init__()
        c, w = input_shape[0], int(width)
        self.features = nn.Sequential(
            nn.Conv2d(c, w, 3, padding=1), nn.LeakyReLU(0.2),
            nn.Conv2d(w, 2 * w, 3, padding=1, stride=2), nn.LeakyReLU(0.2),
            nn.Conv2d(2 * w, 2 * w, 3, padding=1, stride=2), nn.LeakyReLU(0.2),
            nn.Flatten(),
        )
        self.fc = nn.Linear(_flat_size(self.features, input_shape), num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


class BNGeluCNN(nn.Module):
    """Conv-BN-GELU ×3 with pooling, then Linear → tanh → Linear (a saturating head)."""

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, width: int = 16, hidden: int = 64) -> None:
        super().__init__()
        c, w = input_shape[0], int(width)
        self.features = nn.Sequential(
            nn.Conv2d(c, w, 3, padding=1), nn.BatchNorm2d(w), nn.GELU(),
            nn.Conv2d(w, 2 * w, 3, padding=1), nn.BatchNorm2d(2 * w), nn.GELU(), nn.MaxPool2d(2),
            nn.Conv2d(2 * w, 2 * w, 3, padding=1), nn.BatchNorm2d(2 * w), nn.GELU(), nn.MaxPool2d(2),
            nn.Flatten(),
        )
        self.head = nn.Sequential(nn.Linear(_flat_size(self.features, input_shape), int(hidden)), nn.Tanh(),
                                  nn.Linear(int(hidden), num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def _needs_image(name: str, input_shape: tuple[int, ...]) -> None:
    if len(input_shape) != 3:
        raise ValueError(f"{name} needs image input (C, H, W), got {input_shape}")


@register_model("cnn_nobn")
def cnn_nobn(input_shape: tuple[int, ...], num_classes: int, width: int = 16) -> nn.Module:
    """A small CNN without batch-norm (LeakyReLU): the dummy gradient is smooth and very informative."""
    _needs_image("cnn_nobn", input_shape)
    return PlainCNN(input_shape, num_classes, width)


@register_model("cnn_bn_gelu")
def cnn_bn_gelu(input_shape: tuple[int, ...], num_classes: int, width: int = 16, hidden: int = 64) -> nn.Module:
    """A BN/GELU CNN with a tanh hidden head: a model family the default was not tuned on."""
    _needs_image("cnn_bn_gelu", input_shape)
    return BNGeluCNN(input_shape, num_classes, width, hidden)
