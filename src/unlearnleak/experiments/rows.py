"""What a results row must hold to count as a finished cell; checked on resume (runner) and by `report`.

A row saying ``"status": "ok"`` is trusted only if it carries a result for every attack its config enables
and every file it names is a regular file inside its own cell folder (no symbolic link anywhere on the way):
a hand-edited or truncated row is rerun by the runner and shown as failed by the report, never skipped.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import Any, TypeGuard

CELLS_DIR = "cells"
ATTACKS = ("feature_recovery", "label_inference")
_CELL = re.compile(r"[A-Za-z0-9_-]{1,64}")
# The least each attack's section must hold for its cell's numbers to be reported.
_REQUIRED: dict[str, tuple[tuple[str, type | tuple[type, ...]], ...]] = {
    "feature_recovery": (("metrics", dict),),
    "label_inference": (("correct", (bool, type(None))),),
}


def valid_cell_name(cell: Any) -> TypeGuard[str]:
    """A cell key as the runner writes it (a hash: letters, digits, - and _), safe as a folder name."""
    return isinstance(cell, str) and _CELL.fullmatch(cell) is not None


def enabled_attacks(row: dict[str, Any]) -> list[str] | None:
    """The attacks the row's own config enables, or None when the row carries no experiment config."""
    config = row.get("config")
    attacks = config.get("attacks") if isinstance(config, dict) else None
    if not isinstance(attacks, dict):
        return None
    return [name for name in ATTACKS if attacks.get(name) is not None]


def result_problem(row: dict[str, Any], run_dir: Path | None = None, *, enabled: Sequence[str] | None = None
                   ) -> str | None:
    """Why an "ok" ``row`` is not a finished result (None when it is one).

    ``enabled``: the attacks the cell runs (default: those the row's own config enables). With ``run_dir`` the
    files its sections name (``artifacts``) must be regular files inside ``run_dir/cells/<cell>/``, reached
    without following a symbolic link.
    """
    if not valid_cell_name(row.get("cell")):
        return "its `cell` is not a cell hash"
    if not isinstance(row.get("params"), dict):
        return "it has no `params` object"
    enabled = list(enabled) if enabled is not None else enabled_attacks(row)
    wanted = enabled if enabled is not None else [name for name in ATTACKS if row.get(name) is not None]
    if not wanted:
        return "it holds no attack result (no feature_recovery or label_inference section)"
    for name in wanted:
        section = row.get(name)
        if not isinstance(section, dict):
            return f"it holds no {name} result (its config enables that attack)"
        for key, kind in _REQUIRED[name]:
            if key not in section or not isinstance(section[key], kind):
                return f"its {name} result lacks `{key}`"
        artifacts = section.get("artifacts", {})
        if not isinstance(artifacts, dict):
            return f"its {name}.artifacts is not an object"
        if run_dir is not None:
            for key, name_ in artifacts.items():
                if name_ is None:
                    continue
                problem = artifact_problem(run_dir, row["cell"], name_)
                if problem is not None:
                    return f"{name}.artifacts.{key}: {problem}"
    return None


def artifact_path(run_dir: Path, cell: str, name: Any) -> Path:
    """``run_dir/cells/<cell>/<name>``; ValueError when ``name`` is not a relative path inside the cell folder."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"{name!r} is not a file name")
    rel = PurePosixPath(name)
    if rel.is_absolute() or ".." in rel.parts or "\\" in name or "\x00" in name:
        raise ValueError(f"{name!r} leaves the cell folder")
    return run_dir / CELLS_DIR / cell / Path(*rel.parts)


def artifact_problem(run_dir: Path, cell: str, name: Any) -> str | None:
    """Why the artifact ``name`` of ``cell`` cannot be read safely (None when it is a plain file in place)."""
    try:
        path = artifact_path(run_dir, cell, name)
    except ValueError as exc:
        return str(exc)
    problem = inside_without_links(run_dir, path)
    if problem is not None:
        return problem
    if not path.is_file():
        return f"{path} is missing"
    return None


def inside_without_links(root: Path, path: Path) -> str | None:
    """Why ``path`` (under ``root``) would be read through a symbolic link or from outside ``root`` (None: fine).

    ``root`` itself may be reached through links (the user chose it); nothing below it may be a link.
    """
    try:
        rel = path.relative_to(root)
    except ValueError:
        return f"{path} is outside {root}"
    current = root
    for part in rel.parts:
        current = current / part
        if current.is_symlink():
            return f"{current} is a symbolic link (to {os.readlink(current)}); a run folder's files are read " \
                   "only from inside it"
    real_root = os.path.realpath(root)
    real = os.path.realpath(path)
    if os.path.commonpath([real_root, real]) != real_root:
        return f"{path} resolves outside the run folder"
    return None
