"""`unlearnleak recover` on a saved ModelPair folder: outputs, evaluation only from the ground-truth file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image
from recover_pairs import one_step_pair
from typer.testing import CliRunner

from unlearnleak.attacks.feature_recovery import RECONSTRUCTION_FILE, Reconstruction
from unlearnleak.cli import app


@pytest.fixture
def pair_dir(tmp_path: Path) -> Path:
    """A pair unlearned by one gradient-ascent step on two samples, with its ground truth beside it."""
    return one_step_pair(tmp_path / "pair", [4, 8])


def test_recover_writes_reconstruction_grid_and_results(pair_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["recover", str(pair_dir), "--out", str(out), "--iterations", "6",
                                      "--restarts", "2", "--set", "bn_prior=0"])
    assert result.exit_code == 0, result.output
    rec = Reconstruction.load(out / RECONSTRUCTION_FILE)
    assert rec.x.shape == (2, 3, 16, 16) and rec.label_source == "inferred" and rec.iterations == 6
    assert rec.labels.tolist() == [4, 8]
    results = json.loads((out / "results.json").read_text())
    assert results["reconstruction"]["config"]["restarts"] == 2
    assert results["reconstruction"]["config"]["bn_prior"] == 0
    assert results["environment"]["versions"]["torch"]
    evaluation = results["evaluation"]
    assert evaluation["label_accuracy"] == 1.0 and len(evaluation["samples"]) == 2
    assert sorted(evaluation["assignment"]) == [0, 1]
    assert all(isinstance(s["psnr"], float) for s in evaluation["samples"]), evaluation["samples"]
    with Image.open(out / "grid.png") as grid:
        assert grid.size[0] > 2 * 16 * 4 and grid.size[1] > 2 * 16 * 4  # two columns, two rows, ×4


def test_attack_never_reads_the_ground_truth(pair_dir: Path, tmp_path: Path) -> None:
    (pair_dir / "ground_truth.safetensors").write_bytes(b"not a safetensors file")
    ok = CliRunner().invoke(app, ["recover", str(pair_dir), "--out", str(tmp_path / "a"), "--iterations", "2",
                                  "--restarts", "1", "--labels", "4,8", "--no-eval"])
    assert ok.exit_code == 0, ok.output
    results = json.loads((tmp_path / "a" / "results.json").read_text())
    assert results["evaluation"] is None and results["reconstruction"]["label_source"] == "given"
    report = CliRunner().invoke(app, ["report", str(tmp_path / "a")])  # an unscored cell reports, unscored
    assert report.exit_code == 0, report.output
    page = (tmp_path / "a" / "report" / "index.html").read_text(encoding="utf-8")
    assert "1 of 1 cells finished" in page and "Failed cells" not in page
    bad = CliRunner().invoke(app, ["recover", str(pair_dir), "--out", str(tmp_path / "b"), "--iterations", "2",
                                   "--restarts", "1"])
    assert bad.exit_code == 2 and "ground_truth.safetensors" in bad.output


@pytest.mark.parametrize("args, message", [
    (["--labels", "4,x"], "--labels"),
    (["--labels", "4"], "1 labels given for k = 2"),
    (["--mode", "exact"], "θ0, N and k"),
    (["--set", "colour=3"], "colour"),
    (["--set", "race_agreement=-1"], "race_agreement: Input should be greater than or equal to 0"),
    (["--set", "race_consensus=1"], "race_consensus: Input should be less than 1"),
])
def test_user_errors_exit_2(pair_dir: Path, tmp_path: Path, args: list[str], message: str) -> None:
    result = CliRunner().invoke(app, ["recover", str(pair_dir), "--out", str(tmp_path / "o"), *args])
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_missing_pair_folder_exits_2(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["recover", str(tmp_path / "nope")])
    assert result.exit_code == 2 and "manifest.json" in result.output


def test_recover_says_its_verdict_beside_the_baselines_and_json_is_one_document(pair_dir: Path,
                                                                                tmp_path: Path) -> None:
    from unlearnleak.verdicts import image_verdict

    args = ["recover", str(pair_dir), "--iterations", "6", "--restarts", "1", "--set", "bn_prior=0"]
    result = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "a")])
    assert result.exit_code == 0, result.output
    results = json.loads((tmp_path / "a" / "results.json").read_text())
    base = {name: values["psnr"] for name, values in results["baselines"].items()}
    expected = image_verdict(results["evaluation"]["mean"]["psnr"], base)
    assert expected is not None and f"verdict: {expected.sentence}" in result.stdout
    for row in ("baseline: the dataset's mean colour", "baseline: a 4×4 thumbnail of the photo", "mean"):
        assert row in result.stdout, row
    assert "labels read from the weight change: 2 of 2 right" in result.stdout
    assert not any(line.lstrip().startswith("{") for line in result.stdout.splitlines())  # no stray JSON line
    quiet = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "b"), "--json"])
    assert quiet.exit_code == 0, quiet.output
    summary = json.loads(quiet.stdout)  # the whole of stdout is one JSON document
    assert summary["out"] == str(tmp_path / "b") and summary["verdict"] == expected.sentence
    assert summary["leaked"] is expected.leaked and summary["level"] == expected.level
    assert set(summary["baselines"]) == {"dataset_mean_colour", "own_mean_colour", "thumbnail_4x4"}
    assert "results.json" in summary["files"] and summary["label_accuracy"] == 1.0


def test_recover_writes_a_one_cell_run_folder_that_report_reads(pair_dir: Path, tmp_path: Path) -> None:
    """`scenario → recover → report`: the recover folder is a run folder of one cell, read by the one reader."""
    from cli_checks import one_error
    from unlearnleak.run_folder import read_rows

    out = tmp_path / "out"
    assert CliRunner().invoke(app, ["recover", str(pair_dir), "--out", str(out), "--iterations", "6",
                                    "--restarts", "1", "--seed", "3"]).exit_code == 0
    rows, torn = read_rows(out / "results.jsonl")
    assert torn == b"" and len(rows) == 1
    row, results = rows[0], json.loads((out / "results.json").read_text())
    assert row.cell == "recover" and row.status == "ok" and row.seed == 3 and row.params == {
        "command": "recover", "preset": "best", "seed": 3}
    fr = row.feature_recovery
    assert fr is not None and fr.metrics is not None and fr.baselines is not None
    assert fr.metrics["psnr"] == results["evaluation"]["mean"]["psnr"]  # one number, two files, the same
    assert fr.baselines.thumbnail_4x4 == results["baselines"]["thumbnail_4x4"]
    assert fr.artifacts == {"reconstruction": "reconstruction.safetensors", "grid": "grid.png"}
    for name in fr.artifacts.values():  # the row's files in its cell folder, the documented ones at the top
        assert (out / "cells" / "recover" / name).read_bytes() == (out / name).read_bytes()
    assert json.loads((out / "run.json").read_text())["cells"] == {"recover": row.params}

    result = CliRunner().invoke(app, ["report", str(out)])
    assert result.exit_code == 0, result.output
    page = (out / "report" / "index.html").read_text(encoding="utf-8")
    assert "1 of 1 cells finished" in page and "thumbnail" in page and "recover" in page

    lines = (out / "results.jsonl").read_text().splitlines()  # a corrupted row: one line, exit 2, nothing written
    (out / "results.jsonl").write_text(lines[0].replace('"psnr": ', '"psnr": "high", "was": ', 1) + "\n")
    one_error(CliRunner().invoke(app, ["report", str(out), "--out", str(tmp_path / "r1")]),
              "results.jsonl line 1", "`feature_recovery.metrics.psnr`", "--overwrite")
    assert not (tmp_path / "r1").exists()


def test_report_reads_a_recover_folder_of_an_earlier_version(pair_dir: Path, tmp_path: Path) -> None:
    """A folder from before `recover` wrote run folders (results.json only) reports as the same one cell; one
    written before results.json held its row fails in one line saying how to convert it."""
    from cli_checks import one_error
    from unlearnleak.storage import remove_tree

    out = tmp_path / "out"
    assert CliRunner().invoke(app, ["recover", str(pair_dir), "--out", str(out), "--iterations", "6",
                                    "--restarts", "1"]).exit_code == 0
    for name in ("results.jsonl", "run.json", "cells"):
        remove_tree(out / name) if (out / name).is_dir() else (out / name).unlink()
    result = CliRunner().invoke(app, ["report", str(out)])
    assert result.exit_code == 0, result.output
    page = (out / "report" / "index.html").read_text(encoding="utf-8")
    assert "1 of 1 cells finished" in page and "thumbnail" in page and "recover" in page
    results = json.loads((out / "results.json").read_text())
    results.pop("feature_recovery")  # as an even earlier unlearnleak wrote it
    (out / "results.json").write_text(json.dumps(results))
    one_error(CliRunner().invoke(app, ["report", str(out), "--out", str(tmp_path / "r2")]),
              "earlier unlearnleak `recover`", "--overwrite")
    assert not (tmp_path / "r2").exists()
