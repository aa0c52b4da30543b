"""A learned decoder from a model's penultimate features to images: the learned prior's network (issue 16).

The server owns its training pipeline, so it holds images of the same distribution that are neither D_ft
nor D_u (θ0's public pretraining set). On them it trains a decoder D from the attacked model's
penultimate features h(x) — the input of the output layer, the part of the input that ∇* gives away in
closed form (``closed_forms.penultimate_features``) — back to the image x, *through the model itself*: the
features are computed by the model, and an optional feature-consistency term ‖h(D(h)) − h‖²/‖h‖² (also
through the model) joins the pixel loss. This is the generation-based attack of FGLA (Xue et al., INFOCOM
2023), applied as in learned inversion of unlearning updates (Zhang et al., arXiv 2505.11097).

Training is deterministic for a seed on one machine and thread count (CPU), shows a progress bar, and is
cached in the user cache folder (``unlearnleak.cache``) under a hash of the model's weights (buffers
included), its architecture, the images and the settings. A cache entry records that key and is refused —
never used — when it does not match the model and data it is asked for.
"""

from __future__ import annotations

import contextlib
import copy
import fcntl
import hashlib
import json
import math
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file
from torch import nn
from torch.nn import functional as F

from unlearnleak.attacks.closed_forms import output_layer
from unlearnleak.attacks.feature_recovery.gradient_sketch import GradientSketch, drawn_labels, sketched_gradients
from unlearnleak.attacks.feature_recovery.public_data import PublicImages
from unlearnleak.cache import cache_dir as user_cache_dir
from unlearnleak.errors import CheckpointError, ConfigError
from unlearnleak.models import ModelSpec
from unlearnleak.progress import track, uncounted
from unlearnleak.storage import save_tensors_atomic

DECODER_FORMAT = "unlearnleak.decoder/2"  # the architecture's version (part of every cache key)
CACHE_FOLDER = "decoders"


class DecoderConfig(BaseModel):
    """How the decoder is trained (part of its cache key)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    epochs: int = Field(6, ge=1)
    batch_size: int = Field(64, ge=1)
    lr: float = Field(3e-3, gt=0)
    width: int = Field(32, ge=8)  # channels at the coarsest resolution, halved at each doubling (≥ 16)
    flips: bool = True  # also train on the horizontally flipped images (with their own features)
    feature_weight: float = Field(0.0, ge=0)  # weight of ‖h(D(h)) − h‖²/‖h‖² through the model
    feature_share: float = Field(0.25, gt=0, le=1)  # last share of the epochs that add that term
    max_images: int | None = Field(None, ge=1)  # only the first this many public images
    seed: int = 0
    # n > 0: decode from the penultimate features AND the sample's own gradient (k = 1: ∇* is that gradient up to
    # scale), unit-normalised and count-sketched to n entries per parameter tensor (tensors of at most n entries
    # kept whole; ``gradient_sketch.py``). 0: the penultimate features alone (cheaper to train, weaker: measured
    # in docs/feature_recovery.md, "Gradient inputs").
    gradient_sketch: int = Field(1024, ge=0)


class FeatureDecoder(nn.Module):
    """h (n, d) → images (n, C, H, W) in [0, 1]: standardise h, a linear map to a (width, H/8, W/8) grid, two ×2
    (nearest) upsampling conv-BN-ReLU blocks, then a sub-pixel convolution (4·C channels, ``PixelShuffle``) to
    full size through a sigmoid. The sub-pixel head halves the training time of a full-resolution conv block
    at the same PSNR (measured on LeNet features: 15.28 vs 15.31 dB after 4 epochs)."""

    def __init__(self, features: int, output_shape: tuple[int, int, int], width: int = 32) -> None:
        super().__init__()
        c, h, w = (int(v) for v in output_shape)
        self.features, self.output_shape, self.width = int(features), (c, h, w), int(width)
        self.grid = (max(1, math.ceil(h / 8)), max(1, math.ceil(w / 8)))
        self.feature_mean: torch.Tensor
        self.feature_std: torch.Tensor
        self.register_buffer("feature_mean", torch.zeros(features))
        self.register_buffer("feature_std", torch.ones(features))
        self.project = nn.Linear(features, width * self.grid[0] * self.grid[1])
        last = max(width // 2, 16)
        self.body = nn.Sequential(
            nn.BatchNorm2d(width), nn.ReLU(), nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
            nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(width, last, 3, padding=1), nn.BatchNorm2d(last),
            nn.ReLU(),
            nn.Conv2d(last, 4 * c, 3, padding=1), nn.PixelShuffle(2))

    def architecture(self) -> dict[str, Any]:
        """What rebuilds this network (stored beside its weights)."""
        return {"features": self.features, "output_shape": list(self.output_shape), "width": self.width}

    def standardise(self, h: torch.Tensor) -> None:
        """Set the input standardisation from training features (n, d)."""
        self.feature_mean.copy_(h.mean(dim=0))
        self.feature_std.copy_(h.std(dim=0).clamp_min(1e-3 * float(h.std().clamp_min(1e-12))))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        z = self.project((h - self.feature_mean) / self.feature_std)
        z = self.body(z.view(-1, self.width, *self.grid))
        if tuple(z.shape[-2:]) != self.output_shape[1:]:
            z = F.interpolate(z, size=self.output_shape[1:], mode="bilinear", align_corners=False)
        return torch.sigmoid(z)


@contextlib.contextmanager
def _capture_features(model: nn.Module, num_classes: int) -> Iterator[list[torch.Tensor]]:
    """Capture the input of the model's output layer on every forward pass."""
    _, layer = output_layer(model, num_classes)
    captured: list[torch.Tensor] = []
    handle = layer.register_forward_pre_hook(lambda _, inputs: captured.append(inputs[0]))
    try:
        yield captured
    finally:
        handle.remove()


def penultimate(model: nn.Module, x: torch.Tensor, num_classes: int, *, batch_size: int = 256,
                desc: str | None = None) -> torch.Tensor:
    """The output layer's input h(x), shape (n, d), float32 on the CPU (model in eval mode, no gradient).

    ``desc`` shows a progress bar over the batches: on a wide network this pass is most of a decoder's training
    time (ConvNet width 64 on 24,000 images: about half an hour on one core).
    """
    device = next(model.parameters()).device
    out = []
    starts = range(0, x.shape[0], batch_size)
    with torch.no_grad(), _capture_features(model.eval(), num_classes) as captured:
        for start in (starts if desc is None else track(starts, desc)):
            captured.clear()
            model(x[start:start + batch_size].to(device))
            out.append(captured[-1].reshape(captured[-1].shape[0], -1).float().cpu())
    return torch.cat(out)


def train_decoder(model: nn.Module, images: torch.Tensor, num_classes: int, config: DecoderConfig, *,
                  desc: str = "training the learned prior's decoder") -> FeatureDecoder:
    """Fit a decoder from ``model``'s penultimate features (and, with ``config.gradient_sketch``, the images' own
    sketched gradients, each with a label drawn from the model's predictions) to ``images`` (n, C, H, W) in
    [0, 1].

    Pixel MSE on every batch; in the last ``feature_share`` of the epochs, plus ``feature_weight`` times the
    relative feature error of the decoded images through the model (the model's weights stay fixed).
    """
    device = next(model.parameters()).device
    sketch = GradientSketch.of(model, config.gradient_sketch, config.seed) if config.gradient_sketch else None
    frozen = copy.deepcopy(model).eval().requires_grad_(False)
    x = images[:config.max_images].detach().float()
    if config.flips:
        x = torch.cat([x, x.flip(-1)])
    h = penultimate(frozen, x, num_classes, desc=f"{desc}: the model's features of {x.shape[0]} images")
    width = h.shape[1]  # the penultimate features' part of the decoder's input
    if sketch is not None:
        rows = images[:config.max_images]
        own = drawn_labels(frozen, rows, config.seed, desc=f"{desc}: the model's predictions of {len(rows)} images")
        y = torch.cat([own, own]) if config.flips else own
        h = torch.cat([h, sketched_gradients(frozen, x, y, sketch,
                                             desc=f"{desc}: the gradients of {x.shape[0]} images")], 1)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        decoder = FeatureDecoder(h.shape[1], tuple(x.shape[1:]), config.width)  # type: ignore[arg-type]
    decoder.standardise(h)
    decoder.to(device).train()
    generator = torch.Generator().manual_seed(config.seed + 1)
    n = x.shape[0]
    per_epoch = math.ceil(n / config.batch_size)
    total = config.epochs * per_epoch
    optimizer = uncounted(torch.optim.Adam(decoder.parameters(), lr=config.lr))  # its own progress: epochs
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda t: 0.5 * (1 + math.cos(math.pi * t / total)))
    feature_from = None
    if config.feature_weight:
        feature_from = config.epochs - max(1, round(config.feature_share * config.epochs))
    with _capture_features(frozen, num_classes) as captured:
        for epoch in track(range(config.epochs), desc, total=config.epochs):
            order = torch.randperm(n, generator=generator)
            for b in range(per_epoch):
                rows = order[b * config.batch_size:(b + 1) * config.batch_size]
                hb, xb = h[rows].to(device), x[rows].to(device)
                out = decoder(hb)
                loss = F.mse_loss(out, xb)
                if feature_from is not None and epoch >= feature_from:
                    captured.clear()
                    frozen(out)
                    got, want = captured[-1].reshape(out.shape[0], -1), hb[:, :width]
                    rel = (got - want).pow(2).sum(1) / want.pow(2).sum(1).clamp_min(1e-12)
                    loss = loss + config.feature_weight * rel.mean()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
    return decoder.eval().requires_grad_(False)


# ---- the cache ------------------------------------------------------------------------------------------------


def state_digest(state: dict[str, torch.Tensor]) -> str:
    """sha256 of a state dict: names, dtypes, shapes and values (buffers included)."""
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def decoder_key(spec: ModelSpec, state: dict[str, torch.Tensor], data: PublicImages,
                config: DecoderConfig) -> dict[str, Any]:
    """What a decoder depends on: the model (architecture and weights), the images and the settings."""
    settings = config.model_dump(mode="json", exclude={"gradient_sketch"} if not config.gradient_sketch else None)
    return {"format": DECODER_FORMAT, "spec": spec.to_dict(), "model_sha256": state_digest(state),
            "data_sha256": data.digest, "images": len(data), "config": settings}


def cache_path(key: dict[str, Any], cache_dir: str | Path | None = None) -> Path:
    """Where the decoder of ``key`` is cached: <user cache>/decoders/<model name>-<hash of key>.safetensors."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", str(key["spec"]["name"]))[-40:]
    return user_cache_dir(cache_dir) / CACHE_FOLDER / f"{name}-{digest}.safetensors"


def save_decoder(path: str | Path, decoder: FeatureDecoder, key: dict[str, Any], seconds: float) -> Path:
    """Write the decoder's weights with its key and architecture as metadata (atomically)."""
    meta = {"format": DECODER_FORMAT, "key": json.dumps(key, sort_keys=True),
            "architecture": json.dumps(decoder.architecture()), "seconds": f"{seconds:.1f}"}
    return save_tensors_atomic(path, decoder.state_dict(), meta)


def load_decoder(path: str | Path, key: dict[str, Any]) -> FeatureDecoder:
    """The decoder stored at ``path``, refused unless it was trained for exactly ``key``.

    Raises:
        CheckpointError: unreadable, not a decoder file, or trained on another model, other data or
            other settings (the recorded key differs).
    """
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as handle:
            meta = dict(handle.metadata() or {})
        tensors = load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"decoder file {path} is not readable: {exc}") from exc
    if meta.get("format") != DECODER_FORMAT or "key" not in meta or "architecture" not in meta:
        raise CheckpointError(f"{path} is not a decoder file written by unlearnleak ({DECODER_FORMAT})")
    try:
        stored = json.loads(meta["key"])
        arch = json.loads(meta["architecture"])
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"decoder file {path} has corrupt metadata: {exc}") from exc
    if stored != key:
        differs = [part for part in ("spec", "model_sha256", "data_sha256", "config") if stored.get(part) != key[part]]
        what = {"spec": "another architecture", "model_sha256": "another model's weights",
                "data_sha256": "other public images", "config": "other decoder settings"}
        raise CheckpointError(
            f"decoder cache {path} was trained for {', '.join(what[d] for d in differs) or 'another key'} "
            f"(model sha256 {str(stored.get('model_sha256'))[:12]}…, expected {key['model_sha256'][:12]}…), "
            "not for this model: refusing to use it; delete the file to retrain")
    decoder = FeatureDecoder(int(arch["features"]), tuple(arch["output_shape"]), int(arch["width"]))
    try:
        decoder.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"decoder file {path} does not fit its recorded architecture: "
                              f"{str(exc).splitlines()[0]}") from exc
    return decoder.eval().requires_grad_(False)


@contextlib.contextmanager
def _lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock beside ``path``: parallel runs train one decoder once, the others load it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def cached_decoder(model: nn.Module, spec: ModelSpec, state: dict[str, torch.Tensor], data: PublicImages,
                   config: DecoderConfig, *,
                   cache_dir: str | Path | None = None) -> tuple[FeatureDecoder, dict[str, Any]]:
    """The decoder for ``model`` (built from ``spec`` and ``state``) trained on ``data``: from the cache when
    there (checked against the key), else trained now and cached.

    Returns:
        The decoder (eval mode, on the model's device) and what happened: ``{"cache": "hit"|"miss", "path",
        "seconds", "model_sha256", ...}``.
    """
    if data.x.shape[1:] != torch.Size(spec.input_shape):
        raise ConfigError(f"public images of shape {tuple(data.x.shape[1:])} do not fit the model's input "
                          f"{tuple(spec.input_shape)}")
    key = decoder_key(spec, state, data, config)
    path = cache_path(key, cache_dir)
    device = next(model.parameters()).device
    started = time.perf_counter()
    with _lock(path):
        if path.is_file():
            decoder, status = load_decoder(path, key), "hit"
        else:
            decoder = train_decoder(model, data.x, spec.num_classes, config)
            save_decoder(path, decoder, key, time.perf_counter() - started)
            status = "miss"
    info = {"cache": status, "path": str(path), "seconds": time.perf_counter() - started,
            "model_sha256": key["model_sha256"], "data_sha256": key["data_sha256"], "images": len(data),
            "config": key["config"]}
    return decoder.to(device), info
