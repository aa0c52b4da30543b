"""The server's own images (neither D_ft nor D_u) that the learned prior is trained on: loaded and checked.

Two sources, one value (:class:`PublicImages`):

- a registered dataset name, e.g. ``cifar10`` (its ``train`` split, read from ``data_dir``), optionally a row
  range ``cifar10[8000:]`` (Python slice syntax) — e.g. θ0's pretraining rows of a scenario, which exclude
  the private pool that D_ft and D_u are drawn from;
- a folder of image files: ``*.png``, ``*.jpg``/``*.jpeg``, ``*.bmp`` directly inside it (sorted by name,
  sub-folders ignored), every one exactly the model's input size H×W, RGB for a 3-channel model and
  grayscale (mode ``L``) for a 1-channel one; pixels 0–255 are read as 0–1. Nothing is resized or converted
  behind the user's back: a wrong size, a wrong channel count or an unreadable file is an error naming it.

The images' sha256 (of the float32 pixels) is part of the decoder's cache key.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from unlearnleak.errors import ConfigError, DataError, UnlearnleakError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
_RANGE = re.compile(r"^(?P<name>[A-Za-z0-9_\-]+)(\[(?P<start>-?\d*):(?P<stop>-?\d*)\])?$")
_MODES = {3: "RGB", 1: "L"}


@dataclass(frozen=True)
class PublicImages:
    """Images in [0, 1], shape (n, C, H, W), with where they came from and a digest of their pixels; ``y``:
    their labels when they come from a registered dataset (the audit's own null pairs need them), else None."""

    x: torch.Tensor
    source: str
    digest: str
    y: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def describe(self) -> dict[str, object]:
        """A JSON-able summary (for result files)."""
        return {"source": self.source, "images": len(self), "shape": list(self.x.shape[1:]),
                "sha256": self.digest}


def images_digest(x: torch.Tensor) -> str:
    """sha256 of the float32 pixels and their shape."""
    h = hashlib.sha256(str(tuple(x.shape)).encode())
    h.update(x.detach().to(torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()


def public_images(x: torch.Tensor, source: str, input_shape: Sequence[int] | None = None) -> PublicImages:
    """Check images already in memory (e.g. a scenario's public rows) and wrap them."""
    x = x.detach().to(torch.float32).cpu()
    _check(x, source, input_shape)
    return PublicImages(x=x, source=source, digest=images_digest(x))


def load_public_images(spec: str, *, data_dir: str | Path | None = None,
                       input_shape: Sequence[int] | None = None, flag: str = "--public-data") -> PublicImages:
    """The images named by ``spec``: a folder of image files, or a registered dataset (``NAME[start:stop]``).

    Raises:
        ConfigError / DataError: a missing or unreadable source, no images, or images of another size or
            channel count than ``input_shape``; the message names ``flag`` and the file at fault.
    """
    text = str(spec).strip()
    if not text:
        raise ConfigError(f"{flag} is empty; give a folder of images or a dataset name (e.g. cifar10)")
    path = Path(text).expanduser()
    if path.is_dir():
        return _from_folder(path, input_shape, flag)
    match = _RANGE.match(text)
    from unlearnleak.data import DATASETS

    if match is None or match["name"] not in DATASETS:
        if path.exists():
            raise ConfigError(f"{flag} {text} is a file, not a folder; give a folder of image files "
                              f"({', '.join(IMAGE_SUFFIXES)}) or a dataset name")
        raise ConfigError(f"{flag} {text}: no such folder, and not a registered dataset (one of "
                          f"{', '.join(DATASETS.names())}, optionally with a row range such as cifar10[8000:]); "
                          "check the path")
    return _from_dataset(match["name"], match["start"], match["stop"], data_dir, input_shape, flag)


def names_dataset(text: str) -> bool:
    """Whether ``text`` names a registered dataset (``NAME`` or ``NAME[start:stop]``)."""
    from unlearnleak.data import DATASETS

    match = _RANGE.match(text.strip())
    return match is not None and match["name"] in DATASETS


def _from_dataset(name: str, start: str | None, stop: str | None, data_dir: str | Path | None,
                  input_shape: Sequence[int] | None, flag: str) -> PublicImages:
    from unlearnleak.data import load_dataset

    try:
        data = load_dataset(name, "train", data_dir)
    except UnlearnleakError as exc:
        raise type(exc)(f"{flag} {name}: {exc}") from exc
    if data.kind != "image":
        raise ConfigError(f"{flag} {name} holds table rows, not images; the learned prior decodes images")
    rows = slice(int(start) if start else None, int(stop) if stop else None)
    x = data.x[rows]
    where = f"{name} train rows [{start or ''}:{stop or ''}]" if (start or stop) else f"{name} train split"
    return replace(public_images(x, f"{where} ({x.shape[0]} images)", input_shape), y=data.y[rows].long())


def _from_folder(folder: Path, input_shape: Sequence[int] | None, flag: str) -> PublicImages:
    from PIL import Image, UnidentifiedImageError

    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DataError(f"{flag} {folder} holds no image files ({', '.join(IMAGE_SUFFIXES)} directly inside "
                        "it); put the server's public images there")
    channels = int(input_shape[0]) if input_shape is not None else None
    arrays = []
    for file in files:
        try:
            with Image.open(file) as opened:
                opened.load()
                image: Image.Image = opened
                if image.mode == "P":  # palette PNGs hold colours; read them as such
                    image = image.convert("RGBA" if "transparency" in image.info else "RGB")
                mode, size = image.mode, image.size
                array = np.asarray(image)
        except (UnidentifiedImageError, OSError, ValueError) as exc:
            raise DataError(f"{flag} {folder}: cannot read image {file.name}: {exc}; remove or replace it") from exc
        if channels is not None and mode != _MODES.get(channels):
            raise ConfigError(f"{flag} {folder}: {file.name} is a {mode} image, but the model takes "
                              f"{channels}-channel input ({_MODES.get(channels, '?')} images); convert the folder's "
                              "images to that mode")
        if array.dtype != np.uint8:
            raise ConfigError(f"{flag} {folder}: {file.name} has {array.dtype} pixels; save 8-bit images")
        if input_shape is not None and (size[1], size[0]) != tuple(int(v) for v in input_shape[1:]):
            raise ConfigError(f"{flag} {folder}: {file.name} is {size[0]}×{size[1]} pixels, but the model takes "
                              f"{int(input_shape[2])}×{int(input_shape[1])} images; resize the folder's images to "
                              "the model's input size")
        arrays.append(array if array.ndim == 3 else array[:, :, None])
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        raise ConfigError(f"{flag} {folder}: the images differ in size or mode ({sorted(shapes)[:3]}); give "
                          "images of one size and mode")
    x = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).to(torch.float32) / 255.0
    return public_images(x, f"folder {folder} ({len(files)} images)", input_shape)


def _check(x: torch.Tensor, source: str, input_shape: Sequence[int] | None) -> None:
    if x.dim() != 4:
        raise ConfigError(f"public data {source}: expected images (n, C, H, W), got shape {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise DataError(f"public data {source} holds no images; give a non-empty set")
    if input_shape is not None and tuple(x.shape[1:]) != tuple(int(v) for v in input_shape):
        raise ConfigError(f"public data {source} holds images of shape {tuple(x.shape[1:])}, but the model takes "
                          f"{tuple(int(v) for v in input_shape)}; give images of the model's input shape")
    if not torch.isfinite(x).all() or float(x.min()) < 0 or float(x.max()) > 1:
        raise DataError(f"public data {source}: pixel values must be finite and in [0, 1]")
