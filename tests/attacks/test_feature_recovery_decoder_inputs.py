"""The learned prior's public data and decoder cache refuse bad input with one clear error (issue 16).

Every new option is covered: a missing or unreadable source, a folder of the wrong image size or channel
count, empty data, and a decoder cache trained for another model (detected, never used).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from unlearnleak.attacks.feature_recovery.config import FeatureRecoveryConfig
from unlearnleak.attacks.feature_recovery.decoder import (
    DecoderConfig,
    cache_path,
    cached_decoder,
    decoder_key,
    load_decoder,
)
from unlearnleak.attacks.feature_recovery.public_data import load_public_images, public_images
from unlearnleak.errors import CheckpointError, ConfigError, DataError
from unlearnleak.models import ModelSpec, build_model

SHAPE = (3, 8, 8)
TINY = DecoderConfig(epochs=1, batch_size=8, width=16, flips=False)


def _write(folder: Path, count: int = 3, size: tuple[int, int] = (8, 8), mode: str = "RGB") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    channels = {"RGB": 3, "RGBA": 4, "L": 1}[mode]
    for i in range(count):
        array = rng.integers(0, 256, size=(size[1], size[0], channels), dtype=np.uint8)
        Image.fromarray(array[:, :, 0] if channels == 1 else array, mode).save(folder / f"img{i:02d}.png")
    return folder


def test_a_folder_of_pngs_loads_as_images_in_the_unit_range(tmp_path: Path) -> None:
    folder = _write(tmp_path / "public", count=4)
    data = load_public_images(str(folder), input_shape=SHAPE)
    assert data.x.shape == (4, *SHAPE) and data.x.dtype == torch.float32
    assert float(data.x.min()) >= 0.0 and float(data.x.max()) <= 1.0
    first = np.array(Image.open(folder / "img00.png"))  # (H, W, C), 0–255
    assert torch.allclose(data.x[0], torch.from_numpy(first).permute(2, 0, 1).float() / 255)
    assert data.digest == load_public_images(str(folder), input_shape=SHAPE).digest and "4 images" in data.source


@pytest.mark.parametrize("spec, error, words", [
    ("/no/such/folder", ConfigError, "no such folder"),
    ("", ConfigError, "is empty"),
    ("not_a_dataset[3:]", ConfigError, "not a registered dataset"),
])
def test_a_missing_source_is_refused(spec: str, error: type[Exception], words: str) -> None:
    with pytest.raises(error, match=words):
        load_public_images(spec, input_shape=SHAPE)


def test_a_file_instead_of_a_folder_is_refused(tmp_path: Path) -> None:
    file = tmp_path / "images.npz"
    file.write_bytes(b"x")
    with pytest.raises(ConfigError, match="is a file, not a folder"):
        load_public_images(str(file), input_shape=SHAPE)


def test_an_empty_folder_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "empty"
    folder.mkdir()
    (folder / "notes.txt").write_text("no images here")
    with pytest.raises(DataError, match="holds no image files"):
        load_public_images(str(folder), input_shape=SHAPE)


def test_empty_images_in_memory_are_refused() -> None:
    with pytest.raises(DataError, match="holds no images"):
        public_images(torch.zeros(0, *SHAPE), "scenario rows", SHAPE)


def test_an_unreadable_image_is_named(tmp_path: Path) -> None:
    folder = _write(tmp_path / "public", count=2)
    (folder / "img01.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    with pytest.raises(DataError, match="cannot read image img01.png"):
        load_public_images(str(folder), input_shape=SHAPE)


def test_images_of_the_wrong_size_are_refused(tmp_path: Path) -> None:
    folder = _write(tmp_path / "public", count=2, size=(16, 12))
    with pytest.raises(ConfigError, match=r"img00.png is 16×12 pixels, but the model takes 8×8"):
        load_public_images(str(folder), input_shape=SHAPE)


@pytest.mark.parametrize("mode, shape", [("L", (3, 8, 8)), ("RGBA", (3, 8, 8)), ("RGB", (1, 8, 8))])
def test_images_of_the_wrong_channel_count_are_refused(tmp_path: Path, mode: str, shape: tuple[int, ...]) -> None:
    folder = _write(tmp_path / "public", count=2, mode=mode)
    with pytest.raises(ConfigError, match=f"img00.png is a {mode} image, but the model takes {shape[0]}-channel"):
        load_public_images(str(folder), input_shape=shape)


def test_grayscale_images_serve_a_one_channel_model(tmp_path: Path) -> None:
    data = load_public_images(str(_write(tmp_path / "public", mode="L")), input_shape=(1, 8, 8))
    assert data.x.shape == (3, 1, 8, 8)


def test_a_dataset_of_table_rows_is_refused() -> None:
    with pytest.raises(ConfigError, match="holds table rows, not images"):
        load_public_images("breast_cancer", input_shape=SHAPE)


def test_a_dataset_without_its_files_names_the_flag(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="--public-data cifar10"):
        load_public_images("cifar10[100:]", data_dir=tmp_path, input_shape=(3, 32, 32))


def test_an_experiment_config_names_a_bad_public_data_source() -> None:
    with pytest.raises(ValueError, match="neither 'pretraining', a registered dataset"):
        FeatureRecoveryConfig.model_validate({"learned_prior": {"public_data": "/no/such/folder"}})
    with pytest.raises(ValueError, match="weights must be distinct numbers >= 0"):
        FeatureRecoveryConfig.model_validate({"learned_prior": {"weights": [1.0, -1.0]}})
    spec = FeatureRecoveryConfig.model_validate({"learned_prior": {"public_data": "cifar10[8000:]"}})
    assert spec.learned_prior is not None and spec.learned_prior.decoder == DecoderConfig()


# ---- the decoder cache --------------------------------------------------------------------------------------


def _model(seed: int) -> tuple[torch.nn.Module, ModelSpec, dict[str, torch.Tensor]]:
    spec = ModelSpec("mlp", SHAPE, 4, (0.5,) * 3, (0.25,) * 3, {"hidden": [16]})
    torch.manual_seed(seed)
    model = build_model(spec).eval()
    return model, spec, {k: v.clone() for k, v in model.state_dict().items()}


def test_a_decoder_cache_from_another_model_is_detected_and_refused(tmp_path: Path) -> None:
    data = public_images(torch.rand(16, *SHAPE, generator=torch.Generator().manual_seed(0)), "random", SHAPE)
    model_a, spec, state_a = _model(0)
    _, info = cached_decoder(model_a, spec, state_a, data, TINY, cache_dir=tmp_path)
    model_b, _, state_b = _model(1)
    key_b = decoder_key(spec, state_b, data, TINY)
    assert key_b["model_sha256"] != info["model_sha256"]
    shutil.copy(info["path"], cache_path(key_b, tmp_path))  # A's decoder where B's would be cached
    with pytest.raises(CheckpointError, match="trained for another model's weights .* refusing to use it"):
        cached_decoder(model_b, spec, state_b, data, TINY, cache_dir=tmp_path)
    with pytest.raises(CheckpointError, match="other public images"):  # same model, other data
        load_decoder(info["path"], decoder_key(spec, state_a, public_images(data.x[:8], "fewer", SHAPE), TINY))


def test_a_corrupt_or_foreign_decoder_file_is_refused(tmp_path: Path) -> None:
    data = public_images(torch.rand(8, *SHAPE, generator=torch.Generator().manual_seed(0)), "random", SHAPE)
    _, spec, state = _model(0)
    key = decoder_key(spec, state, data, TINY)
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="is not readable"):
        load_decoder(broken, key)
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(tmp_path / "weights.safetensors"))
    with pytest.raises(CheckpointError, match="not a decoder file written by unlearnleak"):
        load_decoder(tmp_path / "weights.safetensors", key)
