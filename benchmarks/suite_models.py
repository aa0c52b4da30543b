"""Benchmark-only architectures: the held-out half's (issue 16, item 4; no inversion tuning has seen them) and
tuning-only networks with normalisation layers (marked TUNING below).

Registered in the model registry when this module is imported (``suite_cases.py`` does; so does breaching's
runner, through the job's ``model_modules``). They need nothing but torch, so breaching's own environment can
build them too.

- ``vgg_bn``: a VGG-style CNN, two 3×3 conv-BN-ReLU layers per stage (three stages, max-pooled), then a
  two-layer classifier head with ReLU.
- ``resnet_gn``: a ResNet-style CNN with GroupNorm (4 groups) instead of batch norm, one basic block per stage
  (widths w, 2w, 4w), SiLU activations, global average pooling and a linear head.
- ``allconv_bn_silu`` (TUNING half only): an all-convolutional CNN (strided convolutions instead of pooling),
  conv-BN-SiLU layers, global average pooling and a linear head. It gives the tuning half a trained network
  with normalisation layers and a smooth activation, the kind on which the race's strong-prior recipe matters.
- ``preact_resnet_bn`` (TUNING half only): a pre-activation ResNet (BN-ReLU-conv blocks, one per stage, widths w,
  2w, 4w), batch norm and ReLU. It gives the tuning half a residual network with batch norm, the family on which
  the held-out half measured `paper`'s pick to be the better one (the BN ResNet-18).
- ``cifar_resnet_bn`` (TUNING half only): He et al.'s CIFAR ResNet (2016, §4.2): three stages of 3×3
  conv-BN-ReLU basic blocks (post-activation) at widths w, 2w, 4w, n blocks per stage (n = 3: ResNet-20), with
  parameter-free "option A" shortcuts (subsample, zero-pad the new channels). Deeper than ``preact_resnet_bn`` and
  post-activation like the held-out ResNet-18, which differs from it in stages (4), blocks per stage (2),
  projection shortcuts and its stem; added because ``preact_resnet_bn`` did not behave like that ResNet-18.
- ``mobilenet_bn`` (HELD-OUT, added after the race's rules of issue 16 were chosen): a MobileNet-style CNN
  (Howard et al. 2017): a conv-BN-ReLU6 stem, then depthwise-separable blocks (3×3 depthwise conv-BN-ReLU6,
  1×1 pointwise conv-BN-ReLU6), global average pooling and a linear head.
- ``convnext_ln`` (HELD-OUT, added with ``mobilenet_bn``): a ConvNeXt-style CNN (Liu et al. 2022): a 2×2
  patchify stem, one block per stage (7×7 depthwise conv, LayerNorm over channels, 1×1 expansion ×4, GELU,
  1×1 projection, residual), LayerNorm + 2×2 stride-2 convolutions between stages, global pool, LayerNorm, linear.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from unlearnleak.models import register_model


def _image(name: str, input_shape: tuple[int, ...]) -> None:
    if len(input_shape) != 3:
        raise ValueError(f"{name} needs image input (C, H, W), got {input_shape}")


class VGGBN(nn.Module):
    """[conv-BN-ReLU ×2, max-pool] × 3 at widths w, 2w, 4w, then Linear → ReLU → Linear."""

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, width: int = 16, hidden: int = 128) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c = input_shape[0]
        for mult in (1, 2, 4):
            for _ in range(2):
                layers += [nn.Conv2d(c, width * mult, 3, padding=1), nn.BatchNorm2d(width * mult), nn.ReLU()]
                c = width * mult
            layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers, nn.Flatten())
        with torch.no_grad():
            flat = int(self.features(torch.zeros(1, *input_shape)).shape[1])
        self.classifier = nn.Sequential(nn.Linear(flat, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class GNBlock(nn.Module):
    """Two 3×3 conv-GroupNorm layers with SiLU and a (1×1-projected) shortcut."""

    def __init__(self, c_in: int, c_out: int, stride: int, groups: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.norm1 = nn.GroupNorm(groups, c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.norm2 = nn.GroupNorm(groups, c_out)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False),
                                          nn.GroupNorm(groups, c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.silu(self.norm1(self.conv1(x)))
        return F.silu(self.norm2(self.conv2(out)) + self.shortcut(x))


class ResNetGN(nn.Module):
    """Stem conv-GN-SiLU, one GNBlock per stage at widths w, 2w (stride 2), 4w (stride 2), pool, fc."""

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, width: int = 16, groups: int = 4) -> None:
        super().__init__()
        w = int(width)
        self.stem = nn.Sequential(nn.Conv2d(input_shape[0], w, 3, padding=1, bias=False), nn.GroupNorm(groups, w),
                                  nn.SiLU())
        self.stages = nn.Sequential(GNBlock(w, w, 1, groups), GNBlock(w, 2 * w, 2, groups),
                                    GNBlock(2 * w, 4 * w, 2, groups))
        self.fc = nn.Linear(4 * w, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.stages(self.stem(x))
        return self.fc(F.adaptive_avg_pool2d(out, 1).flatten(1))


class AllConvBNSiLU(nn.Module):
    """conv-BN-SiLU at widths w, 2w (stride 2), 2w, 4w (stride 2), 4w; global average pool; linear head."""

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, width: int = 16) -> None:
        super().__init__()
        w = int(width)
        plan = ((w, 1), (2 * w, 2), (2 * w, 1), (4 * w, 2), (4 * w, 1))
        layers: list[nn.Module] = []
        c = input_shape[0]
        for out, stride in plan:
            layers += [nn.Conv2d(c, out, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(out), nn.SiLU()]
            c = out
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(F.adaptive_avg_pool2d(self.features(x), 1).flatten(1))


class PreActBlock(nn.Module):
    """BN-ReLU-conv3×3 twice, with the (1×1-projected) shortcut taken after the first BN-ReLU."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.shortcut: nn.Module | None = None
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(x))
        skip = x if self.shortcut is None else self.shortcut(out)
        return self.conv2(F.relu(self.bn2(self.conv1(out)))) + skip


class PreActResNetBN(nn.Module):
    """Stem conv, one PreActBlock per stage at widths w, 2w (stride 2), 4w (stride 2), BN-ReLU, pool, fc."""

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, width: int = 16) -> None:
        super().__init__()
        w = int(width)
        self.stem = nn.Conv2d(input_shape[0], w, 3, padding=1, bias=False)
        self.stages = nn.Sequential(PreActBlock(w, w, 1), PreActBlock(w, 2 * w, 2), PreActBlock(2 * w, 4 * w, 2))
        self.bn = nn.BatchNorm2d(4 * w)
        self.fc = nn.Linear(4 * w, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn(self.stages(self.stem(x))))
        return self.fc(F.adaptive_avg_pool2d(out, 1).flatten(1))


class OptionABlock(nn.Module):
    """Post-activation basic block (conv-BN-ReLU, conv-BN, add, ReLU) with a parameter-free shortcut."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.stride, self.pad = stride, c_out - c_in

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        skip = x[:, :, :: self.stride, :: self.stride] if self.stride != 1 else x
        if self.pad:
            skip = F.pad(skip, (0, 0, 0, 0, 0, self.pad))
        return F.relu(out + skip)


class CifarResNetBN(nn.Module):
    """Stem conv-BN-ReLU, n OptionABlocks per stage at widths w, 2w (stride 2), 4w (stride 2), pool, fc."""

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, width: int = 16, blocks: int = 3) -> None:
        super().__init__()
        w = int(width)
        self.stem = nn.Sequential(nn.Conv2d(input_shape[0], w, 3, padding=1, bias=False), nn.BatchNorm2d(w),
                                  nn.ReLU())
        layers: list[nn.Module] = []
        c = w
        for mult, stride in ((1, 1), (2, 2), (4, 2)):
            for b in range(int(blocks)):
                layers.append(OptionABlock(c, w * mult, stride if b == 0 else 1))
                c = w * mult
        self.stages = nn.Sequential(*layers)
        self.fc = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(F.adaptive_avg_pool2d(self.stages(self.stem(x)), 1).flatten(1))


class MobileNetBN(nn.Module):
    """Stem conv-BN-ReLU6, depthwise-separable blocks at widths w, 2w (s2), 2w, 4w (s2), 4w, pool, fc."""

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, width: int = 16) -> None:
        super().__init__()
        w = int(width)
        layers: list[nn.Module] = [nn.Conv2d(input_shape[0], w, 3, padding=1, bias=False), nn.BatchNorm2d(w),
                                   nn.ReLU6()]
        c = w
        for out, stride in ((w, 1), (2 * w, 2), (2 * w, 1), (4 * w, 2), (4 * w, 1)):
            layers += [nn.Conv2d(c, c, 3, stride=stride, padding=1, groups=c, bias=False), nn.BatchNorm2d(c),
                       nn.ReLU6(), nn.Conv2d(c, out, 1, bias=False), nn.BatchNorm2d(out), nn.ReLU6()]
            c = out
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(F.adaptive_avg_pool2d(self.features(x), 1).flatten(1))


class ChannelNorm(nn.Module):
    """LayerNorm over the channels of an (N, C, H, W) map (ConvNeXt's channels-first LayerNorm)."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class ConvNeXtBlock(nn.Module):
    """7×7 depthwise conv, channel LayerNorm, 1×1 conv to 4c, GELU, 1×1 conv back to c, plus the input."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.dw = nn.Conv2d(c, c, 7, padding=3, groups=c)
        self.norm = ChannelNorm(c)
        self.up = nn.Conv2d(c, 4 * c, 1)
        self.down = nn.Conv2d(4 * c, c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.down(F.gelu(self.up(self.norm(self.dw(x)))))


class ConvNeXtLN(nn.Module):
    """2×2 patchify stem + norm, a ConvNeXtBlock per stage at widths w, 2w, 4w (norm + 2×2/2 conv between)."""

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, width: int = 16) -> None:
        super().__init__()
        w = int(width)
        layers: list[nn.Module] = [nn.Conv2d(input_shape[0], w, 2, stride=2), ChannelNorm(w), ConvNeXtBlock(w)]
        for c_in, c_out in ((w, 2 * w), (2 * w, 4 * w)):
            layers += [ChannelNorm(c_in), nn.Conv2d(c_in, c_out, 2, stride=2), ConvNeXtBlock(c_out)]
        self.features = nn.Sequential(*layers)
        self.norm = nn.LayerNorm(4 * w)
        self.fc = nn.Linear(4 * w, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.norm(F.adaptive_avg_pool2d(self.features(x), 1).flatten(1)))


@register_model("vgg_bn")
def vgg_bn(input_shape: tuple[int, ...], num_classes: int, width: int = 16, hidden: int = 128) -> nn.Module:
    """VGG-style CNN with batch norm (held-out suite case)."""
    _image("vgg_bn", input_shape)
    return VGGBN(input_shape, num_classes, width, hidden)


@register_model("resnet_gn")
def resnet_gn(input_shape: tuple[int, ...], num_classes: int, width: int = 16, groups: int = 4) -> nn.Module:
    """ResNet-style CNN with GroupNorm (held-out suite case)."""
    _image("resnet_gn", input_shape)
    return ResNetGN(input_shape, num_classes, width, groups)


@register_model("allconv_bn_silu")
def allconv_bn_silu(input_shape: tuple[int, ...], num_classes: int, width: int = 16) -> nn.Module:
    """All-convolutional CNN with batch norm and SiLU (tuning suite case)."""
    _image("allconv_bn_silu", input_shape)
    return AllConvBNSiLU(input_shape, num_classes, width)


@register_model("preact_resnet_bn")
def preact_resnet_bn(input_shape: tuple[int, ...], num_classes: int, width: int = 16) -> nn.Module:
    """Pre-activation ResNet with batch norm and ReLU (tuning suite case)."""
    _image("preact_resnet_bn", input_shape)
    return PreActResNetBN(input_shape, num_classes, width)


@register_model("cifar_resnet_bn")
def cifar_resnet_bn(input_shape: tuple[int, ...], num_classes: int, width: int = 16, blocks: int = 3) -> nn.Module:
    """He et al.'s CIFAR ResNet with batch norm, option-A shortcuts (tuning suite case; blocks=3: ResNet-20)."""
    _image("cifar_resnet_bn", input_shape)
    return CifarResNetBN(input_shape, num_classes, width, blocks)


@register_model("mobilenet_bn")
def mobilenet_bn(input_shape: tuple[int, ...], num_classes: int, width: int = 16) -> nn.Module:
    """MobileNet-style depthwise-separable CNN with batch norm and ReLU6 (held-out suite case)."""
    _image("mobilenet_bn", input_shape)
    return MobileNetBN(input_shape, num_classes, width)


@register_model("convnext_ln")
def convnext_ln(input_shape: tuple[int, ...], num_classes: int, width: int = 16) -> nn.Module:
    """ConvNeXt-style CNN with LayerNorm and GELU (held-out suite case)."""
    _image("convnext_ln", input_shape)
    return ConvNeXtLN(input_shape, num_classes, width)
