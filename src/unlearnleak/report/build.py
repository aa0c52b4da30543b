"""A run folder → tables, figures and the HTML page, in memory first, then written into a staged folder.

Building everything before writing means a failure (a bad artifact, a plotting error) leaves nothing behind;
:func:`write_report` fills the folder that ``unlearnleak.storage.output_folder`` publishes whole.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from unlearnleak.report import html
from unlearnleak.report.figures import FigureFile, all_figures
from unlearnleak.report.load import RunData
from unlearnleak.report.stats import fmt
from unlearnleak.report.tables import Table, all_tables
from unlearnleak.storage import atomic_write, write_text_atomic

INDEX_FILE = "index.html"
# Row fields that record which data rows a cell used (shown as provenance when the pipeline records them).
INDEX_KEYS = ("ft_indices", "forget_indices", "indices", "forget_positions", "class_id", "deleted")


@dataclass
class Report:
    """What ``unlearnleak report`` writes: tables, figures, the page, and the headline for the console."""

    title: str
    tables: list[Table]
    figures: list[FigureFile]
    page: str
    headline: Table | None = None
    extra: dict[str, str] = field(default_factory=dict)  # other files: relative path → text


def write_report(report: Report, folder: Path) -> list[Path]:
    """Write tables/*.csv|md, figures/*.png, index.html (and extras) into ``folder``; return the paths."""
    written = []
    for table in report.tables:
        written.append(write_text_atomic(folder / "tables" / f"{table.name}.csv", table.csv()))
        written.append(write_text_atomic(folder / "tables" / f"{table.name}.md", table.markdown()))
    for fig in report.figures:
        written.append(atomic_write(folder / "figures" / f"{fig.name}.png", functools.partial(_write_bytes, fig.png)))
    for rel, text in report.extra.items():
        written.append(write_text_atomic(folder / rel, text))
    written.append(write_text_atomic(folder / INDEX_FILE, report.page))
    return written


def _write_bytes(data: bytes, path: Path) -> None:
    path.write_bytes(data)


def _unique(figures: list[FigureFile]) -> list[FigureFile]:
    """Distinct file names (two settings may slug alike)."""
    seen: dict[str, int] = {}
    for fig in figures:
        count = seen.get(fig.name, 0)
        seen[fig.name] = count + 1
        if count:
            fig.name = f"{fig.name}_{count + 1}"
    return figures


def _timing(data: RunData) -> dict[str, Any]:
    seconds = [float(r["seconds"]) for r in data.rows if isinstance(r.get("seconds"), int | float)]
    out: dict[str, Any] = {key: data.run[key] for key in ("started", "finished", "executor", "workers")
                           if key in data.run}
    out["cells"] = len(data.rows)
    out["cells ok"] = len(data.ok)
    out["cells failed"] = len(data.errors)
    if seconds:
        out["cell seconds (sum)"] = fmt(float(sum(seconds)), 4)
        out["cell seconds (min / max)"] = f"{fmt(float(min(seconds)))} / {fmt(float(max(seconds)))}"
    if data.superseded:
        out["rows superseded by a retry"] = data.superseded
    return out


def _indices(data: RunData) -> str:
    """Per cell, the data indices its row records (D_ft, D_u), if any."""
    parts = []
    for row in data.ok:
        found = {k: row[k] for k in INDEX_KEYS if k in row}
        forget = row.get("forget")
        if isinstance(forget, dict):
            found.update({f"forget.{k}": v for k, v in forget.items()})
        li = row.get("label_inference")
        if isinstance(li, dict) and "deleted" in li:
            found["label_inference.deleted"] = li["deleted"]
        if found:
            parts.append(f"<details><summary>cell {html.escape(str(row['cell']))}</summary>"
                         f"{html.mapping_html(found)}</details>")
    return "".join(parts) or '<p class="note">The rows record no data indices.</p>'


def _provenance(data: RunData) -> str:
    run = data.run
    environment: dict[str, Any] = run["environment"] if isinstance(run.get("environment"), dict) else {}
    versions = run.get("versions") or environment.get("versions") or {}
    revision = run.get("git_revision") or environment.get("git_revision")
    command = run.get("argv") or run.get("command")
    head: dict[str, Any] = {"run folder": str(data.folder.resolve()),
                            "command": " ".join(map(str, command)) if isinstance(command, list) else command,
                            "git revision": revision, "platform": environment.get("platform")}
    body = html.mapping_html({k: v for k, v in head.items() if v is not None})
    body += "<h3>Timing</h3>" + html.mapping_html(_timing(data))
    if isinstance(versions, dict) and versions:
        body += "<h3>Versions</h3>" + html.mapping_html(versions)
    body += "<h3>Config (experiment.yaml)</h3>"
    body += html.pre(data.experiment_yaml) if data.experiment_yaml is not None else \
        '<p class="note">experiment.yaml is absent from the run folder.</p>'
    body += "<h3>Data indices</h3>" + _indices(data)
    if run:
        body += "<details><summary>run.json</summary>" + html.pre(json.dumps(run, indent=2, default=str)) + \
            "</details>"
    else:
        body += '<p class="note">run.json is absent: no recorded command, versions or times.</p>'
    return body


def build_run_report(data: RunData) -> Report:
    """Tables, figures and the page for a run folder (nothing written yet)."""
    tables = all_tables(data.rows)
    figures = _unique(all_figures(data))
    name = _experiment_name(data)
    headline = next((t for t in tables if t.name == "headline"), None)
    sections: list[tuple[str, str, str]] = []
    verdicts = next((t for t in tables if t.name == "verdicts"), None)
    if verdicts is not None:
        sections.append(("verdicts", "Verdicts", html.table_html(verdicts, heading=False)))
    if headline is not None:
        sections.append(("headline", "Headline", html.table_html(headline, heading=False)))
    errors = next((t for t in tables if t.name == "errors"), None)
    if errors is not None:
        sections.append(("errors", f"Failed cells ({len(data.errors)})", html.table_html(errors, heading=False)))
    if figures:
        sections.append(("figures", "Figures", "".join(html.figure_html(f) for f in figures)))
    body = "".join(html.table_html(t) for t in tables if t.name not in ("verdicts", "headline", "errors", "cells"))
    cells = next(t for t in tables if t.name == "cells")
    body += f"<details><summary>Every cell ({len(data.rows)})</summary>{html.table_html(cells)}</details>"
    sections.append(("tables", "Tables", body))
    sections.append(("provenance", "Provenance", _provenance(data)))
    subtitle = (f"{len(data.ok)} of {len(data.rows)} cells finished"
                + (f", {len(data.errors)} failed" if data.errors else "") + f" — {data.folder}")
    page = html.page(f"unlearnleak report: {name}", subtitle, sections)
    return Report(name, tables, figures, page, headline)


def _experiment_name(data: RunData) -> str:
    for row in data.rows:
        config = row.get("config")
        if isinstance(config, dict) and isinstance(config.get("name"), str):
            return config["name"]
    return str(data.run.get("name") or data.folder.name)
