"""LPIPS v0.1 with AlexNet (Zhang et al., CVPR 2018) in plain PyTorch, from a checked safetensors file.

torchvision is not a dependency: the AlexNet ``features`` stack is written out here with the same
layer indices, so its state-dict keys (``features.{0,3,6,8,10}.*``) and the lpips package's heads
(``lin{0..4}.model.1.weight``) load unchanged. Weights are never unpickled from untrusted files:
:func:`download_lpips_weights` reads the published ``.pth`` files with ``torch.load(weights_only=True)``
after a checksum check and converts them to safetensors.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import Tensor, nn

from unlearnleak.cache import cache_dir
from unlearnleak.errors import CheckpointError, DownloadError
from unlearnleak.metrics.image import MetricInputError, check_image_pair
from unlearnleak.storage import save_tensors_atomic

LPIPS_FILENAME = "lpips_alex_v0.1.safetensors"
LPIPS_SHA256 = "f412c57d0cc4e9f2edc84478624abbd4a9bd638eba491bc8885033680d46fb65"
"""sha256 of the file in ../shared/weights (see its README)."""
LPIPS_CONTENT_SHA256 = "6c841b42c7e47d708aad2a061fffb56a46c0a5f5630806c12928348e5b56cd9e"
"""sha256 over the tensors themselves (:func:`tensor_digest`), so a conversion written by another
safetensors version, with other header bytes, is still recognised as the same weights."""
LPIPS_WEIGHTS_ENV = "UNLEARNLEAK_LPIPS_WEIGHTS"

LPIPS_HEADS_URL = "https://raw.githubusercontent.com/richzhang/PerceptualSimilarity/master/lpips/weights/v0.1/alex.pth"
LPIPS_HEADS_SHA256 = "df73285e35b22355a2df87cdb6b70b343713b667eddbda73e1977e0c860835c0"
"""sha256 of ``lpips/weights/v0.1/alex.pth`` (identical in the ``lpips`` 0.1.4 wheel on PyPI)."""
ALEXNET_URL = "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth"
ALEXNET_SHA256_PREFIX = "7be5be79"
"""torchvision publishes only this sha256 prefix (in the file name) and checks nothing more."""

_SHIFT = (-0.030, -0.088, -0.188)
_SCALE = (0.458, 0.448, 0.450)
_CHANNELS = (64, 192, 384, 256, 256)
_CONVS = (0, 3, 6, 8, 10)  # indices of the convolutions in AlexNet.features
_TAPS = (1, 4, 7, 9, 11)  # indices of the ReLUs whose outputs LPIPS compares
_EXPECTED_SHAPES: dict[str, tuple[int, ...]] = {
    **{f"features.{i}.weight": s for i, s in zip(_CONVS, [(64, 3, 11, 11), (192, 64, 5, 5), (384, 192, 3, 3),
                                                          (256, 384, 3, 3), (256, 256, 3, 3)], strict=True)},
    **{f"features.{i}.bias": (c,) for i, c in zip(_CONVS, _CHANNELS, strict=True)},
    **{f"lin{n}.model.1.weight": (1, c, 1, 1) for n, c in enumerate(_CHANNELS)},
}


def _alexnet_features() -> nn.Sequential:
    """torchvision's ``alexnet().features`` layer for layer (same indices, hence the same state-dict keys)."""
    return nn.Sequential(
        nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2),
        nn.Conv2d(64, 192, kernel_size=5, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2),
        nn.Conv2d(192, 384, kernel_size=3, padding=1), nn.ReLU(),
        nn.Conv2d(384, 256, kernel_size=3, padding=1), nn.ReLU(),
        nn.Conv2d(256, 256, kernel_size=3, padding=1), nn.ReLU(),
    )


class _Head(nn.Module):
    """The lpips package's ``NetLinLayer`` (``model = [Dropout, 1×1 conv]``); dropout is inert at eval."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.model = nn.Sequential(nn.Identity(), nn.Conv2d(channels, 1, kernel_size=1, bias=False))

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)


def _unit_normalize(features: Tensor, eps: float = 1e-10) -> Tensor:
    """The reference ``normalize_tensor``: divide by the channel-wise L2 norm plus eps."""
    return features / (features.pow(2).sum(dim=1, keepdim=True).sqrt() + eps)


class LPIPS(nn.Module):
    """LPIPS v0.1 (AlexNet, calibrated heads): perceptual distance, 0 for identical images, lower is better.

    ``lpips(x, ref)`` takes two ``(k, C, H, W)`` batches in [0, 1] (C = 3, or C = 1 repeated to RGB),
    each at least 31×31 (the smallest input the AlexNet stack accepts), and returns the per-sample
    distance as a float64 CPU tensor of shape ``(k,)``. No gradients; there is no dropout or batch norm,
    so train/eval mode does not change the values.
    """

    min_size = 31
    shift: Tensor
    scale: Tensor

    def __init__(self) -> None:
        super().__init__()
        self.features = _alexnet_features()
        for n, channels in enumerate(_CHANNELS):
            self.add_module(f"lin{n}", _Head(channels))
        self.register_buffer("shift", torch.tensor(_SHIFT).reshape(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(_SCALE).reshape(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    @classmethod
    def from_file(cls, path: str | Path, *, verify: bool = True, device: str | torch.device = "cpu") -> LPIPS:
        """Load ``lpips_alex_v0.1.safetensors``; with ``verify``, refuse any but the published weights.

        Raises:
            CheckpointError: missing or unreadable file, wrong keys or shapes, or (with ``verify``) a file
                whose sha256 is not :data:`LPIPS_SHA256` and whose tensors differ from the published ones.
        """
        path = Path(path).expanduser()
        if not path.is_file():
            raise CheckpointError(f"LPIPS weights not found at {path}")
        try:
            tensors = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as err:
            raise CheckpointError(f"{path} is not a readable safetensors file: {err}") from err
        _check_layout(tensors, str(path))
        if verify and _file_sha256(path) != LPIPS_SHA256 and tensor_digest(tensors) != LPIPS_CONTENT_SHA256:
            raise CheckpointError(
                f"{path} does not hold the published LPIPS v0.1 AlexNet weights (sha256 mismatch: expected "
                f"{LPIPS_SHA256}). Replace it with {LPIPS_FILENAME} or rebuild it with "
                "download_lpips_weights()")
        model = cls()
        model.load_state_dict(tensors, strict=True)
        return model.to(device)

    def forward(self, x: Tensor, ref: Tensor) -> Tensor:
        """Per-sample LPIPS of reconstructions ``x`` against references ``ref`` ((k, C, H, W) in [0, 1])."""
        x, ref = check_image_pair(x, ref)
        k, channels, height, width = x.shape
        if channels not in (1, 3):
            raise MetricInputError(f"LPIPS takes RGB (or grayscale) images, got {channels} channels")
        if min(height, width) < self.min_size:
            raise MetricInputError(
                f"LPIPS-AlexNet needs images of at least {self.min_size}×{self.min_size}, "
                f"got {height}×{width}")
        param = next(self.parameters())
        with torch.no_grad():
            images = torch.cat([x, ref]).to(device=param.device, dtype=param.dtype)  # (2k, C, H, W)
            images = images.expand(-1, 3, -1, -1) if channels == 1 else images
            h = ((images * 2 - 1) - self.shift) / self.scale
            distance = torch.zeros(k, dtype=param.dtype, device=param.device)
            heads = iter(getattr(self, f"lin{n}") for n in range(len(_CHANNELS)))
            for index, layer in enumerate(self.features):
                h = layer(h)
                if index in _TAPS:
                    unit = _unit_normalize(h)
                    diff = (unit[:k] - unit[k:]).pow(2)  # (k, C_l, H_l, W_l)
                    distance += next(heads)(diff).mean(dim=(1, 2, 3))
        return distance.double().cpu()


def tensor_digest(tensors: Mapping[str, Tensor]) -> str:
    """sha256 over names, dtypes, shapes and raw bytes of the tensors, in sorted name order."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.numpy().tobytes())
    return digest.hexdigest()


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _check_layout(tensors: Mapping[str, Tensor], where: str) -> None:
    missing = sorted(set(_EXPECTED_SHAPES) - set(tensors))
    extra = sorted(set(tensors) - set(_EXPECTED_SHAPES))
    if missing or extra:
        raise CheckpointError(f"{where}: not an LPIPS-AlexNet state (missing {missing}, unexpected {extra})")
    for name, shape in _EXPECTED_SHAPES.items():
        if tuple(tensors[name].shape) != shape:
            raise CheckpointError(f"{where}: {name} has shape {tuple(tensors[name].shape)}, expected {shape}")


def default_lpips_path() -> Path:
    """Where :func:`download_lpips_weights` puts the file and :func:`load_lpips` looks: the user cache."""
    return cache_dir() / LPIPS_FILENAME


def _shared_lpips_path() -> Path:
    """``../shared/weights`` beside a source checkout (src/unlearnleak/metrics/lpips.py → repo root)."""
    return Path(__file__).resolve().parents[3].parent / "shared" / "weights" / LPIPS_FILENAME


def load_lpips(path: str | Path | None = None, *, device: str | torch.device = "cpu") -> LPIPS | None:
    """The LPIPS model, or None when no weights file is found (report LPIPS as unavailable, never as 0).

    Looks at ``path``, else $UNLEARNLEAK_LPIPS_WEIGHTS, else the user cache folder (see
    :func:`default_lpips_path`), else ``../shared/weights`` beside a source checkout.

    Raises:
        CheckpointError: if ``path`` or $UNLEARNLEAK_LPIPS_WEIGHTS names a missing or wrong file.
    """
    explicit = path if path is not None else os.environ.get(LPIPS_WEIGHTS_ENV) or None
    if explicit is not None:
        return LPIPS.from_file(explicit, device=device)
    for candidate in (default_lpips_path(), _shared_lpips_path()):
        if candidate.is_file():
            return LPIPS.from_file(candidate, device=device)
    return None


def download_lpips_weights(dest: str | Path | None = None, *, heads_url: str = LPIPS_HEADS_URL,
                           backbone_url: str = ALEXNET_URL, heads_sha256: str = LPIPS_HEADS_SHA256,
                           backbone_sha256_prefix: str = ALEXNET_SHA256_PREFIX,
                           timeout: float = 60.0) -> Path:
    """Build ``lpips_alex_v0.1.safetensors`` from the published ``.pth`` files and return its path.

    Downloads the lpips heads (``alex.pth``) and torchvision's AlexNet, checks their sha256, reads them
    with ``torch.load(weights_only=True)`` (never a full unpickle), keeps the five convolutions and five
    heads, checks the result against the published weights and writes it atomically. ``file://`` URLs
    work, for files fetched by hand.

    Raises:
        DownloadError: offline, HTTP error, checksum mismatch, or an unreadable download.
    """
    dest = Path(dest).expanduser() if dest is not None else default_lpips_path()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        heads = _fetch_state(heads_url, folder / "alex.pth", heads_sha256, dest, timeout)
        backbone = _fetch_state(backbone_url, folder / "alexnet.pth", backbone_sha256_prefix, dest, timeout)
    tensors = {name: (heads if name.startswith("lin") else backbone).get(name) for name in _EXPECTED_SHAPES}
    missing = sorted(name for name, t in tensors.items() if not isinstance(t, Tensor))
    if missing:
        raise DownloadError(
            f"the downloaded weights lack {missing}; are the URLs the lpips and torchvision ones?")
    state = {name: t.float() for name, t in tensors.items() if isinstance(t, Tensor)}
    _check_layout(state, "downloaded weights")
    if tensor_digest(state) != LPIPS_CONTENT_SHA256:
        raise DownloadError("the downloaded weights differ from the published LPIPS v0.1 AlexNet weights")
    save_tensors_atomic(dest, state, {"net": "alex", "lpips_version": "0.1",
                                      "source": f"{heads_url} + {backbone_url}"})
    return dest


def _fetch_state(url: str, tmp: Path, sha256: str, dest: Path, timeout: float) -> dict[str, object]:
    """Download ``url`` to ``tmp``, check its sha256 (or prefix), and read it as a weights-only state dict."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, tmp.open("wb") as out:
            for block in iter(lambda: response.read(1 << 20), b""):
                out.write(block)
    except (urllib.error.URLError, OSError, ValueError) as err:
        raise DownloadError(
            f"could not download {url} ({err}). Offline? Place {LPIPS_FILENAME} (sha256 {LPIPS_SHA256}) at "
            f"{dest}, or point ${LPIPS_WEIGHTS_ENV} at it; or fetch {url} by hand and pass it as a file:// "
            "URL to download_lpips_weights()") from err
    actual = _file_sha256(tmp)
    if not actual.startswith(sha256.lower()):
        raise DownloadError(f"{url}: sha256 {actual} does not match the published {sha256}")
    try:
        state = torch.load(tmp, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several unrelated types for a corrupt or non-weights file
        raise DownloadError(f"{url} is not a readable weights-only checkpoint: {err}") from err
    if not isinstance(state, dict):
        raise DownloadError(f"{url} does not hold a state dict")
    return state
