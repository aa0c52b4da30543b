"""The paper's ConvNet (official code's ``ConvNet``, from invertinggradients) with a width parameter."""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from unlearnleak.models.base import register_model


def _block(c_in: int, c_out: int, i: int) -> list[tuple[str, nn.Module]]:
    return [(f"conv{i}", nn.Conv2d(c_in, c_out, 3, padding=1)), (f"bn{i}", nn.BatchNorm2d(c_out)),
            (f"relu{i}", nn.ReLU())]


class ConvNet(nn.Module):
    """8 conv-BN-ReLU layers, two 3×3 max-pools, one linear layer (paper width 64).

    Layers (w = width): conv0 C→w, conv1 w→2w, conv2 2w→2w, conv3 2w→4w, conv4 4w→4w, conv5 4w→4w,
    MaxPool(3), conv6 4w→4w, conv7 4w→4w, MaxPool(3), Linear(4w·h·w'→classes) — 2304 inputs for
    32×32 (or 28×28) images at width 64. The official code lists conv6 twice in an OrderedDict, so the
    duplicate key collapses and its network has exactly these 8 convolutions; we build the same
    network explicitly instead of relying on the collapse.
    """

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, width: int = 64) -> None:
        super().__init__()
        c = input_shape[0]
        w = int(width)
        layers: list[tuple[str, nn.Module]] = []
        chans = [(c, w), (w, 2 * w), (2 * w, 2 * w), (2 * w, 4 * w), (4 * w, 4 * w), (4 * w, 4 * w)]
        for i, (a, b) in enumerate(chans):
            layers += _block(a, b, i)
        layers.append(("pool0", nn.MaxPool2d(3)))
        layers += _block(4 * w, 4 * w, 6) + _block(4 * w, 4 * w, 7)
        layers += [("pool1", nn.MaxPool2d(3)), ("flatten", nn.Flatten())]
        features = nn.Sequential(OrderedDict(layers))
        with torch.no_grad():
            n_flat = features(torch.zeros(1, *input_shape)).shape[1]
        layers.append(("linear", nn.Linear(n_flat, num_classes)))
        self.model = nn.Sequential(OrderedDict(layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


@register_model("convnet")
def convnet(input_shape: tuple[int, ...], num_classes: int, width: int = 64) -> nn.Module:
    """The paper's ConvNet; ``width`` 64 as in the paper, 16 for CPU benchmarks."""
    if len(input_shape) != 3:
        raise ValueError(f"convnet needs image input (C, H, W), got {input_shape}")
    return ConvNet(input_shape, num_classes, width)
