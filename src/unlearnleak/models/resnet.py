"""CIFAR-style ResNet-18: 3×3 stride-1 stem, no max-pool, BasicBlocks [2, 2, 2, 2] (official code's ResNet18)."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from unlearnleak.models.base import register_model


class BasicBlock(nn.Module):
    """Two 3×3 conv-BN layers with an identity (or 1×1 projection) shortcut."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut: nn.Module = nn.Sequential()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False),
                                          nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet18(nn.Module):
    """ResNet-18 for small images: stem conv3×3/1, stages of width w, 2w, 4w, 8w, global average pool, fc."""

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, width: int = 64) -> None:
        super().__init__()
        w = int(width)
        self.conv1 = nn.Conv2d(input_shape[0], w, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(w)
        stages = []
        c = w
        for i, (mult, stride) in enumerate([(1, 1), (2, 2), (4, 2), (8, 2)]):
            blocks = [BasicBlock(c, w * mult, stride), BasicBlock(w * mult, w * mult, 1)]
            c = w * mult
            stages.append((f"layer{i + 1}", nn.Sequential(*blocks)))
        self.layer1, self.layer2, self.layer3, self.layer4 = (stage for _, stage in stages)
        self.linear = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.linear(out)


@register_model("resnet18")
def resnet18(input_shape: tuple[int, ...], num_classes: int, width: int = 64) -> nn.Module:
    """CIFAR-style ResNet-18 (width 64 as in the official code)."""
    if len(input_shape) != 3:
        raise ValueError(f"resnet18 needs image input (C, H, W), got {input_shape}")
    return ResNet18(input_shape, num_classes, width)
