"""The learned prior's switches: `recover --public-data`, the experiment config's field, and "off" said aloud."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from recover_pairs import SPEC, one_step_pair
from typer.testing import CliRunner

from cli_checks import one_error
from unlearnleak.attacks.feature_recovery import RECONSTRUCTION_FILE, Reconstruction
from unlearnleak.attacks.feature_recovery.config import FeatureRecoveryConfig
from unlearnleak.cli import app
from unlearnleak.commands.demo import feature_recovery_config
from unlearnleak.experiments.pipeline import headline_table, run_cell
from unlearnleak.experiments.schema import AttacksConfig, ExperimentConfig
from unlearnleak.knowledge import ServerKnowledge
from unlearnleak.models import build_model
from unlearnleak.pair import ModelPair
from unlearnleak.unlearning import state_of

runner = CliRunner()


@pytest.fixture
def pair_dir(tmp_path: Path) -> Path:
    """A pair unlearned by one gradient-ascent step on one sample, with its ground truth beside it."""
    return one_step_pair(tmp_path / "pair", [4])


def _images(folder: Path, count: int = 12, size: int = 16, mode: str = "RGB") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    for i in range(count):
        array = rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)
        Image.fromarray(array).convert(mode).save(folder / f"{i:03d}.png")
    return folder


def test_recover_says_the_learned_prior_is_off_without_public_data(pair_dir: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["recover", str(pair_dir), "--out", str(tmp_path / "out"), "--iterations", "3"])
    assert result.exit_code == 0, result.output
    assert "learned prior: off — no public data given" in result.output
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert saved["learned_prior"] == {"status": "off", "reason": "no public data given"}
    assert saved["decoder_alone"] is None


def test_recover_with_a_folder_of_public_images(pair_dir: Path, tmp_path: Path) -> None:
    public = _images(tmp_path / "public")
    result = runner.invoke(app, ["recover", str(pair_dir), "--out", str(tmp_path / "out"), "--iterations", "20",
                                 "--public-data", str(public)])
    assert result.exit_code == 0, result.output
    assert ("learned prior: on (decoder trained on original's features, cache miss; it reads penultimate features "
            "and ∇* sketched to 1024 per tensor)") in result.output  # the gradient sketch is on by default
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert saved["learned_prior"]["status"] == "on" and saved["learned_prior"]["data"]["images"] == 12
    assert isinstance(saved["decoder_alone"]["psnr"], float)
    rec = Reconstruction.load(tmp_path / "out" / RECONSTRUCTION_FILE)
    assert rec.decoded is not None and rec.decoded.shape == rec.x.shape == (1, 3, 16, 16)
    assert rec.preset == "best+learned_prior"


def test_recover_with_gradient_inputs_says_what_the_decoder_read(pair_dir: Path, tmp_path: Path) -> None:
    public = _images(tmp_path / "public")
    result = runner.invoke(app, ["recover", str(pair_dir), "--out", str(tmp_path / "out"), "--iterations", "20",
                                 "--public-data", str(public), "--gradient-sketch", "32"])
    assert result.exit_code == 0, result.output
    assert "it reads penultimate features and ∇* sketched to 32 per tensor" in result.output
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert saved["learned_prior"]["decoder"]["config"]["gradient_sketch"] == 32


@pytest.mark.parametrize("extra, words", [
    (["--gradient-sketch", "32"], ["--gradient-sketch", "give --public-data too"]),
    (["--gradient-sketch", "-3", "--public-data", "PUBLIC"], ["--gradient-sketch", "greater than or equal to 0"]),
])
def test_recover_refuses_a_bad_gradient_sketch(pair_dir: Path, tmp_path: Path, extra: list[str],
                                               words: list[str]) -> None:
    public = str(_images(tmp_path / "public"))
    out = tmp_path / "out"
    result = runner.invoke(app, ["recover", str(pair_dir), "--out", str(out),
                                 *[public if e == "PUBLIC" else e for e in extra]])
    one_error(result, *words)
    assert not out.exists()


@pytest.mark.parametrize("make, words", [
    (lambda root: root / "missing", ["--public-data", "no such folder"]),
    (lambda root: _images(root / "big", size=32), ["--public-data", "000.png is 32×32 pixels", "16×16"]),
    (lambda root: _images(root / "gray", mode="L"), ["000.png is a L image", "3-channel"]),
    (lambda root: (root / "empty").mkdir() or root / "empty", ["holds no image files"]),
])
def test_recover_refuses_bad_public_data(pair_dir: Path, tmp_path: Path, make: object, words: list[str]) -> None:
    source = make(tmp_path)  # type: ignore[operator]
    out = tmp_path / "out"
    result = runner.invoke(app, ["recover", str(pair_dir), "--out", str(out), "--public-data", str(source)])
    one_error(result, *words)
    assert not out.exists()


def test_recover_refuses_public_data_with_another_preset(pair_dir: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["recover", str(pair_dir), "--out", str(tmp_path / "out"), "--preset", "paper",
                                 "--public-data", str(_images(tmp_path / "public"))])
    one_error(result, "--public-data", "races the decoded image beside the default's recipes",
              "not inside preset=paper (--preset)")


def test_an_experiment_cell_reports_the_learned_prior_and_the_decoder_alone(tmp_path: Path) -> None:
    """The demo's cell (embedded CIFAR-10 photos) with θ0's pretraining photos as the server's public data."""
    torch.set_num_threads(1)
    scenario = feature_recovery_config(0, "cpu").model_copy(update={"cache_dir": str(tmp_path / "cache")})
    spec = FeatureRecoveryConfig.model_validate({"iterations": 20, "learned_prior": {
        "public_data": "pretraining", "decoder": {"epochs": 2, "width": 16}}})
    config = ExperimentConfig(scenario=scenario, seeds=[0], attacks=AttacksConfig(feature_recovery=spec))
    row = run_cell(config, tmp_path / "cell")
    fr = row["feature_recovery"]
    assert fr["learned_prior"]["status"] == "on" and fr["learned_prior"]["decoder_model"] == "base"
    assert fr["learned_prior"]["data"]["images"] == 12  # the 20 embedded photos minus the private pool of 8
    assert set(fr["decoder_alone"]) == {"psnr", "ssim", "lpips"} and fr["decoder_alone"]["psnr"] > 0
    assert fr["preset"] == "best+learned_prior"
    assert Reconstruction.load(tmp_path / "cell" / RECONSTRUCTION_FILE).decoded is not None
    off = run_cell(config.model_copy(update={"attacks": AttacksConfig(
        feature_recovery=FeatureRecoveryConfig(iterations=3))}), tmp_path / "off")
    assert off["feature_recovery"]["learned_prior"] == {"status": "off", "reason": "no public data given"}
    from rich.console import Console

    console = Console(width=200, record=True)
    console.print(headline_table([row, off]))
    text = console.export_text()
    assert "learned prior: on; decoder alone" in text and "learned prior: off — no public data given" in text


def test_recover_refuses_a_decoder_cache_trained_for_another_model(pair_dir: Path, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A's cached decoder sitting where B's would be (a copied cache, a hash collision): one error, exit 2,
    no results folder; never decoded with the wrong decoder."""
    from unlearnleak.attacks.feature_recovery.decoder import DecoderConfig, cache_path, decoder_key
    from unlearnleak.attacks.feature_recovery.public_data import load_public_images

    cache = tmp_path / "cache"
    monkeypatch.setenv("UNLEARNLEAK_CACHE_DIR", str(cache))
    public = _images(tmp_path / "public")
    first = runner.invoke(app, ["recover", str(pair_dir), "--out", str(tmp_path / "a"), "--iterations", "3",
                                "--public-data", str(public)])
    assert first.exit_code == 0, first.output
    (trained,) = (cache / "decoders").glob("*.safetensors")
    torch.manual_seed(1)
    other = build_model(SPEC).eval()
    other_dir = tmp_path / "pair_b"
    ModelPair(SPEC, state_of(other), {k: v + 1e-3 if v.is_floating_point() else v
                                      for k, v in state_of(other).items()}).save(other_dir)
    ServerKnowledge(n_forget=1).save(other_dir)
    data = load_public_images(str(public), input_shape=SPEC.input_shape)
    target = cache_path(decoder_key(SPEC, state_of(other), data, DecoderConfig()), cache)
    target.write_bytes(trained.read_bytes())
    out = tmp_path / "b"
    result = runner.invoke(app, ["recover", str(other_dir), "--out", str(out), "--iterations", "3", "--no-eval",
                                 "--public-data", str(public)])
    one_error(result, "trained for another model's weights", "refusing to use it", "delete the file to retrain")
    assert not out.exists()


@pytest.mark.parametrize("command", ["recover", "audit"])
def test_help_shows_the_public_data_slice_syntax(command: str) -> None:
    """Rich markup would eat "[start:stop]" from the help text (it looks like a tag)."""
    shown = runner.invoke(app, [command, "--help"], env={"COLUMNS": "200"})
    assert shown.exit_code == 0 and "NAME[start:stop]" in shown.output
