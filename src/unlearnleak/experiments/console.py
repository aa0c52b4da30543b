"""What a user watches while cells run: an iteration bar for the inversion, and the headline table of rows.

The inversion's loop lives in the attack (attacks/feature_recovery) and takes no callback; its optimiser is a
``torch.optim`` optimiser, so :func:`iteration_progress` follows it through torch's step hook, registered only
for the duration of one attack (and not at all when progress is off: UNLEARNLEAK_PROGRESS=0).

Output that works anywhere: :func:`output_console` prints tables at their full width when stdout is not a
terminal (nothing wrapped at 80 columns in a log file), and :func:`heading` prints a plain heading there.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.table import Table

from unlearnleak.progress import Task, progress_mode
from unlearnleak.verdicts import feature_recovery_verdict, gradient_label_phrase, label_verdict

WIDE = 10_000  # columns off a terminal: a table keeps its natural width, however long its paths


def output_console() -> Console:
    """A console for results on stdout: the terminal's width on a terminal, unlimited width elsewhere."""
    console = Console()
    return console if console.is_terminal else Console(width=WIDE, soft_wrap=True)


def heading(console: Console, title: str) -> None:
    """A section heading: a rule across a terminal, a plain ``== title ==`` line in a file."""
    if console.is_terminal:
        console.rule(title)
    else:
        console.print(f"== {title} ==", markup=False, highlight=False)


@contextmanager
def iteration_progress(description: str, total: int | None) -> Iterator[Task | None]:
    """A progress step (unlearnleak.progress) advanced by every ``torch.optim`` step taken inside the block;
    yields the :class:`~unlearnleak.progress.Task` (None when progress is off)."""
    if progress_mode() == "off":
        yield None
        return
    from torch.optim.optimizer import register_optimizer_step_post_hook

    step = Task(description, total)
    handle = register_optimizer_step_post_hook(lambda *_: step.advance())
    try:
        yield step
    finally:
        handle.remove()
        step.close()


def _fmt(value: Any, spec: str = ".3f") -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return format(value, spec) if isinstance(value, float) else str(value)


def _triple(metrics: dict[str, Any], keys: tuple[str, str, str]) -> str:
    return " / ".join(_fmt(metrics.get(k), spec) for k, spec in zip(keys, (".2f", ".3f", ".3f"), strict=True))


def _recovery_cell(fr: dict[str, Any] | None) -> str:
    if not fr:
        return "–"
    m, base = fr.get("metrics"), fr.get("baselines") or {}
    if not m:
        return "not scored (no ground truth)"
    if fr.get("image", "psnr" in m):  # rows of a user's --cell-fn may carry only some keys
        text = _triple(m, ("psnr", "ssim", "lpips"))
        flat = base.get("dataset_mean_colour")
        text += f"\ndataset mean colour {_triple(flat, ('psnr', 'ssim', 'lpips'))}" if flat else ""
    else:
        text = f"MSE {_fmt(m.get('mse'), '.3g')}"
        mean_row = base.get("feature_mean")
        text += f"\nfeature mean {_fmt(mean_row.get('mse'), '.3g')}" if mean_row else ""
    verdict = feature_recovery_verdict(fr)
    if verdict is not None:
        text += f"\n{verdict.sentence.split(':')[0]}"
    k = len(fr.get("samples") or []) or None
    phrase = gradient_label_phrase(m.get("label_accuracy"), k)
    return f"{text}\n{phrase}" if phrase else text


def _label_cell(li: dict[str, Any] | None) -> str:
    if not li:
        return "–"
    return label_verdict(li).sentence.replace("; ", "\n")


def _setting(row: dict[str, Any]) -> str:
    text = f"{row.get('dataset')} {row.get('model')}\n{row.get('method')} k={row.get('k')} N={row.get('n_train')}"
    defense = row.get("defense")
    return f"{text}\n+ {defense['name']} {defense.get('params') or ''}".rstrip() if defense else text


def _accuracy(utility: dict[str, Any]) -> str:
    """θ's → the served θ_u's test accuracy ("n/a" where there is no test split, never nan)."""
    before, after = utility.get("original_test_accuracy"), utility.get("served_test_accuracy")
    if before is None and after is None:
        return "–"

    def one(value: Any) -> str:
        return "n/a" if value is None or value != value else f"{value:.3f}"  # NaN: no test split

    return f"{one(before)} → {one(after)}"


def headline_table(rows: Sequence[dict[str, Any]], title: str = "Headline metrics") -> Table:
    """One line per row: setting, PSNR/SSIM/LPIPS beside the mean-colour baseline and the verdict in words, the
    label guess in words, the test accuracy of θ and of the served θ_u (after the defense), and the time."""
    table = Table(title=title, show_lines=True)
    cells = any(row.get("cell") for row in rows)
    if cells:
        table.add_column("cell")
    table.add_column("setting")
    table.add_column("PSNR / SSIM / LPIPS", justify="right")
    table.add_column("label inference")
    table.add_column("test acc θ → served", justify="right")
    timed = any(row.get("seconds") is not None for row in rows)
    if timed:
        table.add_column("s", justify="right")
    for row in rows:
        first = [str(row.get("cell") or "–")[:8]] if cells else []
        last = [_fmt(row.get("seconds"), ".0f")] if timed else []
        if row.get("status", "ok") != "ok":
            table.add_row(*first, "error", str(row.get("error", ""))[:120], "", "", *last)
            continue
        table.add_row(*first, _setting(row), _recovery_cell(row.get("feature_recovery")),
                      _label_cell(row.get("label_inference")), _accuracy(row.get("utility") or {}), *last)
    return table
