"""`unlearnleak run` and `unlearnleak sweep`: config errors name the key (exit 2, nothing written); a sweep runs."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from runner_cells import CELL_FN, markers
from typer.testing import CliRunner

from cli_checks import one_error
from unlearnleak.cli import app

runner = CliRunner()


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "experiment.yaml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("text, args, needles", [
    ("scenario:\n  n_trian: 4\n", [], ["scenario.n_trian", "unknown key"]),
    ("scenario:\n  n_train: many\n", [], ["scenario.n_train", "'many'"]),
    ("seeds: [0, 0]\n", [], ["seeds", "distinct"]),
    ("device: tpu\n", [], ["device"]),
    ("{}\n", ["--set", "attacks.feature_recovery.iterations=-3"], ["attacks.feature_recovery.iterations"]),
    ("sweep:\n  scenario.n_trian: [4, 6]\n", [], ["scenario.n_trian", "unknown key"]),
    ("{}\n", ["--executor", "slurm"], ["unknown executor 'slurm'", "local, ray"]),
    ("{}\n", ["--address", "auto"], ["--address auto", "--executor ray"]),
    ("{}\n", ["--workers", "0"], ["--workers"]),
    ("{}\n", ["--executor", "ray", "--address", "127.0.0.1:9"], ["--address 127.0.0.1:9", "ray start --head"]),
    ("{}\n", ["--executor", "ray", "--set", "device=cuda:1"], ["cuda:1", "device=cuda"]),
    ("{}\n", ["--quick"], ["--quick", "quick:"]),
    ("{}\n", ["--cell-fn", "nowhere_module:cell"], ["nowhere_module"]),
])
def test_run_config_errors_are_one_line_naming_the_key(tmp_path: Path, text: str, args: list[str],
                                                       needles: list[str]) -> None:
    config = write(tmp_path, text)
    args = ["--cell-fn", CELL_FN, *args]  # the last --cell-fn wins
    one_error(runner.invoke(app, ["run", str(config), "--out", str(tmp_path / "out"), *args]), *needles)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("text, args, needles", [
    ("{}\n", [], ["no `sweep:` section", "--grid"]),
    ("{}\n", ["--grid", "scenario.n_trian=[4,6]"], ["scenario.n_trian", "unknown key"]),
    ("{}\n", ["--grid", "scenario.n_train=[4,zero]"], ["scenario.n_train", "'zero'"]),
    ("{}\n", ["--grid", "scenario.n_train=4"], ["--grid", "YAML list"]),
    ("{}\n", ["--grid", "=[1]"], ["--grid", "key=[v1, v2]"]),
    ("sweep:\n  scenario.n_train: [4, 4]\n", [], ["same experiment", "repeated"]),
])
def test_sweep_config_errors_are_one_line_naming_the_key(tmp_path: Path, text: str, args: list[str],
                                                         needles: list[str]) -> None:
    config = write(tmp_path, "scenario:\n  holdout: 50\n" + text if text != "{}\n" else text)
    args = ["--cell-fn", CELL_FN, *args]
    one_error(runner.invoke(app, ["sweep", str(config), "--out", str(tmp_path / "out"), *args]), *needles)
    assert not (tmp_path / "out").exists()


def test_sweep_with_grid_runs_resumes_and_reports(tmp_path: Path, marker_dir: Path) -> None:
    config = write(tmp_path, "name: cli-test\nscenario:\n  holdout: 50\nseeds: [0]\n")
    out = tmp_path / "out"
    args = ["sweep", str(config), "--out", str(out), "--grid", "scenario.n_train=[4,6]", "--workers", "1",
            "--cell-fn", CELL_FN]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, (result.output, result.exception)
    assert "2 of 2 cells ok" in result.output and "PSNR" in result.output  # the headline table
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [r["params"] for r in rows] == [{"scenario.n_train": 4, "seed": 0}, {"scenario.n_train": 6, "seed": 0}]
    record = json.loads((out / "run.json").read_text())
    argv = record["argv"]
    if argv[1:2] == ["--threads"]:  # recorded when set, also by $UNLEARNLEAK_THREADS (CI sets it)
        assert argv[2] == os.environ.get("UNLEARNLEAK_THREADS")
        argv = [argv[0], *argv[3:]]
    assert argv[:3] == ["unlearnleak", "sweep", str(config)] and "--grid" in argv
    again = runner.invoke(app, args)
    assert again.exit_code == 0 and "2 of 2 cells already finished, 0 to run" in again.output
    assert set(markers(marker_dir).values()) == {1}
    # --grid gives the same cells as the same sweep written in the file
    from unlearnleak.commands.run import with_grid
    from unlearnleak.experiments.schema import expand_cells, load_experiment

    in_file = load_experiment(config, ["sweep={scenario.model: [convnet, lenet]}"])
    by_grid = with_grid(load_experiment(config), ["scenario.model=[convnet, lenet]"])
    assert [c.hash for c in expand_cells(by_grid)] == [c.hash for c in expand_cells(in_file)]
    # another grid is another experiment: refused, the folder untouched
    one_error(runner.invoke(app, ["sweep", str(config), "--out", str(out), "--grid", "scenario.n_train=[4,8]",
                                  "--cell-fn", CELL_FN]), "different experiment", "--overwrite")
    assert len((out / "results.jsonl").read_text().splitlines()) == 2


def test_failed_cells_exit_1_and_say_how_to_retry(tmp_path: Path, marker_dir: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    config = write(tmp_path, "scenario:\n  holdout: 50\n  n_train: 6\nseeds: [0, 1]\n")
    monkeypatch.setenv("UNLEARNLEAK_TEST_FAIL_N", "6")
    result = runner.invoke(app, ["run", str(config), "--out", str(tmp_path / "out"), "--workers", "1",
                                 "--cell-fn", CELL_FN])
    assert result.exit_code == 1, result.output
    assert "2 cell(s) failed" in result.stderr and "error.txt" in result.stderr and "retry" in result.stderr


def test_list_shows_the_shipped_configs_and_missing_arguments_are_named() -> None:
    from unlearnleak.experiments.schema import shipped_configs

    result = runner.invoke(app, ["run", "--list"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    names = shipped_configs()
    assert names and all(name in result.output for name in names)
    one_error(runner.invoke(app, ["run"]), "missing CONFIG", "--list")
    one_error(runner.invoke(app, ["sweep", names[0]]), "missing --out RUN_DIR")
    one_error(runner.invoke(app, ["run", "paper/no_such_experiment", "--out", "x"]), "paper/no_such_experiment")
