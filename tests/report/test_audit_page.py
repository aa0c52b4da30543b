"""Audit folders get the same self-contained page: `unlearnleak audit` writes report.html, `report` reads them."""

from __future__ import annotations

import html
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from audit.conftest import _white_box_args, user_pair  # noqa: F401  (the audit tests' user pair, a fixture)
from cli_checks import one_error
from unlearnleak.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def audit_dir(user_pair: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:  # noqa: F811
    """A real white-box audit of the user's files (short budgets), with ground truth and label inference."""
    out = tmp_path_factory.mktemp("audits") / "audit"
    result = runner.invoke(app, _white_box_args(user_pair, out, "--iterations", "60", "--restarts", "1",
                                                "--per-class", "2", "--set", "max_steps=10",
                                                "--ground-truth", str(user_pair.truth)))
    # exit 3 is the documented "no label verdict": these short probe budgets leave some classes without probes;
    # the report and its page are written either way (what these tests read)
    assert result.exit_code in (0, 3), result.output
    return out


def _images(page: str) -> list[str]:
    return re.findall(r'<img src="([^"]+)"', page)


def test_audit_writes_report_html(audit_dir: Path) -> None:
    report = json.loads((audit_dir / "report.json").read_text())
    page = (audit_dir / "report.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and "<script" not in page.lower()
    assert len(_images(page)) == 2 and all(s.startswith("data:image/png;base64,") for s in _images(page))
    for line in report["verdict"]:
        assert html.escape(line) in page
    psnr = report["evaluation"]["samples"][0]["psnr"]
    assert f"{psnr:.3g}" in page and "thumbnail_4x4_psnr" in page
    assert report["environment"]["git_revision"] is None or report["environment"]["git_revision"][:12] in page


def test_report_command_reads_an_audit_folder(audit_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "rep"
    result = runner.invoke(app, ["report", str(audit_dir), "--out", str(out)])
    assert result.exit_code == 0, result.output
    page, own = (out / "index.html").read_text(), (audit_dir / "report.html").read_text()
    # the same page, except that only the report's names the table files written beside it
    files = re.compile(r'<p class="note">Files: tables/[^<]*</p>|<p class="note">These tables as CSV[^<]*'
                       r'<code>[^<]*</code>\.</p>')
    assert files.sub("", page) == files.sub("", own)
    assert "tables/audit_samples.csv" in page and "tables/" not in own
    for name in re.findall(r"Files: tables/(\w+)\.csv", page):
        assert (out / "tables" / f"{name}.csv").is_file() and (out / "tables" / f"{name}.md").is_file()
    assert sorted(p.name for p in (out / "figures").iterdir()) == ["confidence_change.png", "reconstructions.png"]
    assert {p.name for p in (out / "tables").iterdir()} >= {"audit_samples.csv", "audit_summary.md",
                                                            "audit_labels.csv"}


def test_a_report_json_of_another_kind_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "not_audit"
    folder.mkdir()
    (folder / "report.json").write_text(json.dumps({"format": "something/1"}))
    one_error(runner.invoke(app, ["report", str(folder)]), "is not an audit report")
    assert not (folder / "report").exists()


def test_partial_audit_says_so(audit_dir: Path, tmp_path: Path, write_partial: Callable[[Path], Path]) -> None:
    folder = write_partial(audit_dir)
    from unlearnleak.report import write_audit_html

    page = write_audit_html(folder).read_text()
    assert "Partial: query budget exhausted: &lt;b&gt;50 rows&lt;/b&gt;" in page and "<b>50" not in page


@pytest.fixture
def write_partial(tmp_path: Path) -> Callable[[Path], Path]:
    def write(source: Path) -> Path:
        folder = tmp_path / "partial"
        folder.mkdir()
        report = json.loads((source / "report.json").read_text())
        report.update(partial=True, partial_reason="query budget exhausted: <b>50 rows</b>")
        pred = report["labels"]["from_predictions"]
        pred["detection_level"] = "nan"  # as strict JSON writes a NaN
        pred["confidence_changes"][0] = None
        (folder / "report.json").write_text(json.dumps(report))
        return folder

    return write
