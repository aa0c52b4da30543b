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
    """The headline table for the console; columns with one value for every row move into the caption."""
    rows = table.display_rows
    same = [i for i, c in enumerate(table.display_columns)
            if len(rows) > 1 and len({r[i] for r in rows}) == 1 and len(rows[0][i]) < 40]
    caption = ", ".join(f"{table.display_columns[i]}: {rows[0][i]}" for i in same) if same else None
    out = RichTable(title=table.title, title_justify="left", caption=caption, caption_justify="left")
    keep = [i for i in range(len(table.display_columns)) if i not in same]
    for i in keep:
        out.add_column(table.display_columns[i], overflow="fold")
    for row in rows:
        out.add_row(*(row[i] for i in keep))
    return out


__all__ = ["Report", "RunData", "build_audit_report", "build_report", "build_run_report", "headline_rich_table",
           "load_run", "write_audit_html", "write_report"]
