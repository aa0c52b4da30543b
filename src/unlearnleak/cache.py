"""The user cache folder (pretrained base models, downloaded weights); never inside the package or ../shared."""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "UNLEARNLEAK_CACHE_DIR"


def cache_dir(override: str | Path | None = None) -> Path:
    """``override``, else $UNLEARNLEAK_CACHE_DIR, else $XDG_CACHE_HOME/unlearnleak, else ~/.cache/unlearnleak."""
    if override is not None:
        return Path(override).expanduser()
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "unlearnleak"
