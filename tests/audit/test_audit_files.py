"""White-box audit of a user's own files: label inferred, image recovered above the 4×4-thumbnail baseline."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from unlearnleak.cli import app
from unlearnleak.metrics import load_lpips
from unlearnleak.verdicts import image_verdict

runner = CliRunner()


def test_white_box_audit_of_a_users_own_files(user_pair: Any, white_box_args: Callable[..., list[str]],
        tmp_path: Path) -> None:
    out = tmp_path / "audit"
    result = runner.invoke(app, white_box_args(user_pair, out, "--iterations", "200", "--restarts", "1",
                                               "--per-class", "0", "--ground-truth", str(user_pair.truth)))
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["mode"] == "white-box" and report["partial"] is False
    assert report["labels"]["from_weights"]["labels"] == [user_pair.forget_y]
    fr = next(a for a in report["attacks"] if a["name"] == "feature_recovery")
    assert fr["knowledge_used"] == []  # θ and θ_u only: nothing else was declared
    assert fr["attack"].startswith("FeatureRecovery(preset='best', iterations=200")
    m = report["evaluation"]["mean"]
    assert m["psnr"] > m["thumbnail_4x4_psnr"] > m["own_mean_colour_psnr"]
    images = load_file(str(out / "reconstructions.safetensors"))["images"]
    assert images.shape == (1, 3, 32, 32) and float(images.min()) >= 0 and float(images.max()) <= 1
    assert (out / "reconstructions.png").is_file()
    image = image_verdict(m["psnr"], {name: {k: m[f"{name}_{k}"] for k in ("psnr", "ssim", "lpips")}
                                      for name in ("own_mean_colour", "thumbnail_4x4")},
                          ssim=m["ssim"], lpips=m["lpips"])
    assert image is not None and f"Image: {image.sentence}." in result.output  # the shared wording
    assert "IMAGE LEAKED" not in result.output and "report written to" in result.output
    # beside the recovered input's match to ∇*, the deleted photo's own (one gradient-ascent step: ∇* is exact)
    costs = report["evaluation"]["gradient_cost"]
    assert costs["deleted_samples"] < 1e-9 < costs["reconstruction"]
    assert f"the deleted sample(s) themselves to {costs['deleted_samples']:.1e}" in result.output
    assert "search stopped short" not in result.output  # the photo was recovered beyond its thumbnail
    assert "dataset_mean_colour_psnr" not in m  # no --mean given: the dataset's mean colour is unknown
    # LPIPS is scored whenever its weights are found (docs/metrics.md), else reported as absent, never 0
    assert (m["lpips"] is None) == (load_lpips() is None)
    assert report["evaluation"]["lpips_available"] is (load_lpips() is not None)
    page = (out / "report.html").read_text()
    assert "tables/audit_samples.csv" not in page and "unlearnleak report AUDIT_DIR" in page  # no such files yet
    assert report["environment"]["versions"]["torch"]
    # the folder is also a run folder of one cell, read by the one reader: the same numbers as report.json
    from unlearnleak.report import load_run

    data = load_run(out)
    (row,) = data.cells
    assert row.cell == "audit" and row.status == "ok" and row.label_inference is None
    fr = row.feature_recovery
    assert fr is not None and fr.metrics is not None and fr.baselines is not None
    assert fr.metrics["psnr"] == m["psnr"] and fr.metrics["label_accuracy"] == report["evaluation"]["label_accuracy"]
    assert fr.baselines.thumbnail_4x4 == {k: m[f"thumbnail_4x4_{k}"] for k in ("psnr", "ssim", "lpips")}
    assert fr.baselines.dataset_mean_colour is None  # not given: never made up
    assert (out / "cells" / "audit" / "reconstructions.safetensors").read_bytes() == \
        (out / "reconstructions.safetensors").read_bytes()
    assert runner.invoke(app, ["report", str(out)]).exit_code == 0
    assert "Declared knowledge" in (out / "report" / "index.html").read_text()  # still the audit page


def test_a_search_that_stops_short_is_not_reported_as_a_safe_deletion(user_pair: Any,
        white_box_args: Callable[..., list[str]], tmp_path: Path) -> None:
    """One step of inversion recovers nothing; the photo itself explains ∇* exactly: the audit says the search
    failed rather than letting "nothing leaked" stand for a safe deletion."""
    out = tmp_path / "audit"
    result = runner.invoke(app, white_box_args(user_pair, out, "--iterations", "1", "--per-class", "0",
                                               "--ground-truth", str(user_pair.truth)))
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    m, costs = report["evaluation"]["mean"], report["evaluation"]["gradient_cost"]
    assert m["psnr"] <= m["thumbnail_4x4_psnr"]
    assert costs["reconstruction"] > 1e3 * costs["deleted_samples"]
    assert "the search stopped short: a stronger attack may recover more than this audit shows" in \
        " ".join(result.output.split())


@pytest.mark.parametrize(("psnr", "ours", "truth", "warned"), [
    (12.0, 1e-2, 1e-10, True),  # below the thumbnail, and the photo explains ∇* far better: the search failed
    (25.0, 1e-2, 1e-10, False),  # recovered beyond the thumbnail: nothing to warn about
    (12.0, 1e-2, 5e-3, False),  # the photo explains ∇* no better: ∇* says no more
])
def test_the_match_clause_warns_only_when_the_search_stopped_short(psnr: float, ours: float, truth: float,
                                                                   warned: bool) -> None:
    from unlearnleak.audit.pipeline import _match

    evaluation = {"mean": {"psnr": psnr, "thumbnail_4x4_psnr": 16.0},
                  "gradient_cost": {"reconstruction": ours, "deleted_samples": truth}}
    clause = _match(evaluation, ours)
    assert f"1 − cosine {ours:.1e}" in clause and f"themselves to {truth:.1e}" in clause
    assert ("stronger attack may recover more" in clause) is warned
    assert _match(None, 3e-4) == "reproduces the weight change to 1 − cosine 3.0e-04 (0 = exactly)"


def test_declared_knowledge_is_used_and_reported(user_pair: Any, white_box_args: Callable[..., list[str]],
        tmp_path: Path) -> None:
    out = tmp_path / "audit"
    result = runner.invoke(app, white_box_args(user_pair, out, "--iterations", "2", "--restarts", "1",
                                               "--per-class", "0", "--labels", "7", "--forget-size", "1"))
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    fr = report["attacks"][0]
    assert fr["result"]["labels"] == [7] and fr["result"]["label_source"] == "given"
    assert fr["knowledge_used"] == ["labels"]
    assert report["knowledge"]["labels"] == [7] and report["knowledge"]["n_forget"] == 1
    assert [a["name"] for a in report["attacks"]] == ["feature_recovery"]


def test_existing_results_are_refused_unless_overwrite(user_pair: Any, white_box_args: Callable[..., list[str]],
        tmp_path: Path) -> None:
    out = tmp_path / "audit"
    out.mkdir()
    (out / "report.json").write_text("{}")
    args = white_box_args(user_pair, out, "--iterations", "2", "--restarts", "1", "--per-class", "0")
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and "already holds results" in result.output and "--overwrite" in result.output
    assert (out / "report.json").read_text() == "{}"
    result = runner.invoke(app, [*args, "--overwrite"])
    assert result.exit_code == 0, result.output
    assert json.loads((out / "report.json").read_text())["format"] == "unlearnleak.audit/1"


def test_python_api_five_lines(user_pair: Any) -> None:
    from unlearnleak.attacks.feature_recovery import evaluate_reconstruction
    from unlearnleak.attacks.interface import FeatureRecovery
    from unlearnleak.audit import pair_from_files, read_ground_truth

    pair, _ = pair_from_files(user_pair.model_def, original=user_pair.original, unlearned=user_pair.unlearned,
                              input_shape=(3, 32, 32), num_classes=10, model_kwargs={"width": 4})
    rec = FeatureRecovery(iterations=5, restarts=1).attack(pair)
    x, y = read_ground_truth(user_pair.truth)
    assert y is not None
    assert evaluate_reconstruction(rec, x, y)["label_accuracy"] == 1.0


def test_attack_results_do_not_depend_on_the_record(tmp_path: Path) -> None:
    """A scenario folder attacked with and without its record.json/ground truth: identical reconstructions."""
    import shutil

    from unlearnleak.attacks.interface import FeatureRecovery
    from unlearnleak.commands.demo import feature_recovery_config
    from unlearnleak.pair import load_pair_folder
    from unlearnleak.scenario import build_scenario

    scn = build_scenario(feature_recovery_config(0, "cpu"))
    scn.save(tmp_path / "run")
    shutil.copytree(tmp_path / "run", tmp_path / "bare")
    for name in ("record.json", "ground_truth.safetensors", "config.json"):
        (tmp_path / "bare" / name).unlink()
    attack = FeatureRecovery(iterations=3, restarts=1)
    a = attack.attack(*load_pair_folder(tmp_path / "run"))
    b = attack.attack(*load_pair_folder(tmp_path / "bare"))
    assert torch.equal(a.x, b.x) and torch.equal(a.labels, b.labels)
    assert a.config["knowledge_used"] == b.config["knowledge_used"] == ["unlearning", "n_forget"]


@pytest.mark.parametrize("shape", ["3,32", "3,x,32", "-3,32,32"])
def test_bad_input_shape_text_is_one_line(user_pair: Any, white_box_args: Callable[..., list[str]],
        tmp_path: Path, shape: str) -> None:
    args = white_box_args(user_pair, tmp_path / "o")
    args[args.index("3,32,32")] = shape
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and result.output.count("error:") == 1 and "--input-shape" in result.output
    assert not (tmp_path / "o").exists()


def test_ctrl_c_keeps_the_finished_stages(user_pair: Any, white_box_args: Callable[..., list[str]],
                                          tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from unlearnleak.attacks.interface import LabelInference

    def interrupted(self: Any, original: Any, unlearned: Any, **_: Any) -> Any:
        raise KeyboardInterrupt

    monkeypatch.setattr(LabelInference, "attack", interrupted)
    out = tmp_path / "audit"
    result = runner.invoke(app, white_box_args(user_pair, out, "--iterations", "2", "--restarts", "1",
                                               "--per-class", "1"))
    assert result.exit_code == 130, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["partial"] is True and "interrupted" in report["partial_reason"]
    assert [a["name"] for a in report["attacks"]] == ["feature_recovery"]
    assert load_file(str(out / "reconstructions.safetensors"))["images"].shape == (1, 3, 32, 32)
    assert not list(tmp_path.glob(".audit.*"))  # no staging folder left behind


def test_the_label_attack_of_an_audit_is_a_row_section_with_chance(user_pair: Any,
        white_box_args: Callable[..., list[str]], tmp_path: Path) -> None:
    """The black-box guess of an audit is read back from its row with the same numbers as report.json, scored
    against the deleted class of the given ground truth, beside chance."""
    from unlearnleak.run_folder import read_rows

    out = tmp_path / "audit"
    result = runner.invoke(app, white_box_args(user_pair, out, "--iterations", "1", "--restarts", "1",
                                               "--per-class", "2", "--ground-truth", str(user_pair.truth)))
    assert result.exit_code in (0, 3), result.output
    pred = json.loads((out / "report.json").read_text())["labels"]["from_predictions"]
    (row,), _ = read_rows(out / "results.jsonl")
    li = row.label_inference
    assert li is not None and li.deleted == [user_pair.forget_y] and li.chance == 0.1
    assert (li.best, li.ranked, li.p_value, li.queries_original, li.queries_unlearned) == (
        pred["best"], pred["ranked"], pred["p_value"], pred["queries_original"], pred["queries_unlearned"])
    assert li.correct == (pred["best"] == user_pair.forget_y if pred["ranked"] else None)
    assert li.artifacts == {"confidence_change": "confidence_change.png"}
    assert (out / "cells" / "audit" / "confidence_change.png").is_file()
