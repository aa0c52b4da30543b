"""Typer's own usage errors and the `data` commands: one `error:` line naming the flag, exit 2; help still works."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli_checks import one_error
from unlearnleak.cli import app
from unlearnleak.commands.data import data_app

runner = CliRunner()


@pytest.mark.parametrize("args, needles", [
    (["recover"], ["pair_dir", "unlearnleak recover --help"]),
    (["infer-label"], ["pair_dir"]),
    (["infer-label", "x", "--per-class", "abc"], ["--per-class"]),
    (["infer-label", "x", "--per-class"], ["--per-class"]),
    (["recover", "x", "--iterations", "1.5"], ["--iterations"]),
    (["scenario", "--out", "o", "--colour", "red"], ["--colour"]),
    (["demo", "--seed", "one"], ["--seed"]),
    (["--threads", "0", "version"], ["--threads"]),
    (["nosuchcommand"], ["nosuchcommand"]),
    (["data", "download"], ["name", "unlearnleak data download --help"]),
    (["data", "info", "digits", "--split"], ["--split"]),
])
def test_usage_errors_are_one_line(args: list[str], needles: list[str], tmp_path: Path) -> None:
    one_error(runner.invoke(app, args), *needles)


def test_help_and_no_arguments_still_show_the_help() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0 and "scenario" in result.output and "recover" in result.output
    result = runner.invoke(app, ["recover", "--help"])
    assert result.exit_code == 0 and "--overwrite" in result.output
    result = runner.invoke(app, [])
    assert "Usage" in result.output and "error:" not in result.output


def test_the_data_app_alone_also_prints_one_line() -> None:
    one_error(runner.invoke(data_app, ["download"]), "name")


@pytest.mark.parametrize("mirror", ["not a url", "cifar-mirror", "http://", "gopher://host/x", "https://a b/"])
def test_download_mirror_must_be_a_url(mirror: str, tmp_path: Path) -> None:
    result = runner.invoke(app, ["data", "download", "cifar10", "--data-dir", str(tmp_path / "d"), "--mirror", mirror])
    one_error(result, "--mirror", "not a URL", "https://")
    assert list(tmp_path.iterdir()) == []


def test_download_mirror_from_the_environment_is_checked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UNLEARNLEAK_DOWNLOAD_MIRROR", "mirror.local")
    one_error(runner.invoke(app, ["data", "download", "cifar10", "--data-dir", str(tmp_path / "d")]),
              "$UNLEARNLEAK_DOWNLOAD_MIRROR")


def test_download_into_an_unwritable_data_folder(tmp_path: Path) -> None:
    a_file = tmp_path / "file"
    a_file.write_text("x")
    result = runner.invoke(app, ["data", "download", "cifar10", "--data-dir", str(a_file / "d"),
                                 "--mirror", "file:///nonexistent"])
    one_error(result, "--data-dir", str(a_file / "d"))
    assert result.stdout == ""  # refused before announcing a download


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_download_into_a_read_only_folder(tmp_path: Path) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        result = runner.invoke(app, ["data", "download", "cifar10", "--data-dir", str(folder),
                                     "--mirror", "file:///nonexistent"])
        one_error(result, "--data-dir")
    finally:
        folder.chmod(0o700)
