"""Reports: tables, figures and a self-contained HTML page from run folders and audit folders."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from rich.table import Table as RichTable
from rich.text import Text

from unlearnleak.errors import ConfigError
from unlearnleak.report.audit_page import build_audit_report, write_audit_html
from unlearnleak.report.build import Report, build_run_report, write_report
from unlearnleak.report.load import RunData, is_audit_folder, load_run
from unlearnleak.report.tables import Table


def build_report(folder: str | Path, pool: Sequence[str] = ()) -> Report:
    """The report of a run folder (results.jsonl) or of an audit folder (report.json), built in memory.

    ``pool``: swept keys whose cells are pooled like seeds (e.g. the deleted class of a label-inference sweep,
    so that accuracy is reported over classes); each must be a swept key of the run.
    """
    folder = Path(folder)
    if folder.is_dir() and is_audit_folder(folder):
        if pool:
            raise ConfigError(f"--pool applies to run folders; {folder} is an audit folder")
        return build_audit_report(folder)
    data = load_run(folder)
    return build_run_report(pool_keys(data, pool) if pool else data)


def pool_keys(data: RunData, pool: Sequence[str]) -> RunData:
    """``data`` with the swept keys ``pool`` moved out of each row's params (into ``pooled``), so that the
    tables and figures pool their cells as they pool seeds."""
    swept = {k for row in data.rows for k in (row.get("params") or {}) if k != "seed"}
    unknown = [k for k in pool if k not in swept]
    if unknown:
        raise ConfigError(f"--pool {', '.join(unknown)}: not a swept key of {data.folder}; "
                          f"its swept keys: {', '.join(sorted(swept)) or 'none'}")
    rows = []
    for row in data.rows:
        params = dict(row.get("params") or {})
        pooled = {k: params.pop(k) for k in pool if k in params}
        rows.append({**row, "params": params, "pooled": pooled})
    return replace(data, rows=rows)


def headline_rich_table(table: Table) -> RichTable:
    """The headline table for the console; columns with one value for every row move into the caption."""
    rows = table.display_rows
    same = [i for i, c in enumerate(table.display_columns)
            if len(rows) > 1 and len({r[i] for r in rows}) == 1 and len(rows[0][i]) < 40]
    caption = ", ".join(f"{table.display_columns[i]}: {rows[0][i]}" for i in same) if same else None
    # Text, not markup: a config string such as "[link=…]" is shown as typed, never styled or linked
    out = RichTable(title=table.title, title_justify="left", caption=None if caption is None else Text(caption),
                    caption_justify="left")
    keep = [i for i in range(len(table.display_columns)) if i not in same]
    for i in keep:
        out.add_column(Text(table.display_columns[i]), overflow="fold")
    for row in rows:
        out.add_row(*(Text(row[i]) for i in keep))
    return out


__all__ = ["Report", "RunData", "build_audit_report", "build_report", "build_run_report", "headline_rich_table",
           "load_run", "pool_keys", "write_audit_html", "write_report"]
