"""One self-contained HTML page (inline CSS, images as data: URIs, no scripts): opens anywhere, offline.

Every string that comes from a run (params, errors, config, paths) passes through :func:`html.escape`.
"""

from __future__ import annotations

import base64
import json
from html import escape
from typing import Any

from unlearnleak.report.figures import FigureFile
from unlearnleak.report.tables import Table

STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;margin:0 auto;max-width:1200px;
padding:1em 2em;color:#222;line-height:1.4}
h1{font-size:1.6em;margin-bottom:.2em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;font-size:.85em;margin:.6em 0;display:block;overflow-x:auto}
th,td{border:1px solid #ccc;padding:.25em .5em;text-align:left;vertical-align:top;white-space:nowrap}
th{background:#f3f3f3}tr:nth-child(even) td{background:#fafafa}
figure{margin:1em 0;padding:.5em;border:1px solid #eee;display:inline-block;max-width:100%}
figure img{max-width:100%;height:auto;display:block}figcaption{font-size:.85em;color:#555;max-width:900px}
pre{background:#f6f6f6;padding:.8em;overflow-x:auto;font-size:.8em}
.note{font-size:.85em;color:#555}.error{color:#a00}.verdict{font-weight:600}
nav a{margin-right:1em}details{margin:.5em 0}summary{cursor:pointer}
"""


def data_uri(png: bytes) -> str:
    """A PNG as a data: URI (the page then needs no other file)."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def figure_html(fig: FigureFile) -> str:
    """An <img> holding the PNG inline, with its caption."""
    return (f'<figure id="fig-{escape(fig.name)}"><img src="{data_uri(fig.png)}" alt="{escape(fig.title)}">'
            f"<figcaption><b>{escape(fig.title)}.</b> {escape(fig.caption)}</figcaption></figure>")


def table_html(table: Table, *, heading: bool = True, files: bool = True) -> str:
    """The display cells of ``table`` as an HTML table (escaped), with its note and, with ``files``, the names of
    its CSV and Markdown files (only where they are written beside the page: ``unlearnleak report``)."""
    head = "".join(f"<th>{escape(c)}</th>" for c in table.display_columns)
    body = "".join("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in row) + "</tr>" for row in table.display_rows)
    title = f"<h3>{escape(table.title)}</h3>" if heading else ""
    note = f'<p class="note">{escape(table.note)}</p>' if table.note else ""
    names = f'<p class="note">Files: tables/{escape(table.name)}.csv, tables/{escape(table.name)}.md</p>'
    return f"{title}<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{note}{names if files else ''}"


def mapping_html(values: dict[str, Any]) -> str:
    """A two-column key/value table (nested values as JSON)."""
    rows = "".join(
        f"<tr><th>{escape(str(k))}</th><td>{escape(v if isinstance(v, str) else json.dumps(v, default=str))}</td></tr>"
        for k, v in values.items())
    return f"<table><tbody>{rows}</tbody></table>"


def pre(text: str) -> str:
    """Preformatted text, escaped."""
    return f"<pre>{escape(text)}</pre>"


def section(anchor: str, title: str, body: str) -> str:
    """A titled section with an anchor for the navigation bar."""
    return f'<section id="{escape(anchor)}"><h2>{escape(title)}</h2>{body}</section>'


def page(title: str, subtitle: str, sections: list[tuple[str, str, str]]) -> str:
    """The whole document: (anchor, title, body HTML) per section, a navigation bar on top."""
    nav = "".join(f'<a href="#{escape(a)}">{escape(t)}</a>' for a, t, _ in sections)
    body = "".join(section(a, t, b) for a, t, b in sections)
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{escape(title)}</title><style>{STYLE}</style></head><body>"
            f'<h1>{escape(title)}</h1><p class="note">{escape(subtitle)}</p><nav>{nav}</nav>{body}</body></html>\n')
