"""The same self-contained page for an audit folder (``unlearnleak audit --out``): verdict, numbers, figures.

``write_audit_html(folder)`` is what the audit calls after writing report.json; ``unlearnleak report AUDIT_DIR``
builds the same page (plus CSV/Markdown tables) into AUDIT_DIR/report/.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from unlearnleak.errors import CheckpointError
from unlearnleak.experiments.rows import inside_without_links
from unlearnleak.report import html
from unlearnleak.report.build import Report
from unlearnleak.report.figures import FigureFile
from unlearnleak.report.groups import value_text
from unlearnleak.report.load import AUDIT_FILE, AUDIT_FORMAT, PNG_SIGNATURE
from unlearnleak.report.stats import fmt, interval
from unlearnleak.report.tables import Table
from unlearnleak.storage import write_text_atomic

AUDIT_HTML = "report.html"
FIGURES = (("reconstructions.png", "Recovered deleted samples",
            "Top: the true deleted samples (when --ground-truth was given), below: what feature recovery made of "
            "them, PSNR under each (like the paper's Fig. 3)."),
           ("confidence_change.png", "Confidence changes",
            "The change of each class's confidence on its probes between θ and θ_u; the guess in red, the dashed "
            "line the calibrated detection level (like the paper's Fig. 4)."))
SAMPLE_COLUMNS = ("index", "psnr", "ssim", "lpips", "mse", "dataset_mean_colour_psnr", "own_mean_colour_psnr",
                  "thumbnail_4x4_psnr", "true_label", "label", "label_correct")


def _refuse_link(folder: Path, path: Path) -> None:
    """An audit folder's files are read only from inside it (a symbolic link is refused, never followed)."""
    problem = inside_without_links(folder, path) if path.is_symlink() else None
    if problem is not None:
        raise CheckpointError(f"{problem}; copy the file into the audit folder instead of linking it")


def read_audit(folder: Path) -> dict[str, Any]:
    """report.json of an audit folder, checked to be one."""
    path = folder / AUDIT_FILE
    _refuse_link(folder, path)
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path} is not a readable JSON report ({exc}); re-run `unlearnleak audit`") from None
    if not isinstance(report, dict) or report.get("format") != AUDIT_FORMAT:
        raise CheckpointError(f"{path} is not an audit report (format {AUDIT_FORMAT!r}); give an "
                              f"`unlearnleak audit --out` folder or a run folder with results.jsonl")
    return report


def _figures(folder: Path) -> list[FigureFile]:
    out = []
    for name, title, caption in FIGURES:
        path = folder / name
        _refuse_link(folder, path)
        if path.is_file():
            png = path.read_bytes()
            if png[:8] != PNG_SIGNATURE:
                raise CheckpointError(f"{path} is not a PNG image; re-run `unlearnleak audit`")
            out.append(FigureFile(Path(name).stem, title, caption, png))
    return out


def _evaluation_tables(report: dict[str, Any]) -> list[Table]:
    evaluation = report.get("evaluation")
    if not isinstance(evaluation, dict) or not evaluation.get("samples"):
        return []
    samples = [s for s in evaluation["samples"] if isinstance(s, dict)]
    columns = [c for c in SAMPLE_COLUMNS if any(c in s for s in samples)]
    raw = [[s.get(c) for c in columns] for s in samples]
    shown = [["" if v is None else fmt(v) if isinstance(v, float) else value_text(v) for v in r] for r in raw]
    per_sample = Table("audit_samples", "Recovery per deleted sample", columns, raw, columns, shown,
                       "Matched to the true samples by MSE; baselines (docs/metrics.md): the dataset's and the "
                       "image's own mean colour, and the 4×4 thumbnail.")
    metrics = [c for c in columns if c not in ("index", "true_label", "label")]
    stat_cols = ["metric", "mean", "low95", "high95", "n"]
    stats = [(m, interval(float(s[m]) if isinstance(s.get(m), bool | int | float) else None for s in samples))
             for m in metrics]
    summary = Table("audit_summary", "Recovery: mean and 95 % interval over the deleted samples", stat_cols,
                    [[m, s.mean, s.low, s.high, s.n] for m, s in stats], ["metric", "mean [95 % t-interval] (n)"],
                    [[m, s.text()] for m, s in stats], "t-interval over the k deleted samples.")
    return [summary, per_sample]


def _label_table(report: dict[str, Any]) -> list[Table]:
    pred = (report.get("labels") or {}).get("from_predictions")
    if not isinstance(pred, dict) or not pred.get("confidence_changes"):
        return []
    changes = pred["confidence_changes"]
    best, predicted = pred.get("best"), set(pred.get("predicted") or [])
    raw = [[c, v, c == best, c in predicted] for c, v in enumerate(changes)]
    shown = [[str(c), fmt(v) if isinstance(v, int | float) else "n/a", "yes" if b else "", "yes" if p else ""]
             for c, v, b, p in raw]
    chance = 1 / len(changes)
    note = (f"Statistic: {pred.get('statistic')}; detection level {fmt(pred.get('detection_level'))}; "
            f"detected: {pred.get('detected')}; chance of naming the deleted class by a guess: {fmt(chance)}.")
    return [Table("audit_labels", "Label inference: confidence change per class", ["class", "change", "best",
                  "predicted"], raw, ["class", "change", "best", "predicted"], shown, note)]


def build_audit_report(folder: str | Path, *, files: bool = True) -> Report:
    """The audit's page, tables and figures from its folder (report.json + PNGs); ``files``: the page names the
    table files written beside it (`unlearnleak report`), not for the page the audit itself writes."""
    folder = Path(folder)
    report = read_audit(folder)
    figures = _figures(folder)
    tables = _evaluation_tables(report) + _label_table(report)
    verdict = "".join(f'<p class="verdict">{html.escape(str(line))}</p>' for line in report.get("verdict") or [])
    if report.get("partial"):
        verdict += f'<p class="error">Partial: {html.escape(str(report.get("partial_reason")))}</p>'
    sections: list[tuple[str, str, str]] = [("verdict", "Verdict", verdict or "<p>Nothing was attacked.</p>")]
    if figures:
        sections.append(("figures", "Figures", "".join(html.figure_html(f) for f in figures)))
    if tables:  # the audit writes no table files; `unlearnleak report AUDIT_DIR` does (its own page lists them)
        body = "".join(html.table_html(t, files=files) for t in tables)
        if not files:
            body += ('<p class="note">These tables as CSV and Markdown files: run <code>unlearnleak report '
                     'AUDIT_DIR</code>.</p>')
        sections.append(("tables", "Tables", body))
    environment: dict[str, Any] = report["environment"] if isinstance(report.get("environment"), dict) else {}
    prov = html.mapping_html({"mode": report.get("mode"), "partial": report.get("partial"),
                              "git revision": environment.get("git_revision"),
                              "platform": environment.get("platform")})
    for key, title in (("inputs", "Inputs"), ("knowledge", "Declared knowledge"), ("queries", "Queries"),
                       ("timing", "Timing (seconds)")):
        if isinstance(report.get(key), dict) and report[key]:
            prov += f"<h3>{title}</h3>" + html.mapping_html(report[key])
    if isinstance(environment.get("versions"), dict):
        prov += "<h3>Versions</h3>" + html.mapping_html(environment["versions"])
    prov += "<details><summary>report.json</summary>" + html.pre(json.dumps(report, indent=2)) + "</details>"
    sections.append(("provenance", "Provenance", prov))
    title = f"unlearnleak audit ({report.get('mode', '?')})"
    inputs = report.get("inputs") if isinstance(report.get("inputs"), dict) else {}
    subtitle = f"θ: {inputs.get('original')} — θ_u: {inputs.get('unlearned')}" if inputs else "no inputs recorded"
    page = html.page(title, subtitle, sections)  # no folder path: the audit writes this page in a staged folder
    return Report(title, tables, figures, page, tables[0] if tables else None)


def write_audit_html(folder: str | Path) -> Path:
    """Write ``report.html`` (self-contained) into the audit folder ``folder``, atomically."""
    folder = Path(folder)
    return write_text_atomic(folder / AUDIT_HTML, build_audit_report(folder, files=False).page)
