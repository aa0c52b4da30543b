"""The HTML report renders in a real browser: headless Debian Chromium loads every figure, logs no error.

Playwright for Python drives the system browser (``/usr/bin/chromium``, Debian's ``chromium`` package; `.ci/run`
installs it): Playwright's own browser download cannot be reached here. Skipped, with the reason, only when
Chromium is absent and CI is unset; under CI=true a missing browser fails the test.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from extras import in_ci, require_integration
from unlearnleak.cli import app

CHROMIUM = Path(os.environ.get("UNLEARNLEAK_CHROMIUM", "/usr/bin/chromium"))
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
runner = CliRunner()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless system Chromium through Playwright (skipped outside CI when Chromium is not installed)."""
    require_integration("playwright", "it drives the system Chromium")
    if not CHROMIUM.is_file():
        if in_ci():
            pytest.fail(f"CI: {CHROMIUM} is missing; .ci/run installs Debian's chromium (apt-get install chromium)")
        pytest.skip(f"headless Chromium not installed at {CHROMIUM} (apt-get install -y chromium); under CI=true "
                    f"this test runs")
    from playwright.sync_api import sync_playwright  # the `integration` extra

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        try:
            yield chromium
        finally:
            chromium.close()


def _open(browser: Any, page_path: Path) -> dict[str, Any]:
    """Load the page; return its images' state, console errors, page errors and every URL it requested."""
    page = browser.new_page()
    problems: list[str] = []
    requests: list[str] = []
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type in ("error", "warning")
            else None)
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url[:80]}"))
    page.on("request", lambda r: requests.append(r.url))
    page.goto(page_path.as_uri(), wait_until="load")
    images = page.evaluate("Array.from(document.images).map(i => ({complete: i.complete, width: i.naturalWidth, "
                           "alt: i.alt}))")
    title = page.title()
    page.close()
    return {"images": images, "problems": problems, "requests": requests, "title": title}


def _check(result: dict[str, Any], figures: int) -> None:
    assert len(result["images"]) == figures > 0
    broken = [i["alt"] for i in result["images"] if not (i["complete"] and i["width"] > 0)]
    assert broken == [], f"figures that did not load: {broken}"
    assert result["problems"] == []
    external = [u for u in result["requests"] if not u.startswith(("file:", "data:"))]
    assert external == [], f"the page fetched external resources: {external}"


def test_run_report_renders_in_chromium(browser: Any, k_sweep: Path, defense_sweep: Path) -> None:
    for run in (k_sweep, defense_sweep):
        assert runner.invoke(app, ["report", str(run)]).exit_code == 0
        figures = len(list((run / "report" / "figures").iterdir()))
        result = _open(browser, run / "report" / "index.html")
        _check(result, figures)
        assert result["title"].startswith("unlearnleak report")


def test_a_broken_figure_is_caught(browser: Any, k_sweep: Path) -> None:
    """The check itself can fail: a page with a corrupt data: URI is reported."""
    assert runner.invoke(app, ["report", str(k_sweep)]).exit_code == 0
    index = k_sweep / "report" / "index.html"
    index.write_text(index.read_text().replace("data:image/png;base64,iVBOR", "data:image/png;base64,AAAA", 1))
    images = _open(browser, index)["images"]
    assert sum(1 for i in images if i["width"] == 0) == 1


def test_audit_page_renders_in_chromium(browser: Any, tmp_path: Path) -> None:
    from runs import make_cell

    folder = tmp_path / "audit"
    row = make_cell(tmp_path / "run", "c1", {"seed": 0})
    cell = tmp_path / "run" / "cells" / "c1"
    folder.mkdir()
    (folder / "reconstructions.png").write_bytes((cell / "reconstruction.png").read_bytes())
    (folder / "confidence_change.png").write_bytes((cell / "confidence_change.png").read_bytes())
    import json

    samples = row["feature_recovery"]["samples"]
    (folder / "report.json").write_text(json.dumps({
        "format": "unlearnleak.audit/1", "mode": "white-box", "partial": False, "verdict": ["IMAGE LEAKED: <test>"],
        "evaluation": {"samples": samples}, "inputs": {"original": "a.pt", "unlearned": "b.pt"},
        "labels": {"from_predictions": {"confidence_changes": row["label_inference"]["changes"], "best": 3,
                                        "predicted": [3], "detected": True, "statistic": "log_odds",
                                        "detection_level": -0.1}}}))
    from unlearnleak.report import write_audit_html

    result = _open(browser, write_audit_html(folder))
    _check(result, 2)
