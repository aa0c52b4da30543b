"""`unlearnleak audit --public-data`: the learned prior on a user's own pair, and every bad input refused."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from safetensors.torch import load_file
from typer.testing import CliRunner

from unlearnleak.cli import app

runner = CliRunner()


def _images(folder: Path, count: int = 12, size: int = 32, mode: str = "RGB") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(2)
    for i in range(count):
        Image.fromarray(rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)).convert(mode).save(
            folder / f"photo{i:02d}.png")
    return folder


def test_audit_without_public_data_says_the_learned_prior_is_off(
        user_pair: Any, white_box_args: Callable[..., list[str]], tmp_path: Path) -> None:
    out = tmp_path / "audit"
    result = runner.invoke(app, white_box_args(user_pair, out, "--per-class", "0", "--iterations", "3"))
    assert result.exit_code == 0, result.output
    assert "learned prior: off — no public data given" in result.output
    report = json.loads((out / "report.json").read_text())
    assert "learned prior: off — no public data given" in report["verdict"]


def test_audit_with_a_folder_of_public_images_decodes_and_reports_the_decoder_alone(
        user_pair: Any, white_box_args: Callable[..., list[str]], tmp_path: Path) -> None:
    out = tmp_path / "audit"
    public = _images(tmp_path / "public")
    result = runner.invoke(app, white_box_args(
        user_pair, out, "--per-class", "0", "--iterations", "20", "--public-data", str(public),
        "--ground-truth", str(user_pair.truth)))
    assert result.exit_code == 0, result.output
    assert "learned prior: on — decoder trained on original's features" in result.output
    assert "Decoder alone (feature inversion from the features ∇* gives away): PSNR" in result.output
    report = json.loads((out / "report.json").read_text())
    assert report["inputs"]["public_data"]["images"] == 12
    assert report["attacks"][0]["result"]["config"]["learned_prior"]["status"] == "on"
    assert isinstance(report["evaluation"]["decoder_alone"]["mean"]["psnr"], float)
    assert load_file(str(out / "reconstructions.safetensors"))["decoded"].shape == (1, 3, 32, 32)


def _refused(args: list[str], out: Path, *words: str) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert result.output.count("error:") == 1, result.output
    for word in words:
        assert word in result.output, (word, result.output)
    assert not out.exists()


def test_audit_refuses_bad_public_data(user_pair: Any, white_box_args: Callable[..., list[str]],
                                       tmp_path: Path) -> None:
    out = tmp_path / "audit"
    base = white_box_args(user_pair, out, "--per-class", "0", "--iterations", "3")
    _refused([*base, "--public-data", str(tmp_path / "nowhere")], out, "--public-data", "no such folder")
    _refused([*base, "--public-data", str(_images(tmp_path / "small", size=16))], out,
             "photo00.png is 16×16 pixels, but the model takes 32×32")
    _refused([*base, "--public-data", str(_images(tmp_path / "rgba", mode="RGBA"))], out,
             "photo00.png is a RGBA image", "3-channel")
    broken = _images(tmp_path / "broken", count=2)
    (broken / "photo01.png").write_bytes(b"not an image")
    _refused([*base, "--public-data", str(broken)], out, "cannot read image photo01.png")
    empty = tmp_path / "empty"
    empty.mkdir()
    _refused([*base, "--public-data", str(empty)], out, "holds no image files")
    _refused([*base, "--public-data", "cifar10", "--data-dir", str(tmp_path / "no-data")], out, "--public-data cifar10")
    _refused([*base, "--public-data", str(_images(tmp_path / "ok")), "--preset", "paper"], out,
             "--public-data", "not inside preset=paper (--preset)")


def test_audit_with_gradient_inputs_says_what_the_decoder_read(
        user_pair: Any, white_box_args: Callable[..., list[str]], tmp_path: Path) -> None:
    out = tmp_path / "audit"
    result = runner.invoke(app, white_box_args(
        user_pair, out, "--per-class", "0", "--iterations", "20", "--public-data", str(_images(tmp_path / "public")),
        "--gradient-sketch", "64"))
    assert result.exit_code == 0, result.output
    assert "(it reads penultimate features and ∇* sketched to 64 per tensor)" in result.output
    record = json.loads((out / "report.json").read_text())["attacks"][0]["result"]["config"]["learned_prior"]
    assert record["decoder"]["config"]["gradient_sketch"] == 64


def test_audit_refuses_a_bad_gradient_sketch(user_pair: Any, white_box_args: Callable[..., list[str]],
                                             tmp_path: Path) -> None:
    out = tmp_path / "audit"
    base = white_box_args(user_pair, out, "--per-class", "0", "--iterations", "3")
    _refused([*base, "--gradient-sketch", "64"], out, "--gradient-sketch", "give --public-data too")
    _refused([*base, "--gradient-sketch", "-1", "--public-data", str(_images(tmp_path / "public"))], out,
             "--gradient-sketch", "greater than or equal to 0")


def test_audit_refuses_public_data_without_a_white_box_image_model(tmp_path: Path) -> None:
    out = tmp_path / "audit"
    _refused(["audit", "--original-endpoint", "http://127.0.0.1:9/v2/models/a", "--unlearned-endpoint",
              "http://127.0.0.1:9/v2/models/b", "--input-shape", "3,8,8", "--num-classes", "10", "--out", str(out),
              "--public-data", str(_images(tmp_path / "public", size=8))], out, "--public-data feeds the white-box")


def test_audit_refuses_a_decoder_cache_trained_for_another_model(
        user_pair: Any, white_box_args: Callable[..., list[str]], tmp_path: Path, monkeypatch: Any) -> None:
    """B's cache entry replaced by A's decoder (a copied cache folder): one error, exit 2, no results folder."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("UNLEARNLEAK_CACHE_DIR", str(cache))
    public = str(_images(tmp_path / "public"))
    a = white_box_args(user_pair, tmp_path / "a", "--per-class", "0", "--iterations", "3", "--public-data", public)
    assert runner.invoke(app, a).exit_code == 0
    (decoder_a,) = (cache / "decoders").glob("*.safetensors")
    swapped = [str(user_pair.unlearned) if v == str(user_pair.original) else
               str(user_pair.original) if v == str(user_pair.unlearned) else v for v in a]  # θ ↔ θ_u: another θ
    b = [str(tmp_path / "b") if v == str(tmp_path / "a") else v for v in swapped]
    assert runner.invoke(app, b).exit_code == 0
    (decoder_b,) = set((cache / "decoders").glob("*.safetensors")) - {decoder_a}
    decoder_b.write_bytes(decoder_a.read_bytes())
    out = tmp_path / "c"
    _refused([str(out) if v == str(tmp_path / "b") else v for v in b], out,
             "trained for another model's weights", "refusing to use it")


def test_the_label_verdict_is_calibrated_on_own_null_pairs_with_a_labelled_public_dataset(
        user_pair: Any, white_box_args: Callable[..., list[str]], tmp_path: Path, monkeypatch: Any) -> None:
    """--public-data NAME gives labelled rows: the label verdict rests on θ's own null pairs made on them (or,
    when a class lacks probes, says no pairs were needed); the report, the row and the verdict say which."""
    from data.conftest import write_cifar10
    from unlearnleak.run_folder import read_rows

    monkeypatch.setenv("UNLEARNLEAK_CACHE_DIR", str(tmp_path / "cache"))
    write_cifar10(tmp_path / "data")  # 25 labelled train rows in the official format
    out = tmp_path / "audit"
    result = runner.invoke(app, white_box_args(user_pair, out, "--iterations", "3", "--restarts", "1",
                                               "--per-class", "2", "--public-data", "cifar10",
                                               "--data-dir", str(tmp_path / "data")))
    assert result.exit_code in (0, 3), result.output
    pred = json.loads((out / "report.json").read_text())["labels"]["from_predictions"]
    (row,), _ = read_rows(out / "results.jsonl")
    assert pred["calibration"] == row.label_inference.calibration == "own_nulls"
    assert pred["calibration_info"] == row.label_inference.calibration_info
    if pred["verdict"] == "no_verdict":
        assert pred["calibration_info"] == {"note": "no own null pairs made: classes lack probes, so there is no "
                                                    "verdict to calibrate"}
    else:
        info = pred["calibration_info"]
        assert (info["pairs"], info["public_rows"], info["cached"]) == (200, 25, False)
        assert "(calibrated on this model's own null pairs)" in result.output
    assert "label verdict calibrated with auto" not in result.output


def test_a_folder_of_unlabelled_public_images_keeps_auto_and_says_so(
        user_pair: Any, white_box_args: Callable[..., list[str]], tmp_path: Path) -> None:
    """Images without labels cannot make null pairs: the verdict rests on `auto`, and a note says why."""
    out = tmp_path / "audit"
    result = runner.invoke(app, white_box_args(user_pair, out, "--iterations", "3", "--restarts", "1",
                                               "--per-class", "2", "--public-data", str(_images(tmp_path / "p"))))
    assert result.exit_code in (0, 3), result.output
    note = ("note: label verdict calibrated with auto (other models' null pairs: its level is not guaranteed here): "
            "own null pairs of θ need labelled public rows, and --public-data is a folder of unlabelled images")
    assert note in result.output
    report = json.loads((out / "report.json").read_text())
    assert any(line.startswith(note) for line in report["verdict"])
    pred = report["labels"]["from_predictions"]
    assert pred["calibration"] != "own_nulls" and "folder of unlabelled images" in pred["calibration_info"]["note"]
