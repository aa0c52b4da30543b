"""Progress for every loop a user waits on, readable on a terminal and in a log file alike.

``UNLEARNLEAK_PROGRESS`` picks how it is shown (on stderr):

- ``auto`` (default, also ``1``): a rich bar on a terminal; off a terminal (a log file, ``nohup``, CI) one
  plain line every ``UNLEARNLEAK_PROGRESS_INTERVAL`` seconds (default 30): what, done/total, elapsed, ETA;
- ``bar`` or ``lines``: that form wherever stderr goes; ``0`` (also ``false``, ``no``, ``off``): nothing.

A step projected to take over a minute says so once, as soon as its first steps have been timed
(:data:`ESTIMATE_AFTER_S`): "pretraining θ0: about 4 min in all (…)". Nested steps share one rich display
(rich allows one live display at a time), so a cell's bar can sit under the run's bar.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any, Literal, TypeVar

T = TypeVar("T")

Mode = Literal["off", "bar", "lines"]
ESTIMATE_AFTER_S = 3.0  # time the first steps this long before projecting the total
ESTIMATE_ABOVE_S = 60.0  # say the estimate for steps projected to take longer than this
DEFAULT_INTERVAL_S = 30.0


def progress_mode() -> Mode:
    """How progress is shown now: ``off``, ``bar`` (rich, on a terminal) or ``lines`` (plain, periodic)."""
    value = os.environ.get("UNLEARNLEAK_PROGRESS", "auto").strip().lower()
    if value in ("0", "false", "no", "off"):
        return "off"
    if value in ("bar", "lines"):
        return value  # type: ignore[return-value]
    return "bar" if _stderr_is_terminal() else "lines"


def progress_enabled() -> bool:
    """Whether progress is shown at all (off with UNLEARNLEAK_PROGRESS=0/false/no/off)."""
    return progress_mode() != "off"


def line_interval() -> float:
    """Seconds between two progress lines off a terminal (UNLEARNLEAK_PROGRESS_INTERVAL, default 30)."""
    raw = os.environ.get("UNLEARNLEAK_PROGRESS_INTERVAL")
    try:
        value = float(raw) if raw is not None else DEFAULT_INTERVAL_S
    except ValueError:
        return DEFAULT_INTERVAL_S
    return value if value >= 0 else DEFAULT_INTERVAL_S


def _stderr_is_terminal() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed stream
        return False


def duration(seconds: float) -> str:
    """``75`` → ``1:15``; ``3725`` → ``1:02:05`` (clock style, for progress lines)."""
    s = max(0, round(seconds))
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def about(seconds: float) -> str:
    """A rounded duration in words for estimates: ``about 40 s``, ``about 4 min``, ``about 2.5 h``."""
    if seconds < 90:
        return f"about {max(1, round(seconds))} s"
    if seconds < 90 * 60:
        return f"about {round(seconds / 60)} min"
    return f"about {seconds / 3600:.1f} h"


def say(text: str) -> None:
    """Print one line on stderr, above any live bar (progress messages, estimates)."""
    if _live.progress is not None:
        _live.progress.console.print(text, markup=False, highlight=False, soft_wrap=True)
    else:
        print(text, file=sys.stderr, flush=True)


class _Live:
    """The one rich display shared by nested bars (created by the first, stopped by the last)."""

    def __init__(self) -> None:
        self.progress: Any = None
        self.users = 0

    def acquire(self) -> Any:
        if self.progress is None:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                     TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                                     console=Console(stderr=True), transient=True)
            self.progress.start()
        self.users += 1
        return self.progress

    def release(self) -> None:
        self.users -= 1
        if self.users <= 0 and self.progress is not None:
            self.progress.stop()
            self.progress, self.users = None, 0


_live = _Live()


class Task:
    """One step a user waits on: ``advance()`` per unit of work; shown as a bar, as lines, or not at all."""

    def __init__(self, description: str, total: int | None, *, mode: Mode | None = None,
                 keep: bool = False) -> None:
        self.description, self.total, self.done = description, total, 0
        self.mode: Mode = progress_mode() if mode is None else mode
        self.started = self._last = time.monotonic()
        self._first: float | None = None  # when the first unit finished: rates are timed from there (the
        # time before it — loading, setting up — says nothing about the pace of the rest)
        self.estimated = False
        self.printed = False
        self._first_done = 0
        self.keep = keep  # say a closing line in every mode (the run's cells)
        self._interval = line_interval()
        self._bar: Any = None
        self._id: Any = None
        self._stopped = threading.Event()
        self._lock = threading.Lock()
        if self.mode == "bar":
            self._bar = _live.acquire()
            self._id = self._bar.add_task(description, total=total)
        elif self.mode == "lines" and self._interval > 0:  # a line each interval even while no unit finishes
            threading.Thread(target=self._heartbeat, name="unlearnleak-progress", daemon=True).start()

    def __enter__(self) -> Task:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def advance(self, n: int = 1) -> None:
        """Count ``n`` more units done."""
        self.done += n
        if self._bar is not None:
            self._bar.advance(self._id, n)
        if self.mode == "off":
            return
        now = time.monotonic()
        if self._first is None:
            self._first, self._first_done = now, self.done
        self._maybe_estimate(now)
        if self.mode == "lines" and now - self._last >= self._interval:
            with self._lock:
                self._line(now)

    def _heartbeat(self) -> None:
        """Off a terminal: say where the step stands when no line came for a whole interval (slow units)."""
        while not self._stopped.wait(self._interval):
            now = time.monotonic()
            with self._lock:
                if self.mode == "lines" and now - self._last >= self._interval:
                    self._line(now)

    def describe(self, description: str) -> None:
        """Change what the step says it is doing (e.g. "cells (1 failed)")."""
        self.description = description
        if self._bar is not None:
            self._bar.update(self._id, description=description)

    def _remaining(self, now: float) -> float | None:
        """Seconds left at the pace since the first unit finished (None until a second one has)."""
        if self.total is None or self._first is None or self.done <= self._first_done:
            return None
        pace = (now - self._first) / (self.done - self._first_done)
        return pace * (self.total - self.done)

    def _maybe_estimate(self, now: float) -> None:
        if self.estimated or self._first is None or now - self._first < ESTIMATE_AFTER_S:
            return
        remaining = self._remaining(now)
        if remaining is None:
            return
        self.estimated = True
        elapsed = now - self.started
        if elapsed + remaining > ESTIMATE_ABOVE_S:
            say(f"{self.description}: {about(elapsed + remaining)} in all (estimated from the first {self.done} of "
                f"{self.total}, {duration(elapsed)} elapsed)")

    def _line(self, now: float) -> None:
        self._last, self.printed = now, True
        elapsed = now - self.started
        if self.total:
            eta = self._remaining(now)
            share = f" ({self.done / self.total:.0%})"
            say(f"{self.description}: {self.done}/{self.total}{share}, elapsed {duration(elapsed)}, ETA "
                f"{'?' if eta is None else duration(eta)}")
        else:
            say(f"{self.description}: {self.done} done, elapsed {duration(elapsed)}")

    def close(self) -> None:
        """End the step: remove its bar; in line mode, a closing line if it printed any or ran long."""
        self._stopped.set()
        if self.mode == "off":
            return
        elapsed = time.monotonic() - self.started
        if self._bar is not None:
            self._bar.remove_task(self._id)
            self._bar = None
            _live.release()
        if self.keep or (self.mode == "lines" and (self.printed or elapsed >= self._interval)):
            count = f"{self.done}/{self.total}" if self.total else f"{self.done}"
            say(f"{self.description}: {count} done in {duration(elapsed)}")
        self.mode = "off"


@contextmanager
def task(description: str, total: int | None, *, keep: bool = False) -> Iterator[Task]:
    """A :class:`Task` for the block, closed however the block ends."""
    with Task(description, total, keep=keep) as step:
        yield step


def track(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    """Iterate ``items``, advancing one progress step per item."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with task(description, total) as step:
        for item in items:
            yield item
            step.advance()
