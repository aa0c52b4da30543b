"""Reconstruction and inference metrics, defined once (docs/metrics.md has every definition).

Image metrics take ``(k, C, H, W)`` batches in [0, 1], reconstruction first, reference second, and
return per-sample float64 tensors of shape ``(k,)``.
"""

from unlearnleak.metrics.baselines import BASELINE_NAMES, baseline_images
from unlearnleak.metrics.image import (
    MetricInputError,
    check_image_pair,
    image_metrics,
    match_by_mse,
    mse,
    psnr,
    psnr_std_scaled,
    ssim,
)
from unlearnleak.metrics.lpips import LPIPS, default_lpips_path, download_lpips_weights, load_lpips
from unlearnleak.metrics.tabular import feature_errors, label_accuracy

__all__ = [
    "BASELINE_NAMES",
    "LPIPS",
    "MetricInputError",
    "baseline_images",
    "check_image_pair",
    "default_lpips_path",
    "download_lpips_weights",
    "feature_errors",
    "image_metrics",
    "label_accuracy",
    "load_lpips",
    "match_by_mse",
    "mse",
    "psnr",
    "psnr_std_scaled",
    "ssim",
]
