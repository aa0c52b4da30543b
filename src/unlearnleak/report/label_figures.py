"""Label-inference figures: the paper's Fig. 4 (per-class confidence change) and the probes as an image grid."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from unlearnleak.attacks.label_inference.probeset import ProbeSet
from unlearnleak.attacks.label_inference.result import LabelGuess
from unlearnleak.storage import atomic_write


def _names(k: int, class_names: Sequence[str] | None) -> list[str]:
    return [str(class_names[c]) if class_names is not None and c < len(class_names) else str(c) for c in range(k)]


def _save(fig: Figure, path: str | Path) -> Path:
    """Render with the Agg canvas (no pyplot, no global backend) and write atomically."""
    path = Path(path)
    FigureCanvasAgg(fig)
    atomic_write(path, lambda tmp: fig.savefig(tmp, format=path.suffix.lstrip(".") or "png", dpi=120,
                                               bbox_inches="tight"))
    return path


def plot_confidence_changes(guess: LabelGuess, path: str | Path, *, class_names: Sequence[str] | None = None,
                            deleted: Sequence[int] | None = None, title: str | None = None) -> Path:
    """Fig. 4: bars of the mean change of p_c on class c's probes (after − before), one per class.

    The guessed class(es) are drawn in red, the truly deleted ones (if given) hatched; the dashed line is
    the detection level ``center − z·scale`` below which a change counts as detected (z: the calibrated
    threshold at the guess's false-detection level).
    """
    k = len(guess.changes)
    names = _names(k, class_names)
    values = [0.0 if math.isnan(v) else v for v in guess.changes]
    colors = ["tab:red" if c in guess.predicted else "tab:blue" for c in range(k)]
    fig = Figure(figsize=(max(4.0, 0.6 * k + 1.5), 3.2))
    ax = fig.subplots()
    bars = ax.bar(range(k), values, color=colors)
    for c in deleted or ():
        bars[c].set_hatch("//")
        bars[c].set_edgecolor("black")
    ax.axhline(0.0, color="black", linewidth=0.8)
    level = guess.threshold  # None without a verdict or a finite threshold: no line
    alpha = "" if guess.level is None else f" at {guess.level:.0%} false detections"
    if level is not None:
        ax.axhline(level, color="gray", linestyle="--", linewidth=0.8,
                   label=f"detection level{alpha} ({level:.2g})")
    ax.set_xticks(range(k), names, rotation=45 if k > 6 else 0, ha="right" if k > 6 else "center")
    unit = "log-odds" if guess.statistic == "log_odds" else "probability"
    ax.set_ylabel(f"mean Δ confidence, {unit}\n(after − before)", fontsize=8)
    verdict = (f"guess: {', '.join(names[c] for c in guess.predicted)}" if guess.detected else
               "no detectable change" if guess.has_verdict else f"no verdict: too few probes for "
               f"{', '.join(names[c] for c in guess.lacking)}")
    truth = f"; deleted: {', '.join(names[c] for c in deleted)}" if deleted else ""
    ax.set_title(title or f"{guess.generator} probes — {verdict}{truth}", fontsize=9)
    if level is not None:
        ax.legend(fontsize=7, loc="lower right")
    ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    return _save(fig, path)


def plot_probe_grid(probes: ProbeSet, path: str | Path, *, class_names: Sequence[str] | None = None,
                    max_per_class: int = 10) -> Path:
    """The probes as an image grid: one row per target class, θ's confidence under each probe."""
    if len(probes.input_shape) != 3:
        raise ValueError(f"probe grids need image probes (C, H, W), got {probes.input_shape}")
    k = probes.num_classes
    names = _names(k, class_names)
    rows = [c for c in range(k) if bool((probes.target == c).any())]
    cols = max(1, min(max_per_class, max((int((probes.target == c).sum()) for c in rows), default=1)))
    fig = Figure(figsize=(1.1 * cols + 0.8, 1.2 * len(rows) + 0.3), layout="constrained")
    axes = fig.subplots(len(rows), cols, squeeze=False)
    conf = probes.confidence
    for r, c in enumerate(rows):
        idx = torch.nonzero(probes.target == c).flatten()[:cols]
        for j in range(cols):
            ax = axes[r][j]
            ax.set_xticks([])
            ax.set_yticks([])
            if j < idx.numel():
                i = int(idx[j])
                img = probes.x[i].permute(1, 2, 0).clamp(0, 1).numpy()
                ax.imshow(img.squeeze(-1) if img.shape[-1] == 1 else img, cmap="gray" if img.shape[-1] == 1 else None)
                mark = "" if bool(probes.accepted[i]) else "*"
                ax.set_title(f"{float(conf[i]):.4f}{mark}", fontsize=6)
            else:
                ax.axis("off")
            if j == 0:
                ax.set_ylabel(names[c], fontsize=7)
    fig.suptitle(f"{probes.generator} probes (θ's p_target; * = below threshold)", fontsize=8)
    return _save(fig, path)
