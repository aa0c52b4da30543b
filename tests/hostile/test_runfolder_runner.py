"""Hostile run folders, the runner side (`run`, `sweep`): one run per folder, "ok" rows that must hold their result,
no symbolic link followed for reading or deleting, leftovers of interrupted runs removed.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from runfolder_cells import CELL_FN, runs
from typer.testing import CliRunner

from cli_checks import one_error
from unlearnleak.cli import app
from unlearnleak.experiments.runner import LOCK_FILE

runner = CliRunner()
HERE = Path(__file__).resolve().parent
SWEEP = "scenario:\n  holdout: 50\nseeds: [0]\nsweep:\n  scenario.n_train: [4, 6]\n"


@pytest.fixture
def markers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "markers"
    folder.mkdir()
    monkeypatch.setenv("HOSTILE_MARKERS", str(folder))
    monkeypatch.delenv("HOSTILE_BLOCK", raising=False)
    return folder


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    path = tmp_path / "sweep.yaml"
    path.write_text(SWEEP, encoding="utf-8")
    return path


def run(sweep: Path, out: Path, *extra: str) -> object:
    return runner.invoke(app, ["sweep", str(sweep), "--out", str(out), "--workers", "1", "--cell-fn", CELL_FN, *extra])


def rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_second_run_on_a_busy_folder_refuses_in_one_line(sweep: Path, tmp_path: Path, markers: Path) -> None:
    """A real first run blocks in its cell; the second refuses naming its process; after it, resume works."""
    out, started = tmp_path / "run", tmp_path / "started"
    env = {**os.environ, "HOSTILE_BLOCK": str(started), "UNLEARNLEAK_PROGRESS": "0",
           "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
    first = subprocess.Popen([sys.executable, "-c", "from unlearnleak.cli import main; main()", "sweep", str(sweep),
                              "--out", str(out), "--workers", "1", "--cell-fn", CELL_FN], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not started.exists() and time.monotonic() < deadline:
            assert first.poll() is None, first.communicate()
            time.sleep(0.2)
        before = snapshot(out)
        one_error(run(sweep, out), f"--out {out} is in use by another", f"process {first.pid}", "wait for it")
        assert snapshot(out) == before and runs(markers) == {}
        first.send_signal(signal.SIGTERM)
        _, stderr = first.communicate(timeout=60)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 130, stderr
    resumed = run(sweep, out)
    assert resumed.exit_code == 0, resumed.output
    assert sorted(runs(markers).values()) == [1, 1] and len(rows(out)) == 2


def test_a_held_lock_refuses_even_a_new_folder(sweep: Path, tmp_path: Path, markers: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    with open(out / LOCK_FILE, "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        one_error(run(sweep, out), "is in use by another")
        assert [p.name for p in out.iterdir()] == [LOCK_FILE]
    assert run(sweep, out).exit_code == 0


def test_an_ok_row_without_its_result_is_rerun(sweep: Path, tmp_path: Path, markers: Path) -> None:
    out = tmp_path / "run"
    assert run(sweep, out).exit_code == 0
    good = rows(out)
    hollow = {"cell": good[0]["cell"], "status": "ok", "params": good[0]["params"]}  # "ok", but no numbers
    (out / "results.jsonl").write_text(json.dumps(hollow) + "\n" + json.dumps(good[1]) + "\n")
    again = run(sweep, out)
    assert again.exit_code == 0, again.output
    assert "its row says ok, but it holds no feature_recovery result" in again.output
    assert runs(markers) == {good[0]["cell"]: 2, good[1]["cell"]: 1}
    assert [r["cell"] for r in rows(out)] == [good[1]["cell"], good[0]["cell"]]
    assert rows(out)[1]["feature_recovery"] == good[0]["feature_recovery"]


def test_an_artifact_linked_outside_is_not_trusted_and_is_replaced(sweep: Path, tmp_path: Path,
                                                                  markers: Path) -> None:
    out = tmp_path / "run"
    assert run(sweep, out).exit_code == 0
    cell = rows(out)[0]["cell"]
    secret = tmp_path / "secret.safetensors"
    secret.write_bytes(b"not yours")
    truth = out / "cells" / cell / "truth.safetensors"
    truth.unlink()
    truth.symlink_to(secret)
    again = run(sweep, out)
    assert again.exit_code == 0 and "is a symbolic link" in again.output and "it runs again" in again.output
    assert runs(markers)[cell] == 2 and not truth.is_symlink() and secret.read_bytes() == b"not yours"


def test_overwrite_never_deletes_through_a_link(sweep: Path, tmp_path: Path, markers: Path) -> None:
    """A cell folder (or any entry) linked to a folder elsewhere: --overwrite removes the link, not its target."""
    out = tmp_path / "run"
    assert run(sweep, out).exit_code == 0
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "precious.txt").write_text("keep me")
    (out / "cells" / "linked").symlink_to(elsewhere, target_is_directory=True)
    (out / "notes").symlink_to(elsewhere, target_is_directory=True)
    assert run(sweep, out, "--overwrite").exit_code == 0
    assert (elsewhere / "precious.txt").read_text() == "keep me"
    assert not (out / "notes").exists() and not (out / "cells" / "linked").exists()
    assert sorted(p.name for p in out.iterdir()) == [LOCK_FILE, "cells", "experiment.yaml", "results.jsonl",
                                                     "run.json"]


@pytest.mark.parametrize("name", ["results.jsonl", "run.json", "cells", "experiment.yaml"])
def test_run_files_that_are_links_are_refused(sweep: Path, tmp_path: Path, markers: Path, name: str) -> None:
    out = tmp_path / "run"
    assert run(sweep, out).exit_code == 0
    moved = tmp_path / f"moved-{name}"
    (out / name).rename(moved)
    (out / name).symlink_to(moved)
    before = snapshot(out)
    one_error(run(sweep, out), f"{name} is a symbolic link", "--overwrite")
    assert snapshot(out) == before and sorted(runs(markers).values()) == [1, 1]


def test_a_linked_out_is_refused_and_nothing_is_left(sweep: Path, tmp_path: Path, markers: Path) -> None:
    target = tmp_path / "target"
    target.mkdir()
    (target / "precious.txt").write_text("keep me")
    link = tmp_path / "link"
    link.symlink_to(target, target_is_directory=True)
    for extra in ([], ["--overwrite"]):
        one_error(run(sweep, link, *extra), f"--out {link} is a symbolic link", "give the folder itself")
    assert [p.name for p in target.iterdir()] == ["precious.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link", "markers", "sweep.yaml", "target"]


def test_leftovers_of_a_killed_run_are_removed_on_resume(sweep: Path, tmp_path: Path, markers: Path) -> None:
    """What kill -9 can leave: a half-published cell folder, an interrupted --overwrite (one entry a link)."""
    out = tmp_path / "run"
    assert run(sweep, out).exit_code == 0
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "precious.txt").write_text("keep me")
    (out / "cells" / ".0123456789abcdef.partial").mkdir()
    (out / ".overwritten-99999").mkdir()
    (out / ".overwritten-99999" / "old").symlink_to(elsewhere, target_is_directory=True)
    assert run(sweep, out).exit_code == 0
    assert not (out / "cells" / ".0123456789abcdef.partial").exists() and not (out / ".overwritten-99999").exists()
    assert (elsewhere / "precious.txt").read_text() == "keep me"
