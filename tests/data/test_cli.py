"""The ``data`` typer sub-app: list, info and download, with user errors as exit code 2."""

from __future__ import annotations

import dataclasses
import hashlib
import tarfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from unlearnleak.commands.data import data_app
from unlearnleak.data.files import LAYOUTS

Writers = dict[str, Callable[..., dict[str, np.ndarray]]]
ENV = {"COLUMNS": "250", "NO_COLOR": "1"}


def test_list_shows_presence(tmp_path: Path, writers: Writers) -> None:
    writers["cifar10"](tmp_path)
    result = CliRunner().invoke(data_app, ["list", "--data-dir", str(tmp_path)], env=ENV)
    assert result.exit_code == 0, result.output
    lines = {line.split()[1]: line for line in result.stdout.splitlines() if line.startswith("│")}
    assert "present" in lines["cifar10"] and "missing" in lines["cifar100"]
    assert "built in" in lines["embedded_cifar10"] and "tabular" in lines["breast_cancer"]
    assert "unlearnleak[tabular]" in lines["credit_default"]


def test_info_prints_counts_and_checksums(tmp_path: Path, writers: Writers) -> None:
    raw = writers["cifar10"](tmp_path)
    result = CliRunner().invoke(data_app, ["info", "cifar10", "--split", "test", "--data-dir", str(tmp_path)],
                                env=ENV)
    assert result.exit_code == 0, result.output
    n = len(raw["test_batch"])
    assert f"cifar10 / test: {n} image rows, input shape (3, 32, 32), 10 classes" in result.stdout
    sha = hashlib.sha256((tmp_path / "cifar-10-batches-py" / "test_batch").read_bytes()).hexdigest()
    assert sha in result.stdout and "airplane" in result.stdout


def test_info_on_tabular_and_default_split() -> None:
    result = CliRunner().invoke(data_app, ["info", "embedded_cifar100"], env=ENV)
    assert result.exit_code == 0 and "embedded_cifar100 / test: 20 image rows" in result.stdout
    result = CliRunner().invoke(data_app, ["info", "breast_cancer", "--split", "test"], env=ENV)
    assert result.exit_code == 0 and "numeric columns: mean radius" in result.stdout


def test_errors_exit_2_with_message(tmp_path: Path) -> None:
    result = CliRunner().invoke(data_app, ["info", "cifar10", "--data-dir", str(tmp_path)], env=ENV)
    assert result.exit_code == 2 and "missing file" in result.stderr and "Traceback" not in result.output
    result = CliRunner().invoke(data_app, ["info", "nope"], env=ENV)
    assert result.exit_code == 2 and "unknown dataset 'nope'" in result.stderr
    result = CliRunner().invoke(data_app, ["download", "digits"], env=ENV)
    assert result.exit_code == 2 and "needs no download" in result.stderr


def test_download_command(tmp_path: Path, writers: Writers, monkeypatch: pytest.MonkeyPatch) -> None:
    served = tmp_path / "served"
    served.mkdir()
    writers["cifar100"](tmp_path / "staging")
    archive = served / "cifar-100-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "staging" / "cifar-100-python", arcname="cifar-100-python")
    md5 = hashlib.md5(archive.read_bytes(), usedforsecurity=False).hexdigest()
    monkeypatch.setitem(LAYOUTS, "cifar100", dataclasses.replace(LAYOUTS["cifar100"], md5=md5))
    data = tmp_path / "data"
    mirror = archive.parent.as_uri()  # file:// needs no server; the same code path as http
    args = ["download", "cifar100", "--data-dir", str(data), "--mirror", mirror]
    result = CliRunner().invoke(data_app, args, env=ENV)
    assert result.exit_code == 0, result.output
    assert "installed" in result.stdout and (data / "cifar-100-python" / "meta").is_file()
    again = CliRunner().invoke(data_app, ["download", "cifar100", "--data-dir", str(data)], env=ENV)
    assert again.exit_code == 0 and "already present" in again.stdout
