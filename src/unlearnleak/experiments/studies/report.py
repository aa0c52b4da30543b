"""Tables (Markdown) and trade-off figures (PNG) for the two studies, written into the run folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from unlearnleak.storage import atomic_write


def _fmt(stat: dict[str, Any], digits: int = 2) -> str:
    if stat.get("mean") is None:
        return "n/a"
    return f"{stat['mean']:.{digits}f} ± {stat['std']:.{digits}f}"


def methods_table(summary: dict[str, dict[str, Any]], baselines: dict[str, Any]) -> str:
    """One Markdown table: per method, feature-recovery and label-inference success, forgetting, cost."""
    head = ("| method | PSNR dB | SSIM | LPIPS | label from ∇* | label inference (argmin) | detected & right | "
            "acc D_u θ → θ_u | test acc θ → θ_u | seconds | sample gradients |")
    lines = [head, "|" + "---|" * 11]
    for method, s in summary.items():
        lines.append(
            f"| {method} | {_fmt(s['psnr'])} | {_fmt(s['ssim'], 3)} | {_fmt(s['lpips'], 3)} | "
            f"{_fmt(s['label_from_gradient'])} | {_fmt(s['label_accuracy'])} | {_fmt(s['label_detected'])} | "
            f"{_fmt(s['forget_acc_before'])} → {_fmt(s['forget_acc_after'])} | "
            f"{_fmt(s['test_acc_before'], 3)} → {_fmt(s['test_acc_after'], 3)} | {_fmt(s['seconds'], 1)} | "
            f"{_fmt(s['sample_gradients'], 0)} |")
    lines.append("")
    lines.append(baseline_line(baselines))
    return "\n".join(lines) + "\n"


def baseline_line(baselines: dict[str, Any]) -> str:
    """The baselines in one sentence."""
    img = baselines["image"]

    def one(name: str) -> str:
        b = img[name]
        lp = "n/a" if b["lpips"] is None else f"{b['lpips']:.3f}"
        return f"PSNR {b['psnr']:.2f} dB, SSIM {b['ssim']:.3f}, LPIPS {lp}"

    return (f"Baselines: dataset mean-colour image {one('dataset_mean_colour')}; 4×4 thumbnail of the true image "
            f"{one('thumbnail_4x4')}; label chance {baselines['label_chance']:.2f}; "
            f"θ0 test accuracy {baselines['base_test_accuracy']:.3f}.")


def defenses_table(points: list[dict[str, Any]], baselines: dict[str, Any]) -> str:
    """One Markdown table: per (defense, strength), utility beside attack success."""
    lines = ["| defense | strength | test acc (released θ_u) | PSNR dB | SSIM | LPIPS | label inference (argmin) | "
             "detected & right |", "|" + "---|" * 8]
    for p in points:
        lines.append(f"| {p['defense']} | {p['strength']:g} | {_fmt(p['test_accuracy_label_models'], 3)} | "
                     f"{_fmt(p['psnr'])} | {_fmt(p['ssim'], 3)} | {_fmt(p['lpips'], 3)} | "
                     f"{_fmt(p['label_accuracy'])} | {_fmt(p['label_detected'])} |")
    lines.append("")
    lines.append(baseline_line(baselines))
    return "\n".join(lines) + "\n"


def tradeoff_figure(points: list[dict[str, Any]], baselines: dict[str, Any], path: str | Path) -> Path:
    """Utility against PSNR, LPIPS and label-inference accuracy, one curve per defense (strength annotated)."""
    fig = Figure(figsize=(15, 4.2))
    panels = (("psnr", "feature recovery PSNR (dB)", "dataset_mean_colour"),
              ("lpips", "feature recovery LPIPS", "dataset_mean_colour"),
              ("label_accuracy", "label-inference accuracy", None))
    for i, (key, label, base) in enumerate(panels):
        ax = fig.add_subplot(1, 3, i + 1)
        for name in dict.fromkeys(p["defense"] for p in points):
            curve = [p for p in points if p["defense"] == name and p[key]["mean"] is not None]
            xs = [p["test_accuracy_label_models"]["mean"] for p in curve]
            ys = [p[key]["mean"] for p in curve]
            ax.plot(xs, ys, marker="o", label=name)
            for p, x, y in zip(curve, xs, ys, strict=True):
                ax.annotate(f"{p['strength']:g}", (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
        if base is not None and baselines["image"][base][key] is not None:
            ax.axhline(baselines["image"][base][key], color="grey", ls="--", lw=1, label="mean-colour baseline")
        if key == "label_accuracy":
            ax.axhline(baselines["label_chance"], color="grey", ls="--", lw=1, label="chance")
        ax.set_xlabel("utility: test accuracy of the released θ_u")
        ax.set_ylabel(label)
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.suptitle("Defense trade-off: utility vs attack success (strength annotated)")
    path = Path(path)
    FigureCanvasAgg(fig)
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight"))


def methods_figure(summary: dict[str, dict[str, Any]], baselines: dict[str, Any], path: str | Path) -> Path:
    """Bars per method: PSNR of feature recovery and label-inference accuracy, with baselines."""
    fig = Figure(figsize=(12, 4))
    names = list(summary)
    for i, (key, label) in enumerate((("psnr", "feature recovery PSNR (dB)"),
                                      ("label_accuracy", "label-inference accuracy"))):
        ax = fig.add_subplot(1, 2, i + 1)
        means = [summary[n][key]["mean"] or 0.0 for n in names]
        errs = [summary[n][key]["std"] or 0.0 for n in names]
        ax.bar(range(len(names)), means, yerr=errs, capsize=3)
        ax.set_xticks(range(len(names)), names, rotation=40, ha="right", fontsize=8)
        ax.set_ylabel(label)
        ref = baselines["image"]["dataset_mean_colour"]["psnr"] if key == "psnr" else baselines["label_chance"]
        ax.axhline(ref, color="grey", ls="--", lw=1, label="mean-colour" if key == "psnr" else "chance")
        ax.legend(fontsize=7)
    FigureCanvasAgg(fig)
    path = Path(path)
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight"))
