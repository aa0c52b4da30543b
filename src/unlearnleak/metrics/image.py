"""Image reconstruction metrics (MSE, PSNR, SSIM), defined once for the whole package.

Every function takes two batches ``(k, C, H, W)`` of images in [0, 1], the reconstruction first and
the ground truth second, and returns one value per sample as a float64 CPU tensor of shape ``(k,)``.
Definitions, ranges and directions are in docs/metrics.md.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from skimage.metrics import structural_similarity
from torch import Tensor

from unlearnleak.errors import ConfigError

if TYPE_CHECKING:
    from unlearnleak.metrics.lpips import LPIPS

SSIM_SIGMA = 1.5
SSIM_WINDOW = 11
"""Wang et al. (2004): Gaussian weights with σ = 1.5, truncated to an 11×11 window (scikit-image's choice)."""

_RANGE_TOLERANCE = 1e-6


class MetricInputError(ConfigError, ValueError):
    """Inputs a metric cannot score: wrong type, shape, dtype, range or size."""


def check_image_pair(x: Tensor, ref: Tensor) -> tuple[Tensor, Tensor]:
    """Validate a (reconstruction, reference) pair of ``(k, C, H, W)`` batches in [0, 1]; detach them.

    Raises:
        MetricInputError: if either is not a floating tensor of that shape, shapes differ, k is 0, or a
            value is not finite or lies outside [0, 1] (beyond a 1e-6 rounding tolerance).
    """
    for name, t in (("reconstruction", x), ("reference", ref)):
        if not isinstance(t, Tensor):
            raise MetricInputError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.ndim != 4:
            raise MetricInputError(f"{name} must be an image batch (k, C, H, W), got shape {tuple(t.shape)}")
        if not t.is_floating_point():
            raise MetricInputError(f"{name} must be a floating-point tensor in [0, 1], got dtype {t.dtype}")
    if x.shape != ref.shape:
        raise MetricInputError(
            f"reconstruction {tuple(x.shape)} and reference {tuple(ref.shape)} differ in shape")
    if x.shape[0] == 0:
        raise MetricInputError("cannot score an empty batch (k = 0)")
    for name, t in (("reconstruction", x), ("reference", ref)):
        if not bool(torch.isfinite(t).all()):
            raise MetricInputError(f"{name} contains NaN or infinite values")
        lo, hi = float(t.min()), float(t.max())
        if lo < -_RANGE_TOLERANCE or hi > 1 + _RANGE_TOLERANCE:
            raise MetricInputError(
                f"{name} must lie in [0, 1] pixel space, got values in [{lo:.4g}, {hi:.4g}] "
                "(undo the dataset normalisation and clamp before scoring)")
    return x.detach(), ref.detach()


def mse(x: Tensor, ref: Tensor) -> Tensor:
    """Mean squared error per sample over all channels and pixels, in [0, 1] pixel space. Lower is better."""
    x, ref = check_image_pair(x, ref)
    return _mse(x, ref)


def _mse(x: Tensor, ref: Tensor) -> Tensor:
    return (x.double() - ref.double()).pow(2).flatten(1).mean(dim=1).cpu()  # (k,)


def psnr(x: Tensor, ref: Tensor, peak: float = 1.0) -> Tensor:
    """Standard PSNR per sample, ``10·log10(peak² / MSE)`` in dB (+inf if identical). Higher is better."""
    if not (isinstance(peak, int | float) and math.isfinite(peak) and peak > 0):
        raise MetricInputError(f"peak must be a positive finite number, got {peak!r}")
    return 10 * torch.log10(float(peak) ** 2 / mse(x, ref))


def psnr_std_scaled(x: Tensor, ref: Tensor, std: Sequence[float] | Tensor) -> Tensor:
    """The official code's PSNR variant (``factor = 1/ds``), only for comparing with its numbers.

    Per sample: ``mean_c 10·log10((1/std_c)² / MSE)`` with MSE over all channels and pixels, exactly as
    ``psnr(..., factor=1/ds)`` of the official code (inverting-gradients' ``metrics.psnr``). This equals
    ``psnr(x, ref) + mean_c 20·log10(1/std_c)``: about +12 dB on CIFAR-10 for the same reconstruction.
    Not a standard PSNR; report :func:`psnr` as the headline number.

    Args:
        std: the dataset's per-channel standard deviation (length C), as used for normalisation.
    """
    x, ref = check_image_pair(x, ref)
    std_t = torch.as_tensor(std, dtype=torch.float64).flatten()
    if std_t.numel() != x.shape[1]:
        raise MetricInputError(f"std has {std_t.numel()} entries but the images have {x.shape[1]} channels")
    if not bool(torch.isfinite(std_t).all()) or bool((std_t <= 0).any()):
        raise MetricInputError(f"std must be positive and finite, got {std_t.tolist()}")
    per_channel = 10 * torch.log10((1 / std_t[None, :]) ** 2 / _mse(x, ref)[:, None])  # (k, C)
    return per_channel.mean(dim=1)


def ssim(x: Tensor, ref: Tensor, *, win_size: int | None = None) -> Tensor:
    """Mean SSIM per sample (Wang et al. 2004) from scikit-image, channels averaged. Higher is better, max 1.

    Uses ``skimage.metrics.structural_similarity`` with ``gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False, data_range=1.0, channel_axis=0`` (the paper's settings; an 11×11
    Gaussian window), so images must be at least 11×11.

    Args:
        win_size: only for images smaller than 11×11: an odd window size ≥ 3 that fits the image. The
            Gaussian stays σ = 1.5 and only the border crop shrinks, so such values are not comparable
            with the reference setting.

    Raises:
        MetricInputError: if the images are smaller than the window.
    """
    x, ref = check_image_pair(x, ref)
    height, width = x.shape[-2:]
    window = SSIM_WINDOW if win_size is None else win_size
    if win_size is not None and (not isinstance(win_size, int) or win_size < 3 or win_size % 2 == 0):
        raise MetricInputError(f"win_size must be an odd integer ≥ 3, got {win_size!r}")
    if min(height, width) < window:
        hint = ("; pass an odd win_size ≤ the image side to score anyway (not comparable with the "
                "reference setting)") if win_size is None else ""
        raise MetricInputError(
            f"SSIM needs images of at least {window}×{window} pixels for its {window}×{window} window, "
            f"got {height}×{width}{hint}")
    xs, refs = x.double().cpu().numpy(), ref.double().cpu().numpy()
    values = [
        structural_similarity(a, b, gaussian_weights=True, sigma=SSIM_SIGMA, use_sample_covariance=False,
                              data_range=1.0, channel_axis=0, win_size=win_size)
        for a, b in zip(xs, refs, strict=True)
    ]
    return torch.tensor(values, dtype=torch.float64)


def match_by_mse(x: Tensor, ref: Tensor) -> Tensor:
    """Pair jointly reconstructed samples with their ground truth by minimum total MSE (Hungarian algorithm).

    A joint reconstruction of k samples comes back in arbitrary order; this finds the assignment that
    minimises the summed per-pair MSE (``scipy.optimize.linear_sum_assignment``).

    Returns:
        ``perm`` (int64, shape (k,)) such that ``x[perm[i]]`` is the reconstruction matched to ``ref[i]``.
        Works for image batches and for tabular rows ``(k, D)`` alike.
    """
    if not isinstance(x, Tensor) or not isinstance(ref, Tensor):
        raise MetricInputError("match_by_mse takes two tensors")
    if x.shape != ref.shape or x.ndim < 2 or x.shape[0] == 0:
        raise MetricInputError(
            f"match_by_mse needs two non-empty batches of the same shape (k, ...), got {tuple(x.shape)} "
            f"and {tuple(ref.shape)}")
    a = x.detach().double().flatten(1).cpu()
    b = ref.detach().double().flatten(1).cpu()
    if not bool(torch.isfinite(a).all()) or not bool(torch.isfinite(b).all()):
        raise MetricInputError("match_by_mse inputs contain NaN or infinite values")
    cost = torch.cdist(a, b).pow(2) / a.shape[1]  # (k, k): cost[i, j] = MSE(x[i], ref[j])
    rows, cols = linear_sum_assignment(cost.numpy())
    perm = np.empty(len(rows), dtype=np.int64)
    perm[cols] = rows
    return torch.from_numpy(perm)


def image_metrics(x: Tensor, ref: Tensor, *, lpips: LPIPS | None = None,
                  std: Sequence[float] | Tensor | None = None) -> list[dict[str, Any]]:
    """All image metrics per sample, as plain floats, for result records.

    Keys: ``mse``, ``psnr``, ``ssim``, ``lpips`` and, only when ``std`` is given, ``psnr_std_scaled``.
    ``lpips`` is None when no LPIPS model is given (weights unavailable) or the images are smaller than
    LPIPS-AlexNet accepts (31×31); ``ssim`` is None for images smaller than 11×11. Never 0 in place of
    a missing value. ``psnr`` is ``inf`` for a perfect reconstruction.
    """
    x, ref = check_image_pair(x, ref)
    k, _, height, width = x.shape
    columns: dict[str, list[float] | list[None]] = {
        "mse": _mse(x, ref).tolist(),
        "psnr": psnr(x, ref).tolist(),
        "ssim": ssim(x, ref).tolist() if min(height, width) >= SSIM_WINDOW else [None] * k,
    }
    if lpips is not None and min(height, width) >= lpips.min_size:
        columns["lpips"] = lpips(x, ref).tolist()
    else:
        columns["lpips"] = [None] * k
    if std is not None:
        columns["psnr_std_scaled"] = psnr_std_scaled(x, ref, std).tolist()
    return [{name: values[i] for name, values in columns.items()} for i in range(k)]
