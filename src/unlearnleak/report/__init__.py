"""Reports: tables, figures and a self-contained HTML page from run folders and audit folders."""

from __future__ import annotations

from pathlib import Path

from rich.table import Table as RichTable

from unlearnleak.report.audit_page import build_audit_report, write_audit_html
from unlearnleak.report.build import Report, build_run_report, write_report
from unlearnleak.report.load import RunData, is_audit_folder, load_run
from unlearnleak.report.tables import Table


def build_report(folder: str | Path) -> Report:
    """The report of a run folder (results.jsonl) or of an audit folder (report.json), built in memory."""
    folder = Path(folder)
    if folder.is_dir() and is_audit_folder(folder):
        return build_audit_report(folder)
    return build_run_report(load_run(folder))


def headline_rich_table(table: Table) -> RichTable:
    """The headline table for the console (rich)."""
    out = RichTable(title=table.title, title_justify="left")
    for column in table.display_columns:
        out.add_column(column, overflow="fold")
    for row in table.display_rows:
        out.add_row(*row)
    return out


__all__ = ["Report", "RunData", "build_audit_report", "build_report", "build_run_report", "headline_rich_table",
           "load_run", "write_audit_html", "write_report"]
