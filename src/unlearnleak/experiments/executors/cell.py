"""What runs in a worker: one cell in a fresh temporary folder, returned as (row, artifact bytes) to the driver.

The worker never writes the run folder, so a cell can run on any machine of a cluster; its row is normalised
to the exact JSON that results.jsonl will hold.
"""

from __future__ import annotations

import importlib
import json
import os
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from unlearnleak.errors import ConfigError, one_line
from unlearnleak.experiments.schema import ExperimentConfig, cell_hash
from unlearnleak.storage import to_json

CellFunction = Callable[[ExperimentConfig, Path], dict[str, Any]]
ERROR_FILE = "error.txt"
_MESSAGE_LIMIT = 400


@dataclass(frozen=True)
class CellTask:
    """Everything a worker needs for one cell (plain data: it crosses process and machine boundaries)."""

    cell: str  # the cell hash
    config: dict[str, Any]  # the cell's ExperimentConfig, model_dump(mode="json")
    cell_fn: str  # "package.module:function", called as function(config, cell_dir) -> row
    device: str  # the cell's device, so that executors can place GPU cells
    threads: int | None = None  # torch threads in the worker (None: leave as is)
    quiet: bool = True  # silence the cell's own progress bars (several workers share one terminal)


@dataclass(frozen=True)
class CellOutcome:
    """A finished cell: its row (status "ok" or "error", seconds) and the files it wrote (relative path → bytes)."""

    row: dict[str, Any]
    artifacts: dict[str, bytes]


def resolve_cell_fn(path: str) -> CellFunction:
    """The function named by ``"module:function"``; a ConfigError naming it when it cannot be imported."""
    module_name, sep, attr = path.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(f"cell function {path!r} must look like package.module:function")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"cell function {path!r}: cannot import {module_name} ({one_line(str(exc))}); "
                          "check the name and that it is installed on every worker") from exc
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise ConfigError(f"cell function {path!r}: {module_name} has no function {attr!r}")
    return fn


def error_line(exc: BaseException) -> str:
    """One line saying what failed (the traceback goes to error.txt)."""
    text = f"{type(exc).__name__}: {one_line(str(exc))}" if str(exc) else type(exc).__name__
    return text if len(text) <= _MESSAGE_LIMIT else text[:_MESSAGE_LIMIT - 3] + "..."


def execute_cell(task: CellTask) -> CellOutcome:
    """Run one cell in a fresh temporary folder; an exception becomes an "error" row with its traceback.

    KeyboardInterrupt is not caught: it means the user stopped the run, not that the cell failed.
    """
    import torch

    if task.threads is not None:
        torch.set_num_threads(task.threads)
    saved = os.environ.get("UNLEARNLEAK_PROGRESS")
    if task.quiet:
        os.environ["UNLEARNLEAK_PROGRESS"] = "0"
    started = time.perf_counter()
    try:
        with tempfile.TemporaryDirectory(prefix=f"unlearnleak-cell-{task.cell}-") as tmp:
            cell_dir = Path(tmp) / task.cell
            cell_dir.mkdir()
            try:
                row = _run(task, cell_dir)
                artifacts = _collect(cell_dir)
            except (Exception, SystemExit) as exc:
                row = {"status": "error", "error": error_line(exc)}
                artifacts = {ERROR_FILE: traceback.format_exc().encode("utf-8")}
    finally:
        if task.quiet:
            if saved is None:
                os.environ.pop("UNLEARNLEAK_PROGRESS", None)
            else:
                os.environ["UNLEARNLEAK_PROGRESS"] = saved
    row["seconds"] = round(time.perf_counter() - started, 3)
    return CellOutcome(row=row, artifacts=artifacts)


def _run(task: CellTask, cell_dir: Path) -> dict[str, Any]:
    fn = resolve_cell_fn(task.cell_fn)
    config = ExperimentConfig.model_validate(task.config)
    if cell_hash(config) != task.cell:  # e.g. a cluster node running another version of unlearnleak
        raise ConfigError(f"this worker reads cell {task.cell} as {cell_hash(config)}: its unlearnleak version "
                          "differs from the driver's; install the same version on every node")
    row = fn(config, cell_dir)
    if not isinstance(row, dict):
        raise TypeError(f"cell function {task.cell_fn} returned a {type(row).__name__}, not a row (dict)")
    row = json.loads(to_json(row))  # exactly what results.jsonl will hold
    row["status"] = "ok"
    row.pop("error", None)
    return row


def _collect(cell_dir: Path) -> dict[str, bytes]:
    """Every regular file the cell wrote, by path relative to its folder."""
    return {p.relative_to(cell_dir).as_posix(): p.read_bytes()
            for p in sorted(cell_dir.rglob("*")) if p.is_file() and not p.is_symlink()}
