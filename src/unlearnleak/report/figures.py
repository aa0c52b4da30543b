"""The report's figures (matplotlib, Agg canvas, PNG bytes): Fig. 3 grids, Fig. 4 bars, sweeps and trade-offs.

Every figure is drawn from the run's rows and the cells' safetensors only; nothing is recomputed.
"""

from __future__ import annotations

import functools
import hashlib
import io
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import matplotlib
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from unlearnleak.report.groups import Group, group_rows, numeric_keys, short, value_text
from unlearnleak.report.load import CellTensors, RunData
from unlearnleak.report.stats import Interval, as_number, bounds_for, fmt, interval, metric_interval
from unlearnleak.report.tables import LABEL_METRICS, baseline_values, baselines_of, sample_values

MAX_COLUMNS = 8  # samples per grid row
MAX_RECOVERY_ROWS = 12  # recovery rows per grid figure
MAX_BAR_FIGURES = 12  # confidence-change figures (one per group)
DPI = 110
_GREYS = itertools.cycle(["gray", "darkgray", "dimgray"])


@dataclass
class FigureFile:
    """One rendered figure: file stem, title, caption, PNG bytes."""

    name: str
    title: str
    caption: str
    png: bytes


def render(fig: Figure) -> bytes:
    """PNG bytes through the Agg canvas (no pyplot, no global backend, no display)."""
    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight", metadata={"Software": None})
    return buffer.getvalue()


def slug(text: str) -> str:
    """A file-name-safe stem."""
    out = "".join(c if c.isalnum() or c in "-_." else "_" for c in text)
    return out.strip("_.")[:80] or "figure"


def _seed(row: dict[str, Any]) -> Any:
    return (row.get("params") or {}).get("seed")


def _sort_seed(seed: Any) -> tuple[int, str]:
    return (0, f"{seed:020d}") if isinstance(seed, int) and seed >= 0 else (1, value_text(seed))


# ----- Fig. 3: reconstruction grids ------------------------------------------------------------------------


def _image(x: torch.Tensor) -> np.ndarray:
    arr = x.detach().cpu().float().clamp(0, 1).permute(1, 2, 0).numpy()
    return arr[..., 0] if arr.shape[-1] == 1 else arr


def _aligned(row: dict[str, Any], tensors: CellTensors) -> tuple[torch.Tensor, list[str]]:
    """The reconstruction reordered to match truth sample by sample, and a PSNR caption per sample."""
    k = tensors.truth.shape[0]
    samples = {s.get("index", i): s for i, s in enumerate(row["feature_recovery"].get("samples") or [])
               if isinstance(s, dict)}
    order, captions = [], []
    for i in range(k):
        sample = samples.get(i, {})
        j = sample.get("reconstruction", i)
        order.append(j if isinstance(j, int) and 0 <= j < k else i)
        value = sample.get("psnr")
        captions.append(f"{value:.1f} dB" if isinstance(value, int | float) else "")
    return tensors.reconstruction[torch.tensor(order)], captions


def reconstruction_grids(data: RunData) -> list[FigureFile]:
    """Per dataset × method: each group's true deleted samples (first seed), its recovery below, PSNR under each."""
    rows = [r for r in data.ok if r["cell"] in data.tensors]
    keys, groups = group_rows(rows)
    labels = {id(r): g.label(keys) for g in groups for r in g.rows}
    by_setting: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for group in groups:
        row = sorted(group.rows, key=lambda r: _sort_seed(_seed(r)))[0]
        by_setting.setdefault((str(row.get("dataset")), str(row.get("method"))), []).append(row)
    figures = []
    for (dataset, method), cells in by_setting.items():
        blocks: dict[str, list[dict[str, Any]]] = {}
        for row in cells[:MAX_RECOVERY_ROWS]:
            truth = data.tensors[row["cell"]].truth
            digest = hashlib.sha256(truth.numpy().tobytes() + str(tuple(truth.shape)).encode()).hexdigest()
            blocks.setdefault(digest, []).append(row)
        lines: list[tuple[str, torch.Tensor, list[str]]] = []
        for block in blocks.values():
            lines.append(("truth", data.tensors[block[0]["cell"]].truth, [""] * 0))
            for row in block:
                x, captions = _aligned(row, data.tensors[row["cell"]])
                lines.append((f"{labels[id(row)]}\nseed {value_text(_seed(row))}", x, captions))
        cols = min(MAX_COLUMNS, max(x.shape[0] for _, x, _ in lines))
        fig = Figure(figsize=(1.15 * cols + 1.6, 1.3 * len(lines) + 0.4), layout="constrained")
        axes = fig.subplots(len(lines), cols, squeeze=False)
        for r, (label, x, captions) in enumerate(lines):
            for c in range(cols):
                ax = axes[r][c]
                ax.set_xticks([])
                ax.set_yticks([])
                if c >= x.shape[0]:
                    ax.axis("off")
                    continue
                img = _image(x[c])
                ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
                if c < len(captions) and captions[c]:
                    ax.set_xlabel(captions[c], fontsize=7)
                if c == 0:
                    ax.set_ylabel(label, fontsize=7, rotation=0, ha="right", va="center")
        fig.suptitle(f"{dataset} — {method}: true deleted samples and their recovery", fontsize=9)
        shown = min(len(cells), MAX_RECOVERY_ROWS)
        caption = (f"Like the paper's Fig. 3: each 'truth' row holds the deleted samples D_u of a cell, the rows "
                   f"below it what feature recovery made of them, PSNR under each. One cell (the first seed) per "
                   f"group of seeds; {shown} of {len(cells)} groups shown; at most {MAX_COLUMNS} samples per row.")
        figures.append(FigureFile(slug(f"reconstructions_{dataset}_{method}"),
                                  f"Reconstructions — {dataset}, {method}", caption, render(fig)))
    return figures


# ----- Fig. 4: confidence-change bars ----------------------------------------------------------------------


def confidence_bars(data: RunData) -> list[FigureFile]:
    """Per group (its first seed's cell): the change of each class's confidence, deleted class(es) in red."""
    rows = [r for r in data.ok if isinstance(r.get("label_inference"), dict) and r["label_inference"].get("changes")]
    keys, groups = group_rows(rows)
    figures = []
    for group in groups[:MAX_BAR_FIGURES]:
        row = sorted(group.rows, key=lambda r: _sort_seed(_seed(r)))[0]
        li = row["label_inference"]
        changes = [float("nan") if as_number(v) is None else float(v) for v in li["changes"]]
        deleted = {d for d in li.get("deleted") or [] if isinstance(d, int)}
        k = len(changes)
        fig = Figure(figsize=(max(4.0, 0.5 * k + 1.5), 3.0), layout="constrained")
        ax = fig.subplots()
        heights = [0.0 if np.isnan(v) else v for v in changes]
        bars = ax.bar(range(k), heights, color=["tab:red" if c in deleted else "tab:blue" for c in range(k)])
        best = li.get("best")
        if isinstance(best, int) and 0 <= best < k:
            bars[best].set_hatch("//")
            bars[best].set_edgecolor("black")
        ax.axhline(0.0, color="black", linewidth=0.8)
        ax.set_xticks(range(k), [str(c) for c in range(k)], fontsize=7)
        ax.set_xlabel("class (red: deleted; hatched: the attack's guess)", fontsize=8)
        ax.set_ylabel(f"mean Δ confidence ({li.get('statistic', '?')})\nafter − before", fontsize=8)
        verdict = "right" if li.get("correct") else "wrong"
        ax.set_title(f"{group.label(keys)}, seed {value_text(_seed(row))}: guess {best} ({verdict}), "
                     f"{'detected' if li.get('detected') else 'not detected'}", fontsize=8)
        caption = ("Like the paper's Fig. 4: the change of each class's confidence on its probes between θ and θ_u; "
                   f"cell {row['cell']}.")
        figures.append(FigureFile(slug(f"confidence_change_{group.label(keys)}"),
                                  f"Confidence changes — {group.label(keys)}", caption, render(fig)))
    return figures


# ----- metric against a swept numeric parameter ------------------------------------------------------------


Getter = Callable[[list[dict[str, Any]]], Interval]


def _series(keys: list[str], x_key: str, groups: list[Group]) -> dict[str, list[Group]]:
    """Groups split by the swept keys other than ``x_key``, each sorted along ``x_key``."""
    out: dict[str, list[Group]] = {}
    others = [k for k in keys if k != x_key]
    for group in groups:
        out.setdefault(group.label(others) if others else "", []).append(group)
    return {name: sorted(gs, key=lambda g: float(g.params[x_key])) for name, gs in out.items()}


def _band(ax: Axes, xs: list[float], stats: list[Interval], label: str, **style: Any) -> None:
    ys = [np.nan if s.mean is None else s.mean for s in stats]
    line = ax.plot(xs, ys, marker="o", markersize=3, label=label, **style)[0]
    lows = [np.nan if s.low is None else s.low for s in stats]
    highs = [np.nan if s.high is None else s.high for s in stats]
    if any(not np.isnan(v) for v in lows):
        ax.fill_between(xs, lows, highs, color=line.get_color(), alpha=0.2, linewidth=0)


def _feature_metrics(rows: list[dict[str, Any]]) -> list[str]:
    names: dict[str, None] = {}
    for row in rows:
        for key, value in (row["feature_recovery"].get("metrics") or {}).items():
            if isinstance(value, int | float):
                names.setdefault(key, None)
    return list(names)


def _fr_metric(metric: str, rows: list[dict[str, Any]]) -> Interval:
    return metric_interval(metric, sample_values(rows, metric))


def _fr_baseline(name: str, metric: str, rows: list[dict[str, Any]]) -> Interval:
    return metric_interval(metric, baseline_values(rows, name, metric))


def _li_metric(index: int, rows: list[dict[str, Any]]) -> Interval:
    name, _, get = LABEL_METRICS[index]
    return metric_interval(name, [get(r["label_inference"]) for r in rows
                                  if isinstance(r.get("label_inference"), dict)])


def _li_chance(rows: list[dict[str, Any]]) -> Interval:
    return interval(r["label_inference"].get("chance") for r in rows if isinstance(r.get("label_inference"), dict))


def _panels(rows: list[dict[str, Any]], attack: str) -> list[tuple[str, Getter, dict[str, Getter]]]:
    """(metric, getter, baselines) per panel of an attack's sweep figure."""
    panels: list[tuple[str, Getter, dict[str, Getter]]] = []
    if attack == "feature_recovery":
        names = sorted({b for r in rows for b in baselines_of(r["feature_recovery"])})
        for metric in _feature_metrics(rows):
            baselines: dict[str, Getter] = {
                b: functools.partial(_fr_baseline, b, metric) for b in names
                if any(isinstance(v, int | float) for v in baseline_values(rows, b, metric))}
            panels.append((metric, functools.partial(_fr_metric, metric), baselines))
    else:
        for index, (name, display, _) in enumerate(LABEL_METRICS[:3]):
            chance: dict[str, Getter] = {"chance": _li_chance} if name == "correct" else {}
            panels.append((display, functools.partial(_li_metric, index), chance))
    return panels


def sweep_plots(data: RunData) -> list[FigureFile]:
    """For each swept numeric key (k, N, …) and attack: each metric against it, 95 % bands, baselines dashed."""
    figures = []
    for attack in ("feature_recovery", "label_inference"):
        rows = [r for r in data.ok if isinstance(r.get(attack), dict)]
        if not rows:
            continue
        keys, groups = group_rows(rows)
        for x_key in numeric_keys(keys, groups):
            panels = _panels(rows, attack)
            if not panels:
                continue
            series = _series(keys, x_key, groups)
            fig = Figure(figsize=(3.4 * len(panels) + 0.6, 3.0), layout="constrained")
            axes = fig.subplots(1, len(panels), squeeze=False)[0]
            for ax, (metric, get, baselines) in zip(axes, panels, strict=True):
                for name, gs in series.items():
                    xs = [float(g.params[x_key]) for g in gs]
                    _band(ax, xs, [get(g.rows) for g in gs], name or metric)
                    for b_name, b_get in baselines.items():
                        ys = [b_get(g.rows).mean for g in gs]
                        ax.plot(xs, [np.nan if y is None else y for y in ys], linestyle="--", linewidth=1,
                                label=f"{b_name}{' — ' + name if name else ''}")
                ax.set_xlabel(short(x_key), fontsize=8)
                ax.set_ylabel(metric, fontsize=8)
                if bounds_for(metric) == (0.0, 1.0):
                    ax.set_ylim(-0.05, 1.05)
                if all(isinstance(g.params[x_key], int) for g in groups):
                    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
                ax.tick_params(labelsize=7)
                ax.legend(fontsize=6)
            title = "Feature recovery" if attack == "feature_recovery" else "Label inference"
            fig.suptitle(f"{title} against {short(x_key)} ({x_key})", fontsize=9)
            caption = (f"Mean with its 95 % t-interval (band) at each value of {x_key}; dashed: the baselines "
                       f"({'mean-colour images, 4×4 thumbnail' if attack == 'feature_recovery' else 'chance'}).")
            figures.append(FigureFile(slug(f"{attack}_vs_{short(x_key)}"), f"{title} against {short(x_key)}",
                                      caption, render(fig)))
    return figures


# ----- defense trade-off -----------------------------------------------------------------------------------


def _fr_metric_of_some(metric: str, rows: list[dict[str, Any]]) -> Interval:
    return _fr_metric(metric, [r for r in rows if isinstance(r.get("feature_recovery"), dict)])


def _tradeoff_metric(rows: list[dict[str, Any]]) -> list[tuple[str, Getter]]:
    out: list[tuple[str, Getter]] = []
    fr = [r for r in rows if isinstance(r.get("feature_recovery"), dict)]
    if fr:
        metric = "psnr" if "psnr" in _feature_metrics(fr) else next(iter(_feature_metrics(fr)), None)
        if metric is not None:
            out.append((f"feature recovery {metric}", functools.partial(_fr_metric_of_some, metric)))
    if any(isinstance(r.get("label_inference"), dict) for r in rows):
        out.append(("label inference accuracy", functools.partial(_li_metric, 0)))
    return out


def defense_tradeoffs(data: RunData) -> list[FigureFile]:
    """When a defense parameter is swept: attack success against the served model's test accuracy."""
    rows = [r for r in data.ok if (r.get("utility") or {}).get("served_test_accuracy") is not None]
    keys, groups = group_rows(rows)
    defense_keys = [k for k in keys if k == "defense" or k.startswith("defense.")]
    metrics = _tradeoff_metric(rows)
    if not defense_keys or not metrics:
        return []
    others = [k for k in keys if k not in defense_keys]
    series: dict[str, list[Group]] = {}
    for group in groups:
        series.setdefault(group.label(others) if others else "", []).append(group)
    fig = Figure(figsize=(3.8 * len(metrics) + 0.6, 3.3), layout="constrained")
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    for ax, (metric, get) in zip(axes, metrics, strict=True):
        for name, gs in series.items():
            xs = [metric_interval("accuracy", (r["utility"]["served_test_accuracy"] for r in g.rows)) for g in gs]
            ys = [get(g.rows) for g in gs]
            xm = [np.nan if s.mean is None else s.mean for s in xs]
            ym = [np.nan if s.mean is None else s.mean for s in ys]
            xerr = [[0 if s.low is None or s.mean is None else s.mean - s.low for s in xs],
                    [0 if s.high is None or s.mean is None else s.high - s.mean for s in xs]]
            yerr = [[0 if s.low is None or s.mean is None else s.mean - s.low for s in ys],
                    [0 if s.high is None or s.mean is None else s.high - s.mean for s in ys]]
            ax.errorbar(xm, ym, xerr=xerr, yerr=yerr, marker="o", markersize=3, capsize=2, label=name or None)
            for g, x, y in zip(gs, xm, ym, strict=True):
                ax.annotate(", ".join(f"{short(k)}={value_text(g.params[k])}" for k in defense_keys), (x, y),
                            fontsize=6, xytext=(3, 3), textcoords="offset points")
        if "feature recovery" in metric:
            for b_name in sorted({b for r in rows for b in baselines_of(r.get("feature_recovery"))}):
                level = interval(v for r in rows if isinstance(r.get("feature_recovery"), dict)
                                 for v in baseline_values([r], b_name, metric.rsplit(" ", 1)[-1])).mean
                if level is not None:
                    ax.axhline(level, linestyle="--", linewidth=1, color=next(_GREYS),
                               label=f"{b_name} ({fmt(level)})")
        else:
            chance = interval(r["label_inference"].get("chance") for r in rows
                              if isinstance(r.get("label_inference"), dict)).mean
            if chance is not None:
                ax.axhline(chance, linestyle="--", linewidth=1, color="gray", label="chance")
        ax.set_xlabel("test accuracy of the served (defended) model", fontsize=8)
        ax.set_ylabel(metric, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=6)
    fig.suptitle(f"Defense trade-off across {', '.join(defense_keys)}", fontsize=9)
    caption = ("Each point: one defense setting, mean over seeds with 95 % intervals on both axes; a good defense "
               "sits bottom-right (attack fails, utility kept). Dashed: the baselines.")
    return [FigureFile("defense_tradeoff", "Defense trade-off", caption, render(fig))]


def all_figures(data: RunData) -> list[FigureFile]:
    """Every figure the run's rows allow (text drawn literally: a ``$`` in a parameter is not TeX math)."""
    with matplotlib.rc_context({"text.parse_math": False}):
        return [*reconstruction_grids(data), *confidence_bars(data), *sweep_plots(data), *defense_tradeoffs(data)]
