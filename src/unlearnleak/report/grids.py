"""Reconstruction grids: ground truth next to what the attack recovered, as PNG (no display needed)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from unlearnleak.storage import atomic_write


def _to_uint8(images: torch.Tensor) -> np.ndarray:
    """(n, C, H, W) in [0, 1] → (n, H, W, 3) uint8 (grayscale repeated to RGB)."""
    x = images.detach().to("cpu", torch.float32).clamp(0, 1)
    if x.ndim != 4:
        raise ValueError(f"expected images of shape (n, C, H, W), got {tuple(x.shape)}")
    if x.shape[1] == 1:
        x = x.repeat(1, 3, 1, 1)
    elif x.shape[1] != 3:
        raise ValueError(f"expected 1 or 3 channels, got {x.shape[1]}")
    return (x.permute(0, 2, 3, 1).numpy() * 255 + 0.5).astype(np.uint8)


def reconstruction_grid(ground_truth: torch.Tensor | None, recovered: torch.Tensor, *,
                        captions: Sequence[str] | None = None, scale: int = 4, pad: int = 4) -> Image.Image:
    """An image with one column per sample: ground truth on top (if given), recovered below.

    Args:
        ground_truth: (k, C, H, W) in [0, 1], matched to ``recovered`` sample by sample, or None.
        recovered: (k, C, H, W) in [0, 1].
        captions: one short line per sample (e.g. "PSNR 18.2 dB"), drawn under its column.
        scale: nearest-neighbour magnification (32×32 CIFAR images are tiny).
        pad: white border between tiles, in output pixels.
    """
    rec = _to_uint8(recovered)
    rows = [rec] if ground_truth is None else [_to_uint8(ground_truth), rec]
    if ground_truth is not None and rows[0].shape != rec.shape:
        raise ValueError(f"ground truth {rows[0].shape} and recovered {rec.shape} differ in shape")
    k, h, w, _ = rec.shape
    th, tw = h * scale, w * scale
    caption_h = 14 if captions else 0
    width = k * tw + (k + 1) * pad
    height = len(rows) * th + (len(rows) + 1) * pad + caption_h
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    for r, batch in enumerate(rows):
        for i in range(k):
            tile = Image.fromarray(batch[i]).resize((tw, th), Image.Resampling.NEAREST)
            canvas.paste(tile, (pad + i * (tw + pad), pad + r * (th + pad)))
    if captions:
        draw = ImageDraw.Draw(canvas)
        y = len(rows) * (th + pad) + pad // 2
        for i, text in enumerate(captions[:k]):
            draw.text((pad + i * (tw + pad), y), str(text)[: max(4, tw // 6)], fill=(0, 0, 0))
    return canvas


def save_reconstruction_grid(path: str | Path, ground_truth: torch.Tensor | None, recovered: torch.Tensor, *,
                             captions: Sequence[str] | None = None, scale: int = 4) -> Path:
    """Write :func:`reconstruction_grid` as a PNG, atomically."""
    image = reconstruction_grid(ground_truth, recovered, captions=captions, scale=scale)
    return atomic_write(path, lambda tmp: image.save(tmp, format="PNG"))
