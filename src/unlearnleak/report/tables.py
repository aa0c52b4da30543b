"""Aggregate tables (CSV and Markdown): per group of seeds, each attack metric with its interval beside its baselines.

Intervals pool every sample of every seed of a group (per-sample values from the rows' ``samples``); a metric
that has no per-sample values pools the cells' means instead. ``n`` says how many values went in.
"""

from __future__ import annotations

import csv
import html
import io
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from unlearnleak.report.groups import Group, group_rows, setting_columns, short, value_text
from unlearnleak.report.stats import Interval, as_number, fmt, interval, metric_interval
from unlearnleak.rows import TABULAR_BASELINE
from unlearnleak.verdicts import MARGIN_DB, gradient_label_phrase, image_verdict, label_summary, tabular_verdict

UTILITY = (("served_test_accuracy", "served acc"), ("unlearned_test_accuracy", "θ_u acc"),
           ("original_test_accuracy", "θ acc"))


@dataclass
class Table:
    """One table: raw values for CSV, formatted cells for Markdown and HTML."""

    name: str  # file stem
    title: str
    columns: list[str]
    rows: list[list[Any]]
    display_columns: list[str]
    display_rows: list[list[str]]
    note: str = ""

    def csv(self) -> str:
        """The raw values, full precision; lists and objects as JSON; text that a spreadsheet would run as a
        formula (``=HYPERLINK(…)``, ``+``, ``-``, ``@`` …) is prefixed with ``'`` so that it stays text."""
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow([csv_text(c) for c in self.columns])
        for row in self.rows:
            writer.writerow(["" if v is None else json.dumps(v, sort_keys=True) if isinstance(v, list | dict)
                             else csv_text(v) if isinstance(v, str) else v for v in row])
        return buffer.getvalue()

    def markdown(self) -> str:
        """A GitHub-flavoured Markdown table with a title and the note under it; text from the run (config
        strings, errors) is escaped, so that raw HTML in it shows as text in any Markdown viewer."""
        lines = [f"## {markdown_text(self.title)}", "",
                 "| " + " | ".join(markdown_text(c) for c in self.display_columns) + " |",
                 "|" + "---|" * len(self.display_columns)]
        lines += ["| " + " | ".join(markdown_text(c) for c in row) + " |" for row in self.display_rows]
        if self.note:
            lines += ["", markdown_text(self.note)]
        return "\n".join(lines) + "\n"


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "\n", "|")


def csv_text(text: str) -> str:
    """``text`` safe in a spreadsheet cell: a leading formula character gets a ``'`` (numbers stay numbers)."""
    if not text.startswith(_FORMULA_START):
        return text
    try:
        float(text)
    except ValueError:
        return "'" + text
    return text


def markdown_text(text: str) -> str:
    """``text`` as one Markdown table cell: HTML special characters escaped, pipes escaped, one line."""
    return html.escape(text, quote=False).replace("|", "\\|").replace("\r", " ").replace("\n", " ")


@dataclass
class _Builder:
    """Collects the columns of a table group by group (raw + display) in one pass."""

    columns: list[str] = field(default_factory=list)
    display_columns: list[str] = field(default_factory=list)
    rows: list[list[Any]] = field(default_factory=list)
    display_rows: list[list[str]] = field(default_factory=list)
    _raw: dict[str, Any] = field(default_factory=dict)
    _shown: dict[str, str] = field(default_factory=dict)

    def value(self, column: str, value: Any, shown: str | None = None, display: str | None = None) -> None:
        """A plain column (shown under ``display`` or its own name; ``shown`` overrides the text)."""
        self._raw[column] = value
        self._shown[display or column] = shown if shown is not None else (
            fmt(value) if isinstance(value, float) else "" if value is None else value_text(value))
        _add(self.columns, column)
        _add(self.display_columns, display or column)

    def stat(self, name: str, stat: Interval, display: str | None = None) -> None:
        """Four CSV columns (mean, 95 % low/high, n), one display column."""
        for suffix, v in (("mean", stat.mean), ("low95", stat.low), ("high95", stat.high), ("n", stat.n)):
            self._raw[f"{name}_{suffix}"] = v
            _add(self.columns, f"{name}_{suffix}")
        self._shown[display or name] = stat.text()
        _add(self.display_columns, display or name)

    def end_row(self) -> None:
        """Close the current group's row."""
        self.rows.append([self._raw.get(c) for c in self.columns])
        self.display_rows.append([self._shown.get(c, "") for c in self.display_columns])
        self._raw, self._shown = {}, {}

    def table(self, name: str, title: str, note: str = "") -> Table:
        """The finished table (rows padded to the final columns)."""
        width, dwidth = len(self.columns), len(self.display_columns)
        rows = [r + [None] * (width - len(r)) for r in self.rows]
        drows = [r + [""] * (dwidth - len(r)) for r in self.display_rows]
        return Table(name, title, list(self.columns), rows, list(self.display_columns), drows, note)


def _add(items: list[str], item: str) -> None:
    if item not in items:
        items.append(item)


def _start(builder: _Builder, keys: list[str], group: Group, settings: list[str]) -> None:
    for key in keys:
        builder.value(key, group.params.get(key), display=short(key))
    for name in settings:
        builder.value(name, group.setting(name))
    builder.value("cells", len(group.rows))


def _utility(builder: _Builder, group: Group) -> None:
    for key, display in UTILITY:
        values = [(r.get("utility") or {}).get(key) for r in group.rows]
        if any(v is not None for v in values):
            builder.stat(key, metric_interval(key, values), display)


# ----- feature recovery ------------------------------------------------------------------------------------


def sample_values(rows: list[dict[str, Any]], metric: str) -> list[float | None]:
    """A metric's values over samples × seeds: per sample where the rows list it, else the cells' means."""
    values: list[float | None] = []
    for row in rows:
        fr = row["feature_recovery"]
        samples = [s for s in fr.get("samples") or [] if isinstance(s, dict)]
        if samples and all(metric in s for s in samples):
            values += [s[metric] for s in samples]
        elif metric == "label_accuracy" and samples and all("label" in s and "true_label" in s for s in samples):
            values += [float(s["label"] == s["true_label"]) for s in samples]
        else:
            values.append((fr.get("metrics") or {}).get(metric))
    return values


def _fr_metrics(rows: list[dict[str, Any]]) -> list[str]:
    names: dict[str, None] = {}
    for row in rows:
        for key, value in (row["feature_recovery"].get("metrics") or {}).items():
            if value is None or isinstance(value, int | float):
                names.setdefault(key, None)
    return list(names)


FLAT_BASELINE = TABULAR_BASELINE


def baselines_of(fr: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    """A row's baselines as name → metric → value (older names and the flat tabular form are converted when the
    row is read: ``unlearnleak.rows.Baselines``)."""
    raw = (fr or {}).get("baselines") or {}
    return {k: v for k, v in raw.items() if isinstance(v, dict)}


def _baselines(rows: list[dict[str, Any]]) -> dict[str, list[str]]:
    out: dict[str, dict[str, None]] = {}
    for row in rows:
        for name, metrics in baselines_of(row["feature_recovery"]).items():
            for metric in metrics:
                out.setdefault(name, {}).setdefault(metric, None)
    return {k: list(v) for k, v in out.items()}


def baseline_values(rows: list[dict[str, Any]], name: str, metric: str) -> list[float | None]:
    """A baseline's value per cell (the rows hold the baseline's mean over the cell's samples)."""
    return [baselines_of(r["feature_recovery"]).get(name, {}).get(metric) for r in rows]


def feature_recovery_table(rows: list[dict[str, Any]]) -> Table | None:
    """Per group: each recovery metric (mean, 95 % interval over samples × seeds) beside both baselines."""
    fr_rows = [r for r in rows if r.get("status") == "ok" and isinstance(r.get("feature_recovery"), dict)]
    if not fr_rows:
        return None
    keys, groups = group_rows(fr_rows)
    metrics, baselines = _fr_metrics(fr_rows), _baselines(fr_rows)
    builder = _Builder()
    for group in groups:
        _start(builder, keys, group, setting_columns(keys))
        for metric in metrics:
            builder.stat(metric, metric_interval(metric, sample_values(group.rows, metric)))
        for name, names in baselines.items():
            for metric in names:
                builder.stat(f"{name}_{metric}", metric_interval(metric, baseline_values(group.rows, name, metric)),
                             f"{name} {metric}")
        _utility(builder, group)
        builder.end_row()
    note = ("Mean [95 % t-interval] (n = samples × seeds pooled; a metric without per-sample values pools the "
            "cells' means). Baselines (docs/metrics.md): the dataset's mean colour, each true image's own mean "
            "colour and its 4×4 thumbnail (interval over cells). "
            "Utility: test accuracy of the served model (after any defense), θ_u and θ, "
            "interval over seeds.")
    return builder.table("feature_recovery", "Feature recovery", note)


# ----- label inference -------------------------------------------------------------------------------------


def _deleted_change(li: dict[str, Any]) -> float | None:
    changes, deleted = li.get("changes") or [], li.get("deleted") or []
    values = [as_number(changes[d]) for d in deleted if isinstance(d, int) and 0 <= d < len(changes)]
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return sum(finite) / len(finite) if finite else None


LABEL_METRICS: tuple[tuple[str, str, Callable[[dict[str, Any]], float | None]], ...] = (
    ("correct", "accuracy (argmin = deleted)", lambda li: _flag(li.get("correct"))),
    ("detected", "detected", lambda li: _flag(li.get("detected"))),
    ("detected_correct", "detected & right",
     lambda li: None if li.get("detected") is None else float(bool(li.get("detected")) and bool(li.get("correct")))),
    ("change_deleted", "Δ confidence of deleted", _deleted_change),
    ("queries_original", "queries θ", lambda li: li.get("queries_original")),
    ("queries_unlearned", "queries θ_u", lambda li: li.get("queries_unlearned")),
)


def _flag(value: Any) -> float | None:
    return None if value is None else float(bool(value))


def label_inference_table(rows: list[dict[str, Any]]) -> Table | None:
    """Per group: how often the deleted label was named (and detected), beside chance; n = seeds."""
    li_rows = [r for r in rows if r.get("status") == "ok" and isinstance(r.get("label_inference"), dict)]
    if not li_rows:
        return None
    keys, groups = group_rows(li_rows)
    builder = _Builder()
    for group in groups:
        _start(builder, keys, group, setting_columns(keys))
        lis = [r["label_inference"] for r in group.rows]
        for name, display, get in LABEL_METRICS:
            builder.stat(name, metric_interval(name, (get(li) for li in lis)), display)
        builder.stat("chance", interval(li.get("chance") for li in lis))
        _utility(builder, group)
        builder.end_row()
    note = ("Mean [95 % t-interval] over seeds (n = cells; one guess per cell). Accuracy: the class whose "
            "confidence fell most is a deleted one; detected: the fall passes the calibrated level; chance = 1/C.")
    return builder.table("label_inference", "Label inference", note)


# ----- verdicts in words ---------------------------------------------------------------------------------


def verdict_table(rows: list[dict[str, Any]]) -> Table | None:
    """Per group, the attacks' results in words (unlearnleak.verdicts): where the recovery stands among its
    baselines — stated when it falls below one — and how the label inference fared."""
    ok = [r for r in rows if r.get("status") == "ok"]
    if not ok:
        return None
    keys, groups = group_rows(ok)
    builder = _Builder()
    for group in groups:
        for key in keys:
            builder.value(key, group.params.get(key), display=short(key))
        for name in setting_columns(keys):
            builder.value(name, group.setting(name))
        fr = [r for r in group.rows if isinstance(r.get("feature_recovery"), dict)]
        text = _recovery_words(fr) if fr else None
        builder.value("feature_recovery", text, display="feature recovery")
        li = [r["label_inference"] for r in group.rows if isinstance(r.get("label_inference"), dict)]
        builder.value("label_inference", label_summary(li), display="label inference")
        builder.end_row()
    note = (f"The rule (docs/metrics.md, \"Verdicts\"): the highest baseline the mean PSNR clears by more than "
            f"{MARGIN_DB} dB (at the thumbnail's PSNR, SSIM and LPIPS both clearly better than its count as beyond "
            "it); below a baseline is said so. Label inference: the class whose confidence fell most, and whether "
            "the fall is significant.")
    return builder.table("verdicts", "Verdicts", note)


def _recovery_words(fr: list[dict[str, Any]]) -> str | None:
    metrics = _fr_metrics(fr)
    names = _baselines(fr)
    if "psnr" in metrics:
        stat = metric_interval("psnr", sample_values(fr, "psnr"))
        base = {name: {metric: interval(baseline_values(fr, name, metric)).mean for metric in names[name]}
                for name in names if "psnr" in names[name]}
        span = (stat.low, stat.high) if stat.low is not None and stat.high is not None else None
        mean = {metric: interval(sample_values(fr, metric)).mean if metric in metrics else None
                for metric in ("ssim", "lpips")}
        verdict = image_verdict(stat.mean, base, ssim=mean["ssim"], lpips=mean["lpips"], interval=span)
    elif "mse" in metrics:
        verdict = tabular_verdict(interval(sample_values(fr, "mse")).mean,
                                  interval(baseline_values(fr, FLAT_BASELINE, "mse")).mean)
    else:
        verdict = None
    accuracy = interval(sample_values(fr, "label_accuracy")).mean if "label_accuracy" in metrics else None
    phrase = gradient_label_phrase(accuracy)
    parts = [p for p in (verdict.sentence if verdict else None, phrase) if p]
    return "; ".join(parts) or None


# ----- headline, per cell, errors --------------------------------------------------------------------------


def headline_table(rows: list[dict[str, Any]]) -> Table | None:
    """One line per group: the attacks' main numbers next to what a trivial guess scores."""
    ok = [r for r in rows if r.get("status") == "ok"]
    if not ok:
        return None
    keys, groups = group_rows(ok)
    builder = _Builder()
    for group in groups:
        _start(builder, keys, group, setting_columns(keys))
        fr = [r for r in group.rows if isinstance(r.get("feature_recovery"), dict)]
        if fr:
            metrics = _fr_metrics(fr)
            main = "psnr" if "psnr" in metrics else next(iter(metrics), None)
            if main is not None:
                builder.stat(main, metric_interval(main, sample_values(fr, main)),
                             main.upper() if main == "psnr" else main)
                for name in _baselines(fr):
                    builder.value(f"{name}_{main}", interval(baseline_values(fr, name, main)).mean,
                                  display=f"{name} {main}")
            if "label_accuracy" in metrics:
                accuracy = metric_interval("label_accuracy", sample_values(fr, "label_accuracy"))
                builder.stat("label_accuracy", accuracy, "labels right from weights")
        li = [r["label_inference"] for r in group.rows if isinstance(r.get("label_inference"), dict)]
        if li:
            builder.stat("label_inference_correct", metric_interval("correct", (_flag(x.get("correct")) for x in li)),
                         "label inference")
            builder.value("chance", interval(x.get("chance") for x in li).mean)
        served = [(r.get("utility") or {}).get("served_test_accuracy") for r in group.rows]
        if any(v is not None for v in served):
            builder.stat("served_test_accuracy", metric_interval("accuracy", served), "served acc")
        builder.end_row()
    return builder.table("headline", "Headline", "Mean [95 % t-interval] (n); baselines beside each attack metric. "
                         "Labels right from weights: the share of deleted samples whose label the server reads "
                         "correctly from the weight change ∇* before making any image. Label inference: the share "
                         "of cells where the class whose confidence fell most was a deleted one (chance beside).")


def _flatten(prefix: str, value: Any, out: dict[str, Any]) -> None:
    if isinstance(value, dict):
        for key, inner in value.items():
            _flatten(f"{prefix}.{key}" if prefix else str(key), inner, out)
    else:
        out[prefix] = value


def cells_table(rows: list[dict[str, Any]]) -> Table:
    """Every cell on one line: params, status, scalar results (lists kept as JSON in the CSV)."""
    flat_rows: list[dict[str, Any]] = []
    for row in rows:
        flat: dict[str, Any] = {"cell": row.get("cell"), "status": row.get("status"), "seconds": row.get("seconds")}
        _flatten("params", row.get("params") or {}, flat)
        for key in ("dataset", "model", "method", "kind", "n_train", "k"):
            flat[key] = row.get(key)
        defense = row.get("defense")
        flat["defense"] = defense.get("name") if isinstance(defense, dict) else defense
        _flatten("utility", row.get("utility") or {}, flat)
        fr = row.get("feature_recovery")
        if isinstance(fr, dict):
            _flatten("feature_recovery.metrics", fr.get("metrics") or {}, flat)
            _flatten("feature_recovery.baselines", baselines_of(fr), flat)
            flat["feature_recovery.seconds"] = fr.get("seconds")
        li = row.get("label_inference")
        if isinstance(li, dict):
            for key in ("deleted", "best", "correct", "detected", "chance", "queries_original", "queries_unlearned"):
                flat[f"label_inference.{key}"] = li.get(key)
        flat["error"] = row.get("error")
        flat_rows.append(flat)
    columns: list[str] = []
    for flat in flat_rows:
        for key in flat:
            _add(columns, key)
    columns = [c for c in columns if any(f.get(c) is not None for f in flat_rows)] or ["cell"]
    raw = [[f.get(c) for c in columns] for f in flat_rows]
    shown = [["" if v is None else fmt(v) if isinstance(v, float) else value_text(v) for v in r] for r in raw]
    return Table("cells", "Cells", columns, raw, columns, shown, "One line per cell (its last row).")


def errors_table(rows: list[dict[str, Any]]) -> Table | None:
    """The cells that failed, with their one-line error (re-running the sweep retries them)."""
    bad = [r for r in rows if r.get("status") != "ok"]
    if not bad:
        return None
    columns = ["cell", "params", "seconds", "error"]
    raw: list[list[Any]] = []
    shown: list[list[str]] = []
    for r in bad:
        params: dict[str, Any] = r["params"] if isinstance(r.get("params"), dict) else {}
        seconds = r.get("seconds") if isinstance(r.get("seconds"), int | float) else None
        error = str(r.get("error") or "(no message)")
        raw.append([r.get("cell"), params, seconds, error])
        shown.append([str(r.get("cell")), ", ".join(f"{short(k)}={value_text(v)}" for k, v in params.items()),
                      "" if seconds is None else fmt(float(seconds)), error])
    return Table("errors", "Failed cells", columns, raw, columns, shown,
                 "Re-running `unlearnleak sweep` on the same folder retries these cells; see cells/<hash>/error.txt.")


def all_tables(rows: list[dict[str, Any]]) -> list[Table]:
    """The report's tables, the verdicts in words and the headline first (those with nothing to show left out)."""
    tables = [verdict_table(rows), headline_table(rows), feature_recovery_table(rows), label_inference_table(rows),
              errors_table(rows), cells_table(rows)]
    return [t for t in tables if t is not None]
