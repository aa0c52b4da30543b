"""What a newcomer meets first (issue 20): options where they type them, help that shows the defaults and every
method, tables that keep their width in a log, one flag style, warnings where a result means nothing."""

from __future__ import annotations

import copy
import math
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
import typer
from rich.console import Console
from typer.testing import CliRunner

from unlearnleak.cli import app, default_threads, hoist_global_options
from unlearnleak.commands.scenario import PAPER, QUICK, chance_warning, scenario_table
from unlearnleak.experiments.console import headline_table
from unlearnleak.experiments.executors.local import available_cpus

runner = CliRunner()


@pytest.fixture
def restore_threads() -> Any:
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_threads_is_accepted_after_the_command(restore_threads: None) -> None:
    torch.set_num_threads(2)
    result = runner.invoke(app, ["version", "--threads", "1"])
    assert result.exit_code == 0, result.output
    assert torch.get_num_threads() == 1
    bad = runner.invoke(app, ["version", "--threads", "0"])
    assert bad.exit_code == 2 and bad.stderr.startswith("error: ") and "--threads" in bad.stderr


def test_hoisting_moves_only_global_options_given_after_the_command() -> None:
    commands = ["recover", "data", "version"]
    assert hoist_global_options(["recover", "runs/ga", "--threads", "2", "--out", "x"], commands) == [
        "--threads", "2", "recover", "runs/ga", "--out", "x"]
    assert hoist_global_options(["data", "list", "--threads=1"], commands) == ["--threads=1", "data", "list"]
    assert hoist_global_options(["--threads", "1", "version"], commands) == ["--threads", "1", "version"]
    assert hoist_global_options(["recover", "--", "--threads", "1"], commands) == ["recover", "--", "--threads", "1"]


def test_without_a_flag_torch_gets_half_the_cores(monkeypatch: pytest.MonkeyPatch, restore_threads: None) -> None:
    monkeypatch.delenv("UNLEARNLEAK_THREADS", raising=False)
    assert default_threads() == max(1, available_cpus() // 2)
    assert runner.invoke(app, ["version"]).exit_code == 0
    assert torch.get_num_threads() == default_threads()
    monkeypatch.setenv("UNLEARNLEAK_THREADS", "1")
    assert runner.invoke(app, ["version"]).exit_code == 0 and torch.get_num_threads() == 1


def test_scenario_help_shows_its_defaults_every_method_and_the_paper_setting() -> None:
    from unlearnleak.unlearning import UNLEARNING

    result = runner.invoke(app, ["scenario", "--help"], env={"COLUMNS": "240"})
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    methods = UNLEARNING.names()
    assert len(methods) >= 9 and "sisa" in methods and all(m in text for m in methods)
    for default in ("[default: gradient_ascent]", "[default: 32]", "[default: cifar10]", "[default: convnet]"):
        assert default in text, default
    assert "--paper" in text and "120 epochs" in text and "2 epochs on 2,048" in text


def test_quick_and_paper_settings_are_what_the_help_says() -> None:
    from unlearnleak.experiments.config import load_config
    from unlearnleak.scenario import ScenarioConfig

    quick = load_config(ScenarioConfig, None, [], base=dict(QUICK))
    paper = load_config(ScenarioConfig, None, [], base=dict(PAPER))
    assert quick.pretrain.epochs == 2 and quick.pretrain_rows == 2048 and quick.model_kwargs == {"width": 16}
    assert paper.pretrain.epochs == 120 and paper.pretrain.milestones == (44, 74, 105)
    assert paper.pretrain.lr == 0.1 and paper.pretrain.momentum == 0 and paper.pretrain.augment
    assert paper.model_kwargs == {"width": 64} and paper.holdout == 10_000 and paper.pretrain_rows is None
    overridden = load_config(ScenarioConfig, None, ["pretrain.epochs=5"], base=copy.deepcopy(QUICK))
    assert overridden.pretrain.epochs == 5 and overridden.pretrain.lr == 0.01  # --set changes one key only
    assert QUICK["pretrain"]["epochs"] == 2


def test_a_set_in_one_invocation_does_not_leak_into_the_next(tmp_path: Path) -> None:
    bad = runner.invoke(app, ["scenario", "--set", "pretrain.epochz=1", "--out", str(tmp_path / "a")])
    assert bad.exit_code == 2 and "pretrain.epochz" in bad.stderr
    other = runner.invoke(app, ["scenario", "--dataset", "cifar10", "--data-dir", str(tmp_path), "--out",
                                str(tmp_path / "b")])
    assert other.exit_code == 2 and "epochz" not in other.stderr and "cifar-10-batches-py" in other.stderr


def test_every_overwrite_option_is_one_flag_style() -> None:
    root = typer.main.get_command(app)
    seen = []

    def visit(command: Any, path: str) -> None:
        for sub_name, sub in (getattr(command, "commands", None) or {}).items():
            visit(sub, f"{path} {sub_name}")
        for param in getattr(command, "params", []):
            if param.name == "overwrite":
                seen.append(path)
                assert param.opts == ["--overwrite"] and param.secondary_opts == [] and param.is_flag, path

    visit(root, "unlearnleak")
    assert len(seen) >= 8  # scenario, recover, infer-label, audit, demo, run, sweep, report, study …


def test_tables_say_n_a_where_there_is_no_test_accuracy_never_nan() -> None:
    row = {"dataset": "embedded_cifar10", "model": "lenet", "method": "gradient_ascent", "k": 1, "n_train": 8,
           "utility": {"original_test_accuracy": math.nan, "served_test_accuracy": math.nan},
           "feature_recovery": None, "label_inference": None}
    console = Console(width=200, record=True)
    console.print(headline_table([row]))
    text = console.export_text()
    assert "nan" not in text and "n/a → n/a" in text
    scn = SimpleNamespace(
        record=SimpleNamespace(metrics={"base_test_accuracy": math.nan, "original_forget_accuracy": 1.0},
                               forget_labels=(3,), forget_indices=(5,)),
        config=SimpleNamespace(dataset="embedded_cifar10", model="lenet",
                               unlearning=SimpleNamespace(method="gradient_ascent")),
        knowledge=SimpleNamespace(n_train=8, n_forget=1))
    console = Console(width=200, record=True)
    console.print(scenario_table(scn))  # type: ignore[arg-type]
    text = console.export_text()
    assert "nan" not in text and "n/a" in text and "1.000" in text


def _scenario(accuracy: float, classes: int = 10, test_rows: int = 1000, epochs: int = 1) -> Any:
    return SimpleNamespace(record=SimpleNamespace(metrics={"base_test_accuracy": accuracy}),
                           test=[0] * test_rows, config=SimpleNamespace(pretrain=SimpleNamespace(epochs=epochs)),
                           pair=SimpleNamespace(spec=SimpleNamespace(num_classes=classes)))


def test_a_theta0_at_chance_is_flagged() -> None:
    warning = chance_warning(_scenario(0.100))
    assert warning is not None and warning.startswith("warning: θ0's test accuracy 0.100 is at chance (0.100")
    assert "pretrain.epochs" in warning and "--paper" in warning
    bound = 0.1 + 2 * math.sqrt(0.1 * 0.9 / 1000)  # two standard errors above chance on 1,000 test rows
    assert chance_warning(_scenario(bound - 1e-3)) is not None
    assert chance_warning(_scenario(bound + 1e-3)) is None
    assert chance_warning(_scenario(0.34)) is None
    assert chance_warning(_scenario(0.100, epochs=0)) is None  # an untrained θ0 on purpose (the demo's)
    assert chance_warning(_scenario(math.nan)) is None  # no test split: nothing to judge


def test_scenario_warns_on_stderr_exactly_when_theta0_is_at_chance(tmp_path: Path) -> None:
    import json

    from unlearnleak.data import load_dataset

    args = ["scenario", "--dataset", "digits", "--model", "lenet", "--set", "model_kwargs={}", "--set",
            "holdout=300", "--set", "pretrain.epochs=1", "--set", "pretrain.lr=1e-9", "--set",
            "pretrain.momentum=0", "--n-train", "32", "--k", "2", "--out", str(tmp_path / "run")]
    result = runner.invoke(app, args)  # lr 1e-9: θ0 is its random initialisation
    assert result.exit_code == 0, result.output
    accuracy = json.loads((tmp_path / "run" / "record.json").read_text())["metrics"]["base_test_accuracy"]
    n = len(load_dataset("digits", "test"))
    warned = [line for line in result.stderr.splitlines() if line.startswith("warning: θ0's test accuracy")]
    assert bool(warned) == (accuracy <= 0.1 + 2 * math.sqrt(0.1 * 0.9 / n)), (accuracy, result.stderr)
    assert len(warned) <= 1 and (tmp_path / "run" / "weights.safetensors").is_file()  # a warning, not a refusal


def test_run_list_keeps_every_name_and_description_whole_off_a_terminal() -> None:
    from unlearnleak.experiments.config import read_yaml_mapping
    from unlearnleak.experiments.schema import resolve_config_path, shipped_configs

    result = runner.invoke(app, ["run", "--list"])  # no COLUMNS: CliRunner's output is not a terminal
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    for name in shipped_configs():
        first = str(read_yaml_mapping(resolve_config_path(name))["description"]).strip().splitlines()[0]
        assert any(name in line and first in line for line in lines), name
    assert "…" not in result.stdout


def test_piped_scenario_prints_progress_lines_never_blank_ones(tmp_path: Path) -> None:
    args = ["scenario", "--dataset", "digits", "--model", "lenet", "--set", "model_kwargs={}", "--set",
            "holdout=300", "--set", "pretrain.epochs=2", "--n-train", "32", "--k", "2", "--out", str(tmp_path / "r")]
    result = runner.invoke(app, args, env={"UNLEARNLEAK_PROGRESS": "auto", "UNLEARNLEAK_PROGRESS_INTERVAL": "0"})
    assert result.exit_code == 0, result.output
    lines = result.stderr.splitlines()
    assert all(line.strip() for line in lines), lines  # off a terminal: no blank lines, no bar remnants
    steps = [line for line in lines if line.startswith("pretraining θ0 (2 epochs of ")]
    assert steps and re.search(r": \d+/\d+ \(\d+%\), elapsed \d+:\d\d, ETA (\d+:\d\d|\?)$", steps[0]), steps[:2]
    assert steps[-1].split(": ")[1].startswith(tuple(f"{n}/{n} done in" for n in range(1, 1000)))


def test_the_demo_folder_reports(tmp_path: Path) -> None:
    """`demo` writes a run folder of its two cells; `report` draws both (the README says so)."""
    from typer.testing import CliRunner

    from unlearnleak.cli import app

    out = tmp_path / "demo"
    done = CliRunner().invoke(app, ["demo", "--out", str(out), "--iterations", "20", "--json"])
    assert done.exit_code == 0, done.output
    assert (out / "cells" / "feature_recovery" / "reconstruction.png").is_file()
    assert (out / "cells" / "label_inference" / "confidence_change.png").is_file()
    report = CliRunner().invoke(app, ["report", str(out)])
    assert report.exit_code == 0, report.output
    page = (out / "report" / "index.html").read_text(encoding="utf-8")
    assert "2 of 2 cells finished" in page and "demo-feature-recovery" in page and "demo-label-inference" in page
