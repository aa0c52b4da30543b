"""Trivial reconstructions that need no model pair: every image-attack number is read beside these (defined once).

Each baseline is an image batch built from the truth (or from the dataset alone) and scored with the same
metrics as a reconstruction. The names say what each one is, so no two mean different things:

- ``dataset_mean_colour``: every pixel the dataset's mean colour (the normalisation mean). What an attacker
  knows without the pair; the floor an attack must clear to have learnt anything about the photo.
- ``own_mean_colour``: every pixel the true image's own mean colour. Needs the truth; "the colour alone".
- ``thumbnail_4x4``: the true image average-pooled to 4×4, then upsampled by nearest neighbour (blocks).
  Needs the truth; "the colour layout alone". Beating it means detail beyond a 4×4 grid of colours.

docs/metrics.md, "Baselines", states the same definitions.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch.nn import functional as F

THUMBNAIL_SIDE = 4

__all__ = ["BASELINE_NAMES", "THUMBNAIL_SIDE", "baseline_images", "dataset_mean_colour", "own_mean_colour",
           "thumbnail_4x4"]


def dataset_mean_colour(truth: torch.Tensor, mean: Sequence[float]) -> torch.Tensor:
    """(k, C, H, W): every pixel the dataset's per-channel mean colour ``mean`` (C values in [0, 1])."""
    colour = torch.as_tensor(tuple(mean), dtype=truth.dtype, device=truth.device).reshape(1, -1, 1, 1)
    if colour.shape[1] != truth.shape[1]:
        raise ValueError(f"dataset mean has {colour.shape[1]} channels, the images {truth.shape[1]}")
    return colour.clamp(0, 1).expand_as(truth).contiguous()


def own_mean_colour(truth: torch.Tensor) -> torch.Tensor:
    """(k, C, H, W): every pixel the image's own per-channel mean colour."""
    return truth.mean(dim=(2, 3), keepdim=True).expand_as(truth).contiguous()


def thumbnail_4x4(truth: torch.Tensor) -> torch.Tensor:
    """(k, C, H, W): the image average-pooled to 4×4 and upsampled back by nearest neighbour."""
    small = F.adaptive_avg_pool2d(truth, THUMBNAIL_SIDE)
    return F.interpolate(small, size=tuple(truth.shape[-2:]), mode="nearest").clamp(0, 1)


BASELINE_NAMES = ("dataset_mean_colour", "own_mean_colour", "thumbnail_4x4")


def baseline_images(truth: torch.Tensor, dataset_mean: Sequence[float] | None) -> dict[str, torch.Tensor]:
    """Every baseline of an image batch (k, C, H, W) in [0, 1], by name (``dataset_mean_colour`` only when the
    dataset's mean colour is known)."""
    makers: dict[str, Callable[[], torch.Tensor]] = {
        "own_mean_colour": lambda: own_mean_colour(truth), "thumbnail_4x4": lambda: thumbnail_4x4(truth)}
    if dataset_mean is not None:
        makers = {"dataset_mean_colour": lambda: dataset_mean_colour(truth, dataset_mean), **makers}
    return {name: make() for name, make in makers.items()}
