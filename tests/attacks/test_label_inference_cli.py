"""`unlearnleak infer-label` on a saved ModelPair: the guess, the figures, reusable probes, clean errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import typer
from typer.testing import CliRunner

from unlearnleak.commands.infer_label import register
from unlearnleak.models import ModelSpec, build_model
from unlearnleak.pair import ModelPair
from unlearnleak.record import RunRecord

SHAPE = (3, 8, 8)


@pytest.fixture
def app() -> typer.Typer:
    app = typer.Typer()
    register(app)

    @app.command("noop")
    def noop() -> None:  # a second command, so typer keeps sub-command names
        """Nothing."""

    return app


@pytest.fixture
def pair_dir(tmp_path: Path) -> Path:
    """An MLP pair whose 'unlearned' model lost confidence in class 1 (its bias lowered)."""
    spec = ModelSpec("mlp", SHAPE, 10, (0.5,) * 3, (0.25,) * 3, {"hidden": [16]})
    torch.manual_seed(0)
    model = build_model(spec)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(3.0)
    original = {k: v.clone() for k, v in model.state_dict().items()}
    unlearned = {k: v.clone() for k, v in original.items()}
    bias = [k for k in unlearned if k.endswith("bias")][-1]
    unlearned[bias][1] -= 3.0
    pair = ModelPair(spec=spec, original=original, unlearned=unlearned)
    RunRecord(forget_labels=(1, 1), dataset={"classes": list("abcdefghij")}).save(tmp_path / "pair")
    return pair.save(tmp_path / "pair")


def test_infer_label_writes_guess_figures_and_probes(app: typer.Typer, pair_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["infer-label", str(pair_dir), "--per-class", "2", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "deleted (ground truth)" in result.output
    assert "verdict: label leaked: class 1 (b) was deleted" in result.output
    assert "mean Δ p_c" not in result.output and "log-odds" in result.output
    record = json.loads((out / "guess.json").read_text())
    assert record["guess"]["predicted"] == [1] and record["deleted_labels"] == [1]
    assert record["guess"]["level"] == 0.05 and record["guess"]["p_value"] <= 0.05
    assert record["guess"]["calibration"] == "null_pairs"  # nes probes, 10 classes: the measured null pairs
    assert record["guess"]["queries_unlearned"] == 20
    for name in ("confidence_change.png", "probes.png", "probes/probes.safetensors"):
        assert (out / name).is_file(), name
    again = CliRunner().invoke(app, ["infer-label", str(pair_dir), "--probes", str(out / "probes"), "--json"])
    assert again.exit_code == 0, again.output
    summary = json.loads(again.stdout)  # --json: one JSON document on stdout, nothing else
    assert summary["out"] is None and summary["leaked"] is True and summary["deleted"] == [1]
    assert summary["verdict"].startswith("label leaked: class 1 (b) was deleted")
    replayed = summary["guess"]
    assert replayed["statistic"] == "log_odds" and replayed["ranked"][0] == 1
    assert replayed["changes"][1] < -2.5  # the output bias of class 1 was lowered by 3: its log-odds fall ≈ 3
    chosen = CliRunner().invoke(app, ["infer-label", str(pair_dir), "--probes", str(out / "probes"),
                                      "--calibration", "gaussian", "--level", "0.01", "--test", "robust", "--json"])
    assert chosen.exit_code == 0, chosen.output
    verdict = json.loads(chosen.stdout)["guess"]
    assert verdict["calibration"] == "gaussian" and verdict["level"] == 0.01 and verdict["test"] == "robust"
    assert verdict["predicted"] == [1]


def test_infer_label_errors_are_one_line(app: typer.Typer, pair_dir: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["infer-label", str(pair_dir), "--generator", "nope"])
    assert result.exit_code == 2 and "unknown probe generator" in result.output
    result = CliRunner().invoke(app, ["infer-label", str(pair_dir), "--set", "tiles=[0]"])
    assert result.exit_code == 2 and "tiles" in result.output
    result = CliRunner().invoke(app, ["infer-label", str(pair_dir), "--statistic", "median"])
    assert result.exit_code == 2 and "--statistic" in result.output
    result = CliRunner().invoke(app, ["infer-label", str(tmp_path / "missing")])
    assert result.exit_code == 2 and "missing" in result.output
    result = CliRunner().invoke(app, ["infer-label", str(pair_dir), "--budget", "5", "--per-class", "1"])
    assert result.exit_code == 2 and "budget" in result.output


def test_no_verdict_is_one_line_and_exit_status_3(app: typer.Typer, pair_dir: Path, tmp_path: Path) -> None:
    """Probes that miss a class: one line naming the class and why, the documented status, no NaN, no ranking."""
    from unlearnleak.attacks.label_inference import ProbeSet
    from unlearnleak.commands.common import EXIT_NO_VERDICT

    made = CliRunner().invoke(app, ["infer-label", str(pair_dir), "--per-class", "3", "--out", str(tmp_path / "a")])
    assert made.exit_code == 0, made.output
    probes = ProbeSet.load(tmp_path / "a" / "probes")
    probes.subset(probes.target != 4).save(tmp_path / "few")
    result = CliRunner().invoke(app, ["infer-label", str(pair_dir), "--probes", str(tmp_path / "few")])
    assert result.exit_code == EXIT_NO_VERDICT == 3
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("no verdict on the label: class 4 (e) has fewer than 3 probes"), lines
    assert "nan" not in result.output.lower() and "nothing was ranked or tested" in lines[0]
    assert "largest confidence drop" not in result.output and "1st" not in result.output
    out = tmp_path / "out"
    written = CliRunner().invoke(app, ["infer-label", str(pair_dir), "--probes", str(tmp_path / "few"),
                                       "--out", str(out)])
    assert written.exit_code == 3 and len(written.stdout.strip().splitlines()) == 1
    record = json.loads((out / "guess.json").read_text())
    assert record["guess"]["verdict"] == "no_verdict" and record["guess"]["lacking"] == [4]
    assert record["guess"]["ranked"] == [] and record["evaluation"]["correct"] is None
    as_json = CliRunner().invoke(app, ["infer-label", str(pair_dir), "--probes", str(tmp_path / "few"), "--json"])
    summary = json.loads(as_json.stdout)
    assert as_json.exit_code == 3 and summary["state"] == "no_verdict" and not summary["leaked"]
    assert summary["verdict"].startswith("no verdict on the label: class 4")


def test_infer_label_writes_a_one_cell_run_folder_that_report_reads(pair_dir: Path, tmp_path: Path) -> None:
    """`infer-label → report`: the folder is a run folder of one cell; an earlier guess.json-only folder still
    reports; a corrupted row fails in one line."""
    from cli_checks import one_error
    from unlearnleak.cli import app as main_app
    from unlearnleak.run_folder import read_rows
    from unlearnleak.storage import remove_tree

    out = tmp_path / "out"
    assert CliRunner().invoke(main_app, ["infer-label", str(pair_dir), "--per-class", "2", "--out",
                                         str(out)]).exit_code == 0
    record = json.loads((out / "guess.json").read_text())
    assert record["format"] == "unlearnleak.infer-label/1"
    rows, _ = read_rows(out / "results.jsonl")
    assert len(rows) == 1 and rows[0].cell == "infer-label" and rows[0].status == "ok"
    li = rows[0].label_inference
    assert li is not None and li.correct is True and li.ranked[0] == 1 and li.chance == 0.1
    assert li.to_dict() == record["evaluation"] | {"artifacts": li.artifacts}  # the probes stay at the top
    assert set(li.artifacts) == {"confidence_change", "probe_grid"} and (out / "probes").is_dir()
    assert all((out / "cells" / "infer-label" / name).is_file() for name in li.artifacts.values())
    result = CliRunner().invoke(main_app, ["report", str(out)])
    assert result.exit_code == 0, result.output
    page = (out / "report" / "index.html").read_text(encoding="utf-8")
    assert "1 of 1 cells finished" in page and "infer-label" in page and "label leaked" in page

    old = tmp_path / "old"  # as an earlier unlearnleak wrote it: guess.json and the figures only
    old.mkdir()
    for name in ("guess.json", "confidence_change.png", "probes.png"):
        (old / name).write_bytes((out / name).read_bytes())
    result = CliRunner().invoke(main_app, ["report", str(old)])
    assert result.exit_code == 0, result.output
    assert "1 of 1 cells finished" in (old / "report" / "index.html").read_text(encoding="utf-8")

    remove_tree(out / "report")
    (out / "results.jsonl").write_text(json.dumps({"cell": "infer-label", "status": "ok", "params": {},
                                                   "label_inference": {"ranked": "1,2"}}) + "\n")
    one_error(CliRunner().invoke(main_app, ["report", str(out)]), "results.jsonl line 1",
              "`label_inference.ranked`")
    assert not (out / "report").exists()


@pytest.fixture
def digits_pair_dir(tmp_path: Path) -> Path:
    """A 1×8×8 MLP pair whose unlearned model lost confidence in class 1, with the run record of a `digits`
    scenario (D_ft: rows 0-7 of a 300-row private pool): its own null pairs can be made on the pool's other rows."""
    from unlearnleak.data import load_dataset

    spec = ModelSpec("mlp", (1, 8, 8), 10, (0.5,), (0.25,), {"hidden": [16]})
    torch.manual_seed(0)
    model = build_model(spec)
    train = load_dataset("digits", "train")
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(150):  # θ: fitted to the pretraining rows (after the pool), sure of every class
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(train.x[300:]), train.y[300:]).backward()
        optimizer.step()
    original = {k: v.detach().clone() for k, v in model.state_dict().items()}
    unlearned = {k: v.clone() for k, v in original.items()}
    unlearned[[k for k in unlearned if k.endswith("bias")][-1]][1] -= 10.0
    config = {"dataset": "digits", "holdout": 300, "n_train": 8, "forget": {"k": 1}}
    RunRecord(config=config, ft_indices=tuple(range(8)), forget_labels=(1,),
              dataset={"classes": list("abcdefghij")}).save(tmp_path / "pair")
    return ModelPair(spec=spec, original=original, unlearned=unlearned).save(tmp_path / "pair")


def test_infer_label_calibrates_on_the_pairs_own_null_pairs_by_default(
        app: typer.Typer, digits_pair_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The run record names the scenario: the verdict is calibrated on θ's own null pairs, made once on the
    scenario's 292 public rows (the pool outside D_ft) and read back from the cache the next time."""
    monkeypatch.setenv("UNLEARNLEAK_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["infer-label", str(digits_pair_dir), "--per-class", "2", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "(calibrated on this model's own null pairs)" in result.output
    assert "calibration: 200 null pairs of θ itself on 292 labelled public rows (made in" in result.output
    record = json.loads((out / "guess.json").read_text())
    assert record["guess"]["calibration"] == "own_nulls" and record["guess"]["predicted"] == [1]
    info = record["evaluation"]["calibration_info"]
    assert (info["pairs"], info["public_rows"], info["cached"]) == (200, 292, False)
    again = CliRunner().invoke(app, ["infer-label", str(digits_pair_dir), "--probes", str(out / "probes"), "--json"])
    assert again.exit_code == 0, again.output
    summary = json.loads(again.stdout)
    assert summary["calibration"]["method"] == "own_nulls" and summary["calibration"]["cached"] is True
    assert summary["guess"]["changes"] == record["guess"]["changes"]
    assert summary["guess"]["p_value"] == record["guess"]["p_value"]  # the same null pairs, read back
    chosen = CliRunner().invoke(app, ["infer-label", str(digits_pair_dir), "--probes", str(out / "probes"),
                                      "--calibration", "auto", "--json"])
    assert chosen.exit_code == 0, chosen.output
    assert json.loads(chosen.stdout)["guess"]["calibration"] == "null_pairs"
    assert "note" not in json.loads(chosen.stdout)["calibration"]  # asked for: nothing to explain


def test_infer_label_without_public_rows_falls_back_to_auto_saying_why(app: typer.Typer, pair_dir: Path,
                                                                       tmp_path: Path) -> None:
    """A record that names no scenario: the default verdict rests on `auto`, and a note says why and what to pass;
    --calibration own_nulls asked for there is refused (exit 2) before any probe is made."""
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["infer-label", str(pair_dir), "--per-class", "2", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "note: auto calibration (other models' null pairs): own null pairs of θ need labelled public rows" \
        in result.output and "a folder from `unlearnleak scenario` does" in result.output
    record = json.loads((out / "guess.json").read_text())
    assert record["guess"]["calibration"] == "null_pairs"
    assert "does not name the scenario's dataset" in record["evaluation"]["calibration_info"]["note"]
    refused = CliRunner().invoke(app, ["infer-label", str(pair_dir), "--calibration", "own_nulls",
                                       "--out", str(tmp_path / "refused")])
    assert refused.exit_code == 2, refused.output
    assert "error: --calibration own_nulls needs labelled public rows of the pair's scenario" in refused.output
    assert "--calibration auto" in refused.output and not (tmp_path / "refused").exists()


def test_infer_label_own_nulls_refused_when_the_dataset_cannot_be_read(
        app: typer.Typer, digits_pair_dir: Path, tmp_path: Path) -> None:
    """The record names a dataset whose files are not in --data-dir: asked-for own_nulls is an error naming it."""
    record = json.loads((digits_pair_dir / "record.json").read_text())
    record["config"] = {**record["config"], "dataset": "cifar10"}
    (digits_pair_dir / "record.json").write_text(json.dumps(record))
    refused = CliRunner().invoke(app, ["infer-label", str(digits_pair_dir), "--calibration", "own_nulls",
                                       "--data-dir", str(tmp_path / "no-data")])
    assert refused.exit_code == 2, refused.output
    assert "--calibration own_nulls" in refused.output and "cifar10" in refused.output
    assert "pass --data-dir with the scenario's dataset" in refused.output
