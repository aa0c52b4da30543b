"""Conversions from on-disk numpy arrays to the tensors a Dataset holds, done once for every loader."""

from __future__ import annotations

import numpy as np
import torch


def images_to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 images (N, C, H, W) → float32 tensor in [0, 1] (value / 255, exact for every byte)."""
    return torch.from_numpy(np.ascontiguousarray(images)).to(torch.float32).div_(255.0)


def labels_to_tensor(labels: np.ndarray) -> torch.Tensor:
    """Integer labels of any shape with N entries → int64 tensor (N,)."""
    return torch.from_numpy(np.asarray(labels).reshape(-1).astype(np.int64))


def channel_stats(images: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and (population) std of uint8 images (N, C, H, W), in [0, 1] units."""
    n, c = images.shape[:2]
    if n == 0:
        raise ValueError("cannot compute channel statistics of zero images")
    means: list[float] = []
    stds: list[float] = []
    for ch in range(c):
        plane = images[:, ch].astype(np.float64) / 255.0
        means.append(round(float(plane.mean()), 5))
        stds.append(round(float(plane.std()), 5))
    return tuple(means), tuple(stds)
