"""Rich progress bars for every loop a user waits on; silenced with UNLEARNLEAK_PROGRESS=0 (tests, CI logs)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from typing import TypeVar

from rich.progress import track as _rich_track

T = TypeVar("T")


def progress_enabled() -> bool:
    """Whether progress bars are shown (on unless UNLEARNLEAK_PROGRESS is 0/false/no)."""
    return os.environ.get("UNLEARNLEAK_PROGRESS", "1").lower() not in ("0", "false", "no")


def track(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    """Iterate ``items`` under a transient rich progress bar (or silently when disabled)."""
    if not progress_enabled():
        yield from items
        return
    yield from _rich_track(items, description=description, total=total, transient=True)
