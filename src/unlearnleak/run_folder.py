"""The run folder's layout, its one results.jsonl reader and writer, and what a row must hold to count as finished.

The runner (resume), the one-cell commands (`recover`, `infer-label`) and `report` all write and read rows here,
through the typed rows of :mod:`unlearnleak.rows`, so a folder one accepts the others read the same way.

A row saying ``"status": "ok"`` is trusted only if it carries a result for every attack its config enables
and every file it names is a regular file inside its own cell folder (no symbolic link anywhere on the way):
a hand-edited or truncated row is rerun by the runner and shown as failed by the report, never skipped.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import Any, TypeGuard

from unlearnleak.errors import CheckpointError
from unlearnleak.rows import CellRow, FeatureRecoveryResult, RowError, parse_row
from unlearnleak.storage import to_json, write_json_atomic, write_text_atomic

EXPERIMENT_FILE = "experiment.yaml"  # the expanded config, to rerun or resume with
RUN_FILE = "run.json"  # provenance: versions, git revision, invocations, times, cells
RESULTS_FILE = "results.jsonl"  # one row per finished cell, one write per line
CELLS_DIR = "cells"  # cells/<hash>/: each cell's files
LOCK_FILE = ".unlearnleak.lock"  # held (flock) by the one run writing the folder
ATTACKS = ("feature_recovery", "label_inference")
_CELL = re.compile(r"[A-Za-z0-9_-]{1,64}")


def valid_cell_name(cell: Any) -> TypeGuard[str]:
    """A cell key as the runner writes it (a hash: letters, digits, - and _), safe as a folder name."""
    return isinstance(cell, str) and _CELL.fullmatch(cell) is not None


def enabled_attacks(row: CellRow) -> list[str] | None:
    """The attacks the row's own config enables, or None when the row carries no experiment config."""
    attacks = (row.config or {}).get("attacks")
    if not isinstance(attacks, dict):
        return None
    return [name for name in ATTACKS if attacks.get(name) is not None]


def result_problem(row: CellRow, run_dir: Path | None = None, *, enabled: Sequence[str] | None = None
                   ) -> str | None:
    """Why an "ok" ``row`` is not a finished result (None when it is one).

    ``enabled``: the attacks the cell runs (default: those the row's own config enables). With ``run_dir`` the
    files its sections name (``artifacts``) must be regular files inside ``run_dir/cells/<cell>/``, reached
    without following a symbolic link.
    """
    if row.params is None:
        return "it has no `params` object"
    enabled = list(enabled) if enabled is not None else enabled_attacks(row)
    wanted = enabled if enabled is not None else [name for name in ATTACKS if row.section(name) is not None]
    if not wanted:
        return "it holds no attack result (no feature_recovery or label_inference section)"
    for name in wanted:
        section = row.section(name)
        if section is None:
            return f"it holds no {name} result (its config enables that attack)"
        if isinstance(section, FeatureRecoveryResult):
            if section.metrics is None and section.scored:  # unscored (no ground truth) says so: `scored: false`
                return f"its {name} result lacks `metrics`"
        elif "correct" not in section.model_fields_set:
            return f"its {name} result lacks `correct`"
        if run_dir is not None:
            for key, name_ in section.artifacts.items():
                if name_ is None:
                    continue
                problem = artifact_problem(run_dir, row.cell, name_)
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


_FIX = ("remove the line (its cell runs again: re-run `unlearnleak sweep` on the same folder, which also repairs a "
        "torn last line; for a one-cell folder of `recover` or `infer-label`, rerun that command with --overwrite)")


def read_rows(path: Path) -> tuple[list[CellRow], bytes]:
    """(every row of results.jsonl in file order, the torn tail): a last line without its newline is a write cut
    short by a crash, returned apart for the caller to drop (runner) or refuse (report). Any other line that is
    not a row — not JSON, not an object, no valid ``cell``, a ``status`` other than ok/error, a key of the wrong
    type (:class:`unlearnleak.rows.CellRow`) — raises CheckpointError naming the line."""
    if not path.is_file():
        return [], b""
    data = path.read_bytes()
    cut = data.rfind(b"\n") + 1
    data, torn = data[:cut], data[cut:]
    rows = []
    for number, line in enumerate(data.split(b"\n")[:-1], start=1):
        if line.strip():
            rows.append(_row(line, f"{path} line {number}"))
    return rows, torn


def _row(line: bytes, where: str) -> CellRow:
    try:
        row = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{where} is not valid JSON ({getattr(exc, 'msg', exc)}); {_FIX}") from None
    if not isinstance(row, dict):
        raise CheckpointError(f"{where} is a JSON {type(row).__name__}, not an object (a row); {_FIX}")
    if not valid_cell_name(row.get("cell")):
        raise CheckpointError(f"{where} has no valid \"cell\" (the cell's hash, letters and digits); {_FIX}")
    if row.get("status") not in ("ok", "error"):
        raise CheckpointError(f"{where} has \"status\" {row.get('status')!r}; expected \"ok\" or \"error\"; {_FIX}")
    try:
        return parse_row(row)
    except RowError as exc:
        raise CheckpointError(f"{where}: {exc}; the row was not written by unlearnleak; {_FIX}") from None


def row_line(row: CellRow) -> str:
    """The row as its one line of results.jsonl (strict JSON, newline included)."""
    return to_json(row.to_dict()) + "\n"


def append_row(path: Path, row: CellRow) -> None:
    """Append one row as one line with a single write, then fsync (a crash can only tear the last line)."""
    line = row_line(row).encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        written = os.write(fd, line)
        if written != len(line):
            raise OSError(f"short write to {path} ({written} of {len(line)} bytes); the disk may be full")
        os.fsync(fd)
    finally:
        os.close(fd)


def write_rows(path: Path, rows: Sequence[CellRow]) -> Path:
    """Replace results.jsonl with ``rows`` (atomically: the old file or the new one, never half of it)."""
    return write_text_atomic(path, "".join(row_line(row) for row in rows))


def check_row(data: dict[str, Any]) -> CellRow:
    """A row about to be written, validated like a read one (a programming error raises, naming the key)."""
    try:
        return parse_row(json.loads(to_json(data)))
    except RowError as exc:
        raise ValueError(f"row of cell {data.get('cell')!r} {exc}") from None


def write_one_cell(folder: Path, row: CellRow, run: dict[str, Any]) -> None:
    """Make ``folder`` a run folder of one cell: results.jsonl (``row``) and run.json (``run`` + the cell), around
    the files the command already wrote into ``folder/cells/<cell>/`` (each file the row names must be there)."""
    for attack in ATTACKS:
        section = row.section(attack)
        for key, name in (section.artifacts.items() if section is not None else ()):
            problem = None if name is None else artifact_problem(folder, row.cell, name)
            if problem is not None:
                raise ValueError(f"{attack}.artifacts.{key}: {problem}")
    write_rows(folder / RESULTS_FILE, [row])
    write_json_atomic(folder / RUN_FILE, {**run, "cells": {row.cell: row.params}})
