"""Hostile configs, trust: code named in a config (a run folder's experiment.yaml, --set, --grid, quick:, a study
or scenario config) runs only when the same code is named on the command line (--model-def / --model).

Each refusal: exit 2, one `error:` line naming the key and the flag that accepts it, no folder written, and the
named file never imported (it would write a marker file at import).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from runfolder_cells import CELL_FN
from typer.testing import CliRunner

from cli_checks import one_error
from unlearnleak.cli import app
from unlearnleak.experiments.schema import load_experiment

runner = CliRunner()

EVIL = '''\
from pathlib import Path
Path(__file__).with_name("IMPORTED").write_text("this file was imported")
import torch
class Net(torch.nn.Module):
    def __init__(self, input_shape, num_classes):
        super().__init__()
        self.f = torch.nn.Linear(int(torch.tensor(input_shape).prod()), num_classes + 1)  # one output too many
    def forward(self, x):
        return self.f(x.flatten(1))
'''


@pytest.fixture
def evil(tmp_path: Path) -> Path:
    """A model file that leaves IMPORTED beside itself when it is imported."""
    folder = tmp_path / "code"
    folder.mkdir()
    path = folder / "evil.py"
    path.write_text(EVIL, encoding="utf-8")
    return path


def imported(evil: Path) -> bool:
    return evil.with_name("IMPORTED").exists()


def write(tmp_path: Path, text: str, name: str = "experiment.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_an_experiment_config_naming_code_is_refused(tmp_path: Path, evil: Path) -> None:
    config = write(tmp_path, f"scenario:\n  model: {evil}:Net\n  holdout: 50\n  n_train: 4\n")
    for kind in ("run", "sweep"):
        extra = ["--grid", "scenario.n_train=[4,6]"] if kind == "sweep" else []
        one_error(runner.invoke(app, [kind, str(config), "--out", str(tmp_path / "out"), *extra]),
                  "scenario.model names code", f"--model-def {evil}:Net")
    assert not (tmp_path / "out").exists() and not imported(evil)


@pytest.mark.parametrize("args", [
    ["--set", "scenario.model={evil}:Net"],
    ["--quick"],  # the config's quick: section names the code
])
def test_code_from_set_or_quick_is_refused(tmp_path: Path, evil: Path, args: list[str]) -> None:
    config = write(tmp_path, f"scenario:\n  holdout: 50\n  n_train: 4\nquick:\n  scenario.model: {evil}:Net\n")
    args = [a.format(evil=evil) for a in args]
    one_error(runner.invoke(app, ["run", str(config), "--out", str(tmp_path / "out"), *args]),
              "scenario.model names code", "--model-def")
    assert not (tmp_path / "out").exists() and not imported(evil)


def test_code_from_a_grid_is_refused(tmp_path: Path, evil: Path) -> None:
    config = write(tmp_path, "scenario:\n  holdout: 50\n  n_train: 4\n")
    one_error(runner.invoke(app, ["sweep", str(config), "--out", str(tmp_path / "out"), "--grid",
                                  f"scenario.model=[lenet, {evil}:Net]"]), "scenario.model names code")
    assert not (tmp_path / "out").exists() and not imported(evil)


def test_a_received_run_folder_does_not_run_code_on_resume(tmp_path: Path, evil: Path) -> None:
    """experiment.yaml says "Rerun or resume with: unlearnleak run <this file>": that alone runs no code."""
    run = tmp_path / "received"
    run.mkdir()
    config = write(run, "# Rerun or resume with: unlearnleak run|sweep <this file> --out <this folder>\n"
                        f"scenario:\n  model: {evil}:Net\n  holdout: 50\n  n_train: 4\n")
    (run / "run.json").write_text(json.dumps({"experiment": "x", "cells": {}}), encoding="utf-8")
    before = sorted(p.name for p in run.iterdir())
    one_error(runner.invoke(app, ["run", str(config), "--out", str(run)]), "names code", "--model-def")
    assert sorted(p.name for p in run.iterdir()) == before and not imported(evil)


@pytest.mark.parametrize("study", ["methods", "defenses"])
def test_a_study_config_naming_code_is_refused(tmp_path: Path, evil: Path, study: str) -> None:
    by_set = ["--set", f"setting.model={evil}:Net"]
    one_error(runner.invoke(app, ["study", study, "--out", str(tmp_path / "out"), *by_set]),
              "setting.model names code", "--model-def")
    config = write(tmp_path, f"setting:\n  model: {evil}:Net\n", "study.yaml")
    one_error(runner.invoke(app, ["study", study, "--out", str(tmp_path / "out"), "--config", str(config)]),
              "setting.model names code")
    assert not (tmp_path / "out").exists() and not imported(evil)


def test_a_scenario_config_naming_code_needs_the_model_flag(tmp_path: Path, evil: Path) -> None:
    config = write(tmp_path, f"model: {evil}:Net\nholdout: 50\nn_train: 4\n", "scenario.yaml")
    one_error(runner.invoke(app, ["scenario", "--config", str(config), "--out", str(tmp_path / "out")]),
              "model names code", f"--model {evil}:Net")
    assert not (tmp_path / "out").exists() and not imported(evil)


def test_a_module_path_is_code_too(tmp_path: Path) -> None:
    config = write(tmp_path, "scenario:\n  model: 'os:system'\n")
    one_error(runner.invoke(app, ["run", str(config), "--out", str(tmp_path / "out")]),
              "names code ('os:system')", "--model-def os:system")
    assert not (tmp_path / "out").exists()


def test_model_def_must_name_the_same_code_and_be_used(tmp_path: Path, evil: Path) -> None:
    other = evil.with_name("other.py")
    other.write_text(EVIL, encoding="utf-8")
    config = write(tmp_path, f"scenario:\n  model: {evil}:Net\n  holdout: 50\n  n_train: 4\n")
    out = str(tmp_path / "out")
    one_error(runner.invoke(app, ["run", str(config), "--out", out, "--model-def", f"{other}:Net"]),
              "scenario.model names code")
    one_error(runner.invoke(app, ["run", str(config), "--out", out, "--model-def", f"{evil}:Other"]),
              "scenario.model names code")
    plain = write(tmp_path, "scenario:\n  holdout: 50\n  n_train: 4\n", "plain.yaml")
    one_error(runner.invoke(app, ["run", str(plain), "--out", out, "--model-def", f"{evil}:Net"]),
              "--model-def", "names this code (its models: convnet)")
    one_error(runner.invoke(app, ["study", "methods", "--out", out, "--model-def", f"{evil}:Net"]),
              "--model-def", "no model in the study config names this code (its models: lenet)")
    assert not (tmp_path / "out").exists() and not imported(evil)


def test_named_code_is_accepted_and_then_runs(tmp_path: Path, evil: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--model-def (any spelling of the same file) lets the config through: loading imports nothing; the
    preflight then builds the model, so the code runs and its wrong output shape is one error line."""
    monkeypatch.chdir(evil.parent)
    config = write(tmp_path, f"scenario:\n  model: {evil}:Net\n  dataset: digits\n  test_split: test\n"
                             "  holdout: 200\n  n_train: 8\n")
    assert load_experiment(config, model_defs=["./evil.py:Net"]).scenario.model == f"{evil}:Net"
    assert not imported(evil)
    out = tmp_path / "out"
    ok = runner.invoke(app, ["run", str(config), "--out", str(out), "--model-def", "evil.py:Net",
                             "--cell-fn", CELL_FN, "--workers", "1"])  # a cell function that builds no model
    assert ok.exit_code == 0, ok.output
    assert "--model-def" in json.loads((out / "run.json").read_text())["argv"]
    assert not imported(evil)
    one_error(runner.invoke(app, ["run", str(config), "--out", str(tmp_path / "real"), "--model-def",
                                  f"{evil}:Net"]), "returns outputs of shape (1, 11)")
    assert imported(evil) and not (tmp_path / "real").exists()
