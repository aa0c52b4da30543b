"""Atomic output folders and umask-following writes: the complete results folder or nothing."""

import os

import pytest

from unlearnleak.errors import ConfigError
from unlearnleak.storage import check_output_folder, output_folder, write_text_atomic


def test_output_folder_publishes_whole_or_nothing(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(RuntimeError), output_folder(out) as d:
        (d / "a.txt").write_text("x")
        raise RuntimeError("boom")
    assert not out.exists() and list(tmp_path.iterdir()) == []
    with output_folder(out) as d:
        (d / "a.txt").write_text("x")
    assert (out / "a.txt").read_text() == "x"

def test_output_folder_refuses_results_unless_overwrite(tmp_path):
    out = tmp_path / "run"
    with output_folder(out) as d:
        (d / "old.txt").write_text("old")
    with pytest.raises(ConfigError, match="--overwrite"):
        check_output_folder(out)
    with output_folder(out, overwrite=True) as d:
        (d / "new.txt").write_text("new")
    assert sorted(p.name for p in out.iterdir()) == ["new.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["run"]

def test_output_folder_rejects_a_file(tmp_path):
    f = tmp_path / "f"
    f.write_text("")
    with pytest.raises(ConfigError, match="existing file"):
        check_output_folder(f)

def test_written_files_follow_umask(tmp_path):
    old = os.umask(0o022)
    try:
        p = write_text_atomic(tmp_path / "x.txt", "hi")
    finally:
        os.umask(old)
    assert (p.stat().st_mode & 0o777) == 0o644
