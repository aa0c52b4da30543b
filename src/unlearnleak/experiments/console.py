"""What a user watches while cells run: an iteration bar for the inversion, and the headline table of rows.

The inversion's loop lives in the attack (attacks/feature_recovery) and takes no callback; its optimiser is a
``torch.optim`` optimiser, so :func:`iteration_progress` follows it through torch's step hook, registered only
for the duration of one attack (and not at all when progress is off: UNLEARNLEAK_PROGRESS=0).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from rich.progress import Progress
from rich.table import Table

from unlearnleak.progress import progress_enabled


@contextmanager
def iteration_progress(description: str, total: int | None) -> Iterator[Progress | None]:
    """A transient rich bar (with ETA) advanced by every ``torch.optim`` step taken inside the block; yields
    the rich ``Progress`` (None when progress is off)."""
    if not progress_enabled():
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
    from torch.optim.optimizer import register_optimizer_step_post_hook

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  transient=True) as bar:
        task = bar.add_task(description, total=total)
        handle = register_optimizer_step_post_hook(lambda *_: bar.advance(task))
        try:
            yield bar
        finally:
            handle.remove()


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
    return f"{text}\nlabel from ∇* {_fmt(m.get('label_accuracy'), '.2f')}{learned_prior_line(fr)}"


def learned_prior_line(fr: dict[str, Any]) -> str:
    """"learned prior: off — why" or the decoded image alone's PSNR/SSIM/LPIPS (images; "" without a record)."""
    record, alone = fr.get("learned_prior"), fr.get("decoder_alone")
    if not record:
        return ""
    if record.get("status") != "on":
        return f"\nlearned prior: off — {record.get('reason')}"
    return "\nlearned prior: on" + (f"; decoder alone {_triple(alone, ('psnr', 'ssim', 'lpips'))}" if alone else "")


def _label_cell(li: dict[str, Any] | None) -> str:
    if not li:
        return "–"
    verdict = "detected" if li.get("detected") else "not detected"
    best, chance = _fmt(li.get("best")), _fmt(li.get("chance"), ".2f")
    mark = "✓" if li.get("correct") else "✗"
    if li.get("deleted") is None:
        return f"best {best} {mark if 'correct' in li else ''}, {verdict}; chance {chance}"
    deleted = ",".join(map(str, li["deleted"]))
    return f"best {best} {mark} (deleted {deleted})\n{verdict}; chance {chance}"


def _setting(row: dict[str, Any]) -> str:
    text = f"{row.get('dataset')} {row.get('model')}\n{row.get('method')} k={row.get('k')} N={row.get('n_train')}"
    defense = row.get("defense")
    return f"{text}\n+ {defense['name']} {defense.get('params') or ''}".rstrip() if defense else text


def headline_table(rows: Sequence[dict[str, Any]], title: str = "Headline metrics") -> Table:
    """One line per row: setting, PSNR/SSIM/LPIPS beside the mean-colour baseline, the label guesses, the test
    accuracy of θ and of the served θ_u (after the defense), and the cell's time."""
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
        utility = row.get("utility") or {}
        acc = ("–" if utility.get("original_test_accuracy") is None else
               f"{utility['original_test_accuracy']:.3f} → {utility['served_test_accuracy']:.3f}")
        table.add_row(*first, _setting(row), _recovery_cell(row.get("feature_recovery")),
                      _label_cell(row.get("label_inference")), acc, *last)
    return table
