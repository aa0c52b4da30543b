"""Hostile run folders, the report side (`report`): --out never replaces a run, nothing is read through a link,
an "ok" row without its result is shown as failed (never dropped), text from configs cannot inject HTML or
spreadsheet formulas, and leftovers of killed reports are removed without following links.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
from runfolder_cells import CELL_FN
from typer.testing import CliRunner

from cli_checks import one_error
from unlearnleak.cli import app

runner = CliRunner()
INJECTED = ['<img src=x onerror=alert(1)>', '=HYPERLINK("http://evil.example/","click")', '[red]r[/]']


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    """A real run folder (two cells) whose swept values are strings an attacker chose."""
    config = tmp_path / "sweep.yaml"
    config.write_text("scenario:\n  holdout: 50\n  n_train: 4\nsweep:\n  scenario.data_dir: " + json.dumps(INJECTED)
                      + "\n", encoding="utf-8")
    out = tmp_path / "run"
    result = runner.invoke(app, ["sweep", str(config), "--out", str(out), "--workers", "1", "--cell-fn", CELL_FN])
    assert result.exit_code == 0, result.output
    return out


def report(*args: str) -> object:
    return runner.invoke(app, ["report", *args])


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("where, needles", [
    (lambda run: run, ["is the run folder", "never replaces"]),
    (lambda run: run.parent, ["contains the run folder", "would delete the run"]),
    (lambda run: run / "cells", ["inside the run folder"]),
    (lambda run: run / "cells" / "new", ["inside the run folder"]),
])
def test_report_out_never_replaces_the_run(run_dir: Path, where, needles: list[str]) -> None:
    before = snapshot(run_dir)
    one_error(report(str(run_dir), "--out", str(where(run_dir)), "--overwrite"), *needles)
    assert snapshot(run_dir) == before


def test_report_out_never_replaces_another_run(run_dir: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    (other / "results.jsonl").write_text("")
    one_error(report(str(run_dir), "--out", str(other), "--overwrite"), "holds a run or an audit (results.jsonl)")
    assert (other / "results.jsonl").exists()
    assert report(str(run_dir)).exit_code == 0 and (run_dir / "report" / "index.html").is_file()  # the default


def test_an_ok_row_without_results_is_reported_as_failed(run_dir: Path) -> None:
    lines = (run_dir / "results.jsonl").read_text().splitlines()
    hollow = json.loads(lines[0])
    hollow = {"cell": hollow["cell"], "status": "ok", "params": hollow["params"], "config": hollow["config"]}
    (run_dir / "results.jsonl").write_text(json.dumps(hollow) + "\n" + lines[1] + "\n")
    result = report(str(run_dir))
    assert result.exit_code == 0, result.output
    errors = (run_dir / "report" / "tables" / "errors.csv").read_text()
    assert hollow["cell"] in errors and "says ok, but it holds no feature_recovery result" in errors
    assert "1 of 2 cells finished, 1 failed" in (run_dir / "report" / "index.html").read_text()


@pytest.mark.parametrize("name", ["experiment.yaml", "run.json", "results.jsonl"])
def test_run_files_linked_outside_are_not_read(run_dir: Path, tmp_path: Path, name: str) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-TOKEN")
    (run_dir / name).unlink()
    (run_dir / name).symlink_to(secret)
    one_error(report(str(run_dir)), f"{name} is a symbolic link", "copy the file")
    assert not (run_dir / "report").exists()


def test_an_artifact_linked_outside_is_not_read_or_drawn(run_dir: Path, tmp_path: Path) -> None:
    cell = json.loads((run_dir / "results.jsonl").read_text().splitlines()[0])["cell"]
    outside = tmp_path / "outside.safetensors"
    truth = run_dir / "cells" / cell / "truth.safetensors"
    truth.rename(outside)
    truth.symlink_to(outside)
    one_error(report(str(run_dir)), "truth.safetensors is a symbolic link")
    truth.unlink()
    (run_dir / "cells" / cell).rename(tmp_path / "cell-elsewhere")
    (run_dir / "cells" / cell).symlink_to(tmp_path / "cell-elsewhere", target_is_directory=True)
    (tmp_path / "cell-elsewhere" / "truth.safetensors").symlink_to(outside)
    one_error(report(str(run_dir)), f"{cell} is a symbolic link")
    assert not (run_dir / "report").exists()


def test_config_strings_cannot_inject_html_formulas_or_console_markup(run_dir: Path) -> None:
    result = report(str(run_dir))
    assert result.exit_code == 0 and "[red]r[/]" in result.output  # shown as typed, not styled
    tables = run_dir / "report" / "tables"
    markdown = "".join(p.read_text() for p in tables.glob("*.md"))
    assert "&lt;img src=x onerror=alert(1)&gt;" in markdown and "<img" not in markdown
    cells = [cell for p in tables.glob("*.csv") for row in csv.reader(p.open()) for cell in row]
    assert "'" + INJECTED[1] in cells and INJECTED[1] not in cells
    assert not any(cell.startswith(("=", "+", "@")) for cell in cells)
    page = (run_dir / "report" / "index.html").read_text()
    assert "<img src=x" not in page and "&lt;img src=x onerror=alert(1)&gt;" in page


def test_a_linked_out_is_refused_and_killed_reports_leave_nothing(run_dir: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "precious.txt").write_text("keep me")
    link = tmp_path / "link"
    link.symlink_to(elsewhere, target_is_directory=True)
    one_error(report(str(run_dir), "--out", str(link), "--overwrite"), "is a symbolic link")
    # what `kill -9` of an earlier report left beside the output: its staged folder and an aside link
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    (tmp_path / f".out.{pid}-0123abcd.partial").mkdir()
    (tmp_path / f".out.{pid}-0123abcd.old").symlink_to(elsewhere, target_is_directory=True)
    assert report(str(run_dir), "--out", str(tmp_path / "out")).exit_code == 0
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".out.")]
    assert (elsewhere / "precious.txt").read_text() == "keep me" and link.is_symlink()
    assert report(str(run_dir), "--out", str(tmp_path / "out"), "--overwrite").exit_code == 0
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".out.")]
