"""The runner: run folder layout, resume after an interruption, torn lines, retried errors, refused folders."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
import torch
from rich.console import Console
from runner_cells import CELL_FN, markers
from safetensors.torch import load_file

from unlearnleak.errors import ConfigError
from unlearnleak.experiments.runner import RunInterrupted, read_results, run_experiment
from unlearnleak.experiments.schema import ExperimentConfig, expand_cells, load_experiment


def quiet() -> Console:
    return Console(file=io.StringIO(), width=200)


def said(console: Console) -> str:
    assert isinstance(console.file, io.StringIO)
    return console.file.getvalue()


def stable(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Rows by cell without their wall time (the only field that may differ between two runs)."""
    return {row["cell"]: {k: v for k, v in row.items() if k != "seconds"} for row in rows}


def cell_files(run_dir: Path) -> dict[str, bytes]:
    return {p.relative_to(run_dir).as_posix(): p.read_bytes()
            for p in sorted((run_dir / "cells").rglob("*")) if p.is_file()}


def run(config: ExperimentConfig, run_dir: Path, **kwargs: Any) -> list[dict[str, Any]]:
    return run_experiment(config, run_dir, cell_fn=CELL_FN, console=quiet(), **kwargs)


def test_a_sweep_fills_the_run_folder(sweep_config: ExperimentConfig, sweep_file: Path, marker_dir: Path,
                                      tmp_path: Path) -> None:
    out = tmp_path / "run"
    rows = run(sweep_config, out, workers=1)
    cells = expand_cells(sweep_config)
    assert [r["cell"] for r in rows] == [c.hash for c in cells]
    assert all(r["status"] == "ok" for r in rows)
    assert markers(marker_dir) == {c.hash: 1 for c in cells}
    # one line per cell, the same rows the function returned
    assert stable(read_results(out)) == stable(rows)
    for cell, row in zip(cells, rows, strict=True):
        assert row["params"] == cell.params and row["config"] == cell.config.model_dump(mode="json")
        n, seed = cell.params["scenario.n_train"], cell.params["seed"]
        expected = torch.rand(n, 3, generator=torch.Generator().manual_seed(1000 * seed + n))
        saved = load_file(str(out / "cells" / cell.hash / "values.safetensors"))["values"]
        assert torch.equal(saved, expected)
        assert row["total"] == pytest.approx(expected.sum().item())
        assert (out / "cells" / cell.hash / "notes" / "summary.txt").read_text().startswith(f"n={n} ")
    # the effective config reloads to the same cells; run.json records what ran, where and with what
    reloaded = load_experiment(out / "experiment.yaml")
    assert [c.hash for c in expand_cells(reloaded)] == [c.hash for c in cells]
    record = json.loads((out / "run.json").read_text())
    assert record["status"] == "finished" and record["finished"] and record["executor"] == "local"
    assert record["cells"] == {c.hash: c.params for c in cells}
    assert record["environment"]["versions"]["torch"] == version("torch")
    assert "git_revision" in record["environment"]
    assert not list((out / "cells").glob(".*"))  # no staging folders left


def test_rerunning_skips_finished_cells(sweep_config: ExperimentConfig, marker_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    first = run(sweep_config, out, workers=1)
    console = quiet()
    again = run_experiment(sweep_config, out, cell_fn=CELL_FN, console=console, workers=1)
    assert again == first
    assert set(markers(marker_dir).values()) == {1}
    assert "4 of 4 cells already finished, 0 to run" in said(console)
    assert len(json.loads((out / "run.json").read_text())["invocations"]) == 2


def test_interrupted_sweep_resumes_without_losing_or_repeating(sweep_config: ExperimentConfig, marker_dir: Path,
                                                                tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "run"
    monkeypatch.setenv("UNLEARNLEAK_TEST_INTERRUPT_AFTER", "2")  # the third cell raises KeyboardInterrupt
    with pytest.raises(RunInterrupted) as caught:
        run(sweep_config, out, workers=1)
    assert caught.value.finished == 2 and caught.value.total == 4
    assert "2 of 4 cells are finished" in caught.value.message
    kept = read_results(out)
    assert len(kept) == 2 and sum(markers(marker_dir).values()) == 2
    assert json.loads((out / "run.json").read_text())["status"] == "interrupted"
    monkeypatch.delenv("UNLEARNLEAK_TEST_INTERRUPT_AFTER")
    resumed = run(sweep_config, out, workers=1)
    assert markers(marker_dir) == {c.hash: 1 for c in expand_cells(sweep_config)}  # each cell ran exactly once
    assert stable(read_results(out))[kept[0]["cell"]] == stable(kept)[kept[0]["cell"]]  # finished rows intact
    # identical to an uninterrupted run
    clean = run(sweep_config, tmp_path / "clean", workers=1)
    assert stable(resumed) == stable(clean)
    assert cell_files(out) == cell_files(tmp_path / "clean")


def test_sigint_to_a_pool_sweep_keeps_finished_cells_and_resumes(sweep_file: Path, marker_dir: Path,
                                                                  tmp_path: Path) -> None:
    """The CLI with two pool workers gets SIGINT while both hang in a cell: exit 130, finished cells kept."""
    out = tmp_path / "run"
    cells = expand_cells(load_experiment(sweep_file))
    blocked = {c.hash for c in cells if c.params["scenario.n_train"] == 6}  # the last two of the four cells
    argv = [sys.executable, "-c", "from unlearnleak.cli import main; main()", "sweep", str(sweep_file),
            "--out", str(out), "--workers", "2", "--cell-fn", CELL_FN]
    env = {**os.environ, "UNLEARNLEAK_TEST_BLOCK_N": "6", "UNLEARNLEAK_PROGRESS": "0"}
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            started = {p.name.split(".")[0] for p in marker_dir.glob("*.started")}
            results = out / "results.jsonl"
            if started == blocked and results.is_file() and len(results.read_text().splitlines()) == 2:
                break
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.2)
        else:
            pytest.fail("the sweep did not reach the blocked cells in time")
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, (stdout, stderr)
    assert "interrupted: 2 of 4 cells are finished" in stderr and f"--out {out}" in stderr
    assert "Traceback" not in stderr, stderr
    kept = read_results(out)
    assert {r["cell"] for r in kept} == {c.hash for c in cells} - blocked
    assert markers(marker_dir) == {r["cell"]: 1 for r in kept}
    # resume (in this process, nothing blocks now): only the two interrupted cells run
    resumed = run(load_experiment(sweep_file), out, workers=1)
    assert markers(marker_dir) == {c.hash: 1 for c in cells}
    clean = run(load_experiment(sweep_file), tmp_path / "clean", workers=1)
    assert stable(resumed) == stable(clean)
    assert cell_files(out) == cell_files(tmp_path / "clean")


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting for a reaper counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="workers die with the driver through Linux prctl")
def test_pool_workers_do_not_outlive_a_killed_driver(sweep_file: Path, marker_dir: Path, tmp_path: Path) -> None:
    """SIGKILL to the driver (no handler runs) while two workers hang in their cells: both workers stop."""
    argv = [sys.executable, "-c", "from unlearnleak.cli import main; main()", "sweep", str(sweep_file),
            "--out", str(tmp_path / "run"), "--workers", "2", "--cell-fn", CELL_FN]
    env = {**os.environ, "UNLEARNLEAK_TEST_BLOCK_N": "6", "UNLEARNLEAK_PROGRESS": "0"}
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    pids: list[int] = []
    try:
        deadline = time.monotonic() + 120
        while len(pids) < 2 and time.monotonic() < deadline:
            assert proc.poll() is None
            pids = [int(p.read_text()) for p in marker_dir.glob("*.started") if p.read_text().strip()]
            time.sleep(0.2)
        assert len(pids) == 2, "the sweep did not reach the blocked cells in time"
        proc.kill()
        proc.wait(timeout=60)
        deadline = time.monotonic() + 60
        while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(_alive(pid) for pid in pids), f"workers {pids} still run after their driver was killed"
    finally:
        if proc.poll() is None:
            proc.kill()
        for pid in pids:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_sigterm_stops_an_in_process_sweep_like_ctrl_c(sweep_file: Path, marker_dir: Path, tmp_path: Path) -> None:
    """A batch scheduler's SIGTERM: exit 130, run.json says interrupted, finished cells kept."""
    out = tmp_path / "run"
    argv = [sys.executable, "-c", "from unlearnleak.cli import main; main()", "sweep", str(sweep_file),
            "--out", str(out), "--workers", "1", "--cell-fn", CELL_FN]
    env = {**os.environ, "UNLEARNLEAK_TEST_BLOCK_N": "6", "UNLEARNLEAK_PROGRESS": "0"}
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not list(marker_dir.glob("*.started")) and time.monotonic() < deadline:
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, (stdout, stderr)
    assert "interrupted: 2 of 4 cells are finished" in stderr
    assert json.loads((out / "run.json").read_text())["status"] == "interrupted"
    assert len(read_results(out)) == 2


def test_a_torn_last_line_is_discarded_and_its_cell_rerun(sweep_config: ExperimentConfig, marker_dir: Path,
                                                          tmp_path: Path) -> None:
    out = tmp_path / "run"
    rows = run(sweep_config, out, workers=1)
    results = out / "results.jsonl"
    data = results.read_bytes()
    results.write_bytes(data[:-25])  # a crash in the middle of writing the last row
    console = quiet()
    resumed = run_experiment(sweep_config, out, cell_fn=CELL_FN, console=console, workers=1)
    assert "discarded a torn last line" in said(console)
    assert stable(resumed) == stable(rows)
    assert stable(read_results(out)) == stable(rows)
    assert len(results.read_text().splitlines()) == 4
    counts = markers(marker_dir)
    assert counts[rows[-1]["cell"]] == 2 and sum(counts.values()) == 5  # only the torn cell ran again


def test_failed_cells_are_recorded_and_retried(sweep_config: ExperimentConfig, marker_dir: Path, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "run"
    monkeypatch.setenv("UNLEARNLEAK_TEST_FAIL_N", "6")
    rows = run(sweep_config, out, workers=1)
    failed = [r for r in rows if r["status"] == "error"]
    assert len(failed) == 2 and all(r["params"]["scenario.n_train"] == 6 for r in failed)
    for row in failed:
        assert row["error"] == "ValueError: planned failure for n_train=6; second line of the message"
        trace = (out / "cells" / row["cell"] / "error.txt").read_text()
        assert "Traceback" in trace and "planned failure" in trace
    assert [r["status"] for r in read_results(out)].count("error") == 2
    monkeypatch.delenv("UNLEARNLEAK_TEST_FAIL_N")
    console = quiet()
    retried = run_experiment(sweep_config, out, cell_fn=CELL_FN, console=console, workers=1)
    assert "retrying 2 cell(s) that failed last time" in said(console)
    assert all(r["status"] == "ok" for r in retried)
    assert markers(marker_dir) == {r["cell"]: 1 for r in retried}
    assert [r["status"] for r in read_results(out)] == ["ok"] * 4  # the error rows were replaced
    assert not any((out / "cells" / r["cell"] / "error.txt").exists() for r in retried)


def test_a_cell_returning_a_malformed_row_fails_in_words(sweep_config: ExperimentConfig, marker_dir: Path,
                                                         tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The row model checks what a cell function returns: a wrong type fails that cell (not the folder)."""
    from unlearnleak.report import load_run

    out = tmp_path / "run"
    monkeypatch.setenv("UNLEARNLEAK_TEST_BAD_ROW_N", "6")
    rows = run(sweep_config, out, workers=1)
    failed = [r for r in rows if r["status"] == "error"]
    assert len(failed) == 2 and all(r["params"]["scenario.n_train"] == 6 for r in failed)
    assert all("`feature_recovery.metrics`" in r["error"] and "feature_recovery" not in r for r in failed)
    assert [r["status"] for r in read_results(out)].count("ok") == 2
    assert len(load_run(out).errors) == 2  # the folder stays readable, the failures shown


def test_a_different_experiment_is_refused_unless_overwrite(sweep_config: ExperimentConfig, sweep_file: Path,
                                                             marker_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    run(sweep_config, out, workers=1)
    before = cell_files(out)
    other = load_experiment(sweep_file, ["sweep={scenario.n_train: [4, 8]}"])
    with pytest.raises(ConfigError, match="holds a different experiment .*2 shared with this one's 4.*--overwrite"):
        run(other, out, workers=1)
    assert cell_files(out) == before
    rows = run(other, out, workers=1, overwrite=True)
    assert {p.name for p in (out / "cells").iterdir()} == {r["cell"] for r in rows}
    assert len(read_results(out)) == 4 and json.loads((out / "run.json").read_text())["cells"].keys() == \
        {r["cell"] for r in rows}


def test_a_folder_that_is_not_a_run_is_refused(sweep_config: ExperimentConfig, marker_dir: Path,
                                               tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "thesis.tex").write_text("keep me")
    with pytest.raises(ConfigError, match="not a run folder"):
        run(sweep_config, out, workers=1)
    assert (out / "thesis.tex").read_text() == "keep me"


def test_a_missing_device_fails_before_anything_is_written(sweep_file: Path, marker_dir: Path,
                                                           tmp_path: Path) -> None:
    config = load_experiment(sweep_file, ["device=cuda:99"])
    with pytest.raises(ConfigError, match="cuda:99"):
        run(config, tmp_path / "run")
    assert not (tmp_path / "run").exists() and markers(marker_dir) == {}


def test_unknown_executor_and_missing_ray_are_one_clear_error(sweep_config: ExperimentConfig, marker_dir: Path,
                                                              tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="unknown executor 'slurm'; choose one of: local, ray"):
        run(sweep_config, tmp_path / "run", executor="slurm")
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    with pytest.raises(ConfigError, match=r"pip install 'unlearnleak\[ray\]'"):
        run(sweep_config, tmp_path / "run", executor="ray")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("extra", [
    ["sweep={scenario.model: [convnet, lenet]}"],  # each swept model takes its own default kwargs
    ["scenario.model_kwargs={width: 8}", "sweep={scenario.n_train: [4, 6]}"],
])
def test_experiment_yaml_reads_back_to_the_same_cells(sweep_file: Path, marker_dir: Path, tmp_path: Path,
                                                      extra: list[str]) -> None:
    from unlearnleak.experiments.runner import experiment_yaml

    config = load_experiment(sweep_file, extra)
    path = tmp_path / "experiment.yaml"
    path.write_text(experiment_yaml(config), encoding="utf-8")
    again = load_experiment(path)
    assert [c.hash for c in expand_cells(again)] == [c.hash for c in expand_cells(config)]
