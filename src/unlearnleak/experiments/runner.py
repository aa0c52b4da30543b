"""Run an experiment's cells into a resumable run folder; only this driver process writes the folder.

RUN_DIR/experiment.yaml  the effective config;  run.json  provenance (command, versions, git revision, executor,
times, cells);  results.jsonl  one row per finished cell (one write per line);  cells/<hash>/  the cell's files
(staged in cells/.<hash>.partial, then renamed);  .unlearnleak.lock  held by the one run writing the folder.
A re-run skips cells whose "ok" row holds their result and retries the rest; no symbolic link is followed.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

import yaml
from rich.console import Console

from unlearnleak.errors import CheckpointError, ConfigError
from unlearnleak.experiments.console import headline_table, output_console
from unlearnleak.experiments.executors import CellOutcome, CellTask, Executor, make_executor, resolve_cell_fn
from unlearnleak.experiments.executors.cell import ERROR_FILE
from unlearnleak.experiments.preflight import check_cells
from unlearnleak.experiments.schema import Cell, ExperimentConfig, expand_cells
from unlearnleak.progress import Task, progress_enabled, say, task
from unlearnleak.rows import CellRow
from unlearnleak.run_folder import (
    ATTACKS,
    CELLS_DIR,
    EXPERIMENT_FILE,
    LOCK_FILE,
    RESULTS_FILE,
    RUN_FILE,
    append_row,
    check_row,
    read_rows,
    result_problem,
    write_rows,
)
from unlearnleak.storage import (
    check_creatable,
    environment_record,
    refuse_link,
    remove_tree,
    signals_held,
    stop_signals_interrupt,
    write_json_atomic,
    write_text_atomic,
)

DEFAULT_CELL_FN = "unlearnleak.experiments.pipeline:run_cell"
OVERWRITTEN_PREFIX = ".overwritten-"  # --overwrite moves the old contents here, then deletes them


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C during a run: every finished cell is kept; ``message`` says how many and how to resume."""

    def __init__(self, message: str, finished: int, total: int) -> None:
        super().__init__(message)
        self.message = message
        self.finished = finished
        self.total = total


def run_experiment(config: ExperimentConfig, run_dir: str | Path, *, executor: str = "local",
                   workers: int | None = None, address: str | None = None, overwrite: bool = False,
                   cell_fn: str = DEFAULT_CELL_FN, console: Console | None = None, threads: int | None = None,
                   argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Run every cell of ``config`` that has no "ok" row in ``run_dir`` yet; return all rows in cell order.

    Everything that would break every cell (unknown executor, missing Ray, a device that is not there, a
    different experiment already in ``run_dir``) fails before anything is written. Ctrl-C raises
    :class:`RunInterrupted` after keeping every finished cell.
    """
    run_dir = Path(run_dir)
    console = console or output_console()
    cells = expand_cells(config)
    _check_distinct(cells)
    engine = make_executor(executor, workers=workers, address=address, threads=threads)
    resolve_cell_fn(cell_fn)
    try:
        _check_run_dir(run_dir, cells, overwrite)
        tasks = [CellTask(cell=c.hash, config=c.config.model_dump(mode="json"), cell_fn=cell_fn,
                          device=c.config.device, threads=threads) for c in cells]
        engine.preflight(tasks)
        if cell_fn == DEFAULT_CELL_FN:  # data, model fit, forget sets, cache folder: once, here, for every cell
            finished = set() if overwrite else set(_finished_rows(run_dir, cells)[0])
            check_cells([c for c in cells if c.hash not in finished])
        # ---- nothing was written before this line ----
        with _locked_run_dir(run_dir, cells, overwrite) as previous:
            _clean_staging(run_dir)
            done, notes = _load_results(run_dir, cells)
            for note in notes:
                _say(console, note)
            write_text_atomic(run_dir / EXPERIMENT_FILE, experiment_yaml(config))
            todo = [t for t in tasks if t.cell not in done]
            if done:
                _say(console, f"resuming {run_dir}: {len(done)} of {len(cells)} cells already finished, "
                              f"{len(todo)} to run")
            record = _start_record(previous, config, cells, engine, todo, cell_fn, address, argv)
            write_json_atomic(run_dir / RUN_FILE, record)
            rows = dict(done)
            params = {c.hash: c.params for c in cells}
            status = "failed"
            try:
                with stop_signals_interrupt():
                    _run_cells(engine, todo, run_dir, params, rows, console)
                status = "finished"
            except KeyboardInterrupt:
                status = "interrupted"
                finished_count = sum(1 for r in rows.values() if r.status == "ok")
                running = len(todo) - sum(1 for t in todo if t.cell in rows)
                raise RunInterrupted(
                    f"interrupted: {finished_count} of {len(cells)} cells are finished and kept in {run_dir} "
                    f"({running} unfinished will run on resume); run the same command again to resume",
                    finished_count, len(cells)) from None
            finally:
                with signals_held():
                    _finish_record(run_dir, record, status, todo, rows)
    finally:
        engine.close()
    ordered = [rows[c.hash].to_dict() for c in cells if c.hash in rows]
    if ordered:
        console.print(headline_table(ordered, title=f"{config.name}: {len(ordered)} cells"))
    return ordered


def experiment_yaml(config: ExperimentConfig) -> str:
    """The effective config as YAML that ``load_experiment`` reads back to the same cells."""
    data = config.model_dump(mode="json")
    for key in ("seed", "device"):  # set by the experiment's `seeds` and `device`; the loader refuses them here
        data["scenario"].pop(key, None)
    if "model_kwargs" not in config.scenario.model_fields_set:  # derived from the model (and per swept model)
        data["scenario"].pop("model_kwargs", None)
    header = ("# The effective config of this run (after --quick, --set and --grid), as the runner saw it.\n"
              "# Rerun or resume with: unlearnleak run|sweep <this file> --out <this folder>\n")
    return header + yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


def read_results(run_dir: str | Path) -> list[dict[str, Any]]:
    """The rows of ``run_dir``/results.jsonl (a torn last line, from a crash mid-write, is left out)."""
    rows, _ = read_rows(Path(run_dir) / RESULTS_FILE)
    return [row.to_dict() for row in rows]


# ----- the run loop -------------------------------------------------------------------------------------------


def _run_cells(engine: Executor, todo: list[CellTask], run_dir: Path, params: dict[str, dict[str, Any]],
               rows: dict[str, CellRow], console: Console) -> None:
    show = progress_enabled() and len(todo) > 1
    if not show:  # one cell (or progress off): let the cell show its own progress when it runs in this process
        todo = [replace(t, quiet=False) for t in todo]
    failed = 0
    with _cell_progress(show, len(todo)) as progress:

        def on_done(task: CellTask, outcome: CellOutcome) -> None:
            nonlocal failed
            row = _outcome_row(task, params[task.cell], outcome)
            artifacts = dict(outcome.artifacts)
            if row.status != "ok" and ERROR_FILE not in artifacts:
                artifacts[ERROR_FILE] = ((row.error or "failed") + "\n").encode("utf-8")
            with _interrupts_deferred():  # the folder and its row land together, or the cell reruns
                _publish_cell(run_dir, task.cell, artifacts)
                append_row(run_dir / RESULTS_FILE, row)
            rows[task.cell] = row
            if row.status != "ok":
                failed += 1
                message = f"cell {task.cell} {_params_text(params[task.cell])} failed: {row.error}"
                if progress is not None:
                    say(message)  # above the live bar, when there is one
                else:
                    _say(console, message)
            if progress is not None:
                progress.describe(f"cells ({failed} failed)" if failed else "cells")
                progress.advance()

        engine.run(todo, on_done)


def _outcome_row(task: CellTask, params: dict[str, Any], outcome: CellOutcome) -> CellRow:
    """The cell's row, checked by the row model; a cell function that returns no row fails its cell, in words."""
    data = {"cell": task.cell, "params": params, "config": task.config, **outcome.row}
    try:
        return check_row(data)
    except ValueError as exc:
        return check_row({"cell": task.cell, "params": params, "config": task.config, "status": "error",
                          "seconds": outcome.row.get("seconds"),
                          "error": f"the cell function {task.cell_fn} returned a row that is not one: {exc}"})


@contextmanager
def _cell_progress(show: bool, total: int) -> Iterator[Task | None]:
    """The run's progress over cells (a bar on a terminal, periodic lines in a log), kept when it ends."""
    if not show:
        yield None
        return
    with task("cells", total, keep=True) as progress:
        yield progress


_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextmanager
def _interrupts_deferred() -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM for the few milliseconds of a write, then deliver them (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = {sig: signal.signal(sig, lambda signum, frame: caught.append(signum)) for sig in _STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if caught:
            raise KeyboardInterrupt


# ----- the run folder -----------------------------------------------------------------------------------------


def _check_distinct(cells: list[Cell]) -> None:
    seen: dict[str, Cell] = {}
    for cell in cells:
        if cell.hash in seen:
            raise ConfigError(f"sweep: cells {_params_text(seen[cell.hash].params)} and {_params_text(cell.params)} "
                              "are the same experiment; remove the repeated value")
        seen[cell.hash] = cell


def _check_run_dir(run_dir: Path, cells: list[Cell], overwrite: bool) -> dict[str, Any] | None:
    """The existing run record of ``run_dir`` if it holds this experiment; None for a new folder (reads only)."""
    refuse_link(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"--out {run_dir} is an existing file, not a folder; choose another --out")
    check_creatable(run_dir, f"--out {run_dir}: cannot write it,", "choose another --out")
    if not run_dir.is_dir():
        return None
    for name in (EXPERIMENT_FILE, RUN_FILE, RESULTS_FILE, CELLS_DIR, LOCK_FILE):
        if (run_dir / name).is_symlink():
            raise ConfigError(f"--out {run_dir}: {name} is a symbolic link (to {os.readlink(run_dir / name)}); a run "
                              "folder's files must be inside it: choose another --out, or pass --overwrite to "
                              "start afresh")
    if overwrite or not _holds_files(run_dir):
        return None
    record_path = run_dir / RUN_FILE
    if not record_path.is_file():
        raise ConfigError(f"--out {run_dir} already holds files but no {RUN_FILE}, so it is not a run folder; "
                          "choose another --out, or pass --overwrite to replace it")
    try:
        record = json.loads(record_path.read_text(encoding="utf-8"))
        previous_cells = set(record["cells"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{record_path} cannot be read ({exc}); pass --overwrite to start the run afresh "
                              "or choose another --out") from exc
    current = {c.hash for c in cells}
    if previous_cells != current:
        name = record.get("experiment", "?")
        raise ConfigError(
            f"--out {run_dir} holds a different experiment ({name!r}: {len(previous_cells)} cells, "
            f"{len(previous_cells & current)} shared with this one's {len(current)}); resume it with the same "
            f"config and options (see {run_dir / EXPERIMENT_FILE}), choose another --out, or pass --overwrite "
            "to start afresh")
    return record


def _holds_files(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds anything but a lock file (left by a run that stopped before writing)."""
    return any(entry.name != LOCK_FILE for entry in run_dir.iterdir())


@contextmanager
def _locked_run_dir(run_dir: Path, cells: list[Cell], overwrite: bool) -> Iterator[dict[str, Any] | None]:
    """Create ``run_dir`` if needed and hold its lock (one run per folder); yield its run record (re-read under the
    lock). A second run on the same folder is refused in one line. A folder this call created is removed again
    if a check under the lock fails before anything is written.
    """
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    try:
        run_dir.mkdir()
        created = True
    except FileExistsError:
        created = False
    handle = _lock(run_dir)  # refused: the folder is another run's (even if this call created it), left alone
    try:
        try:
            previous = _check_run_dir(run_dir, cells, overwrite)  # again: another run may have finished meanwhile
            if overwrite and _holds_files(run_dir):
                _empty_run_dir(run_dir)
                previous = None
        except BaseException:
            if created and not _holds_files(run_dir):
                remove_tree(run_dir)
            raise
        yield previous
    finally:
        os.close(handle)


def _lock(run_dir: Path) -> int:
    """An exclusive lock on ``run_dir``/.unlearnleak.lock (flock: released when this process exits or dies)."""
    path = run_dir / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        os.close(fd)
        who = f"process {holder}" if holder.isdigit() else "another process"
        raise ConfigError(f"--out {run_dir} is in use by another `unlearnleak run|sweep` ({who}); wait for it to "
                          "finish (or stop it), then run this command again to resume; or choose another --out"
                          ) from None
    except BaseException:
        os.close(fd)
        raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
    return fd


def _empty_run_dir(run_dir: Path) -> None:
    """--overwrite: move everything but the lock into a hidden folder, then delete it (never following links)."""
    trash = run_dir / f"{OVERWRITTEN_PREFIX}{os.getpid()}"
    trash.mkdir()
    for entry in list(run_dir.iterdir()):
        if entry.name not in (LOCK_FILE, trash.name):
            os.replace(entry, trash / entry.name)
    remove_tree(trash)


def _clean_staging(run_dir: Path) -> None:
    """Remove what a crash left half-done: cell folders being published, an interrupted --overwrite."""
    leftovers = list(run_dir.glob(f"{OVERWRITTEN_PREFIX}*"))
    cells_dir = run_dir / CELLS_DIR
    if cells_dir.is_dir() and not cells_dir.is_symlink():
        leftovers += [*cells_dir.glob(".*.partial"), *cells_dir.glob(".*.old")]
    for leftover in leftovers:
        remove_tree(leftover)


def _finished_rows(run_dir: Path, cells: list[Cell]) -> tuple[dict[str, CellRow], list[str], bool]:
    """(the "ok" rows that hold a whole result, by cell; notes on what runs again; whether the file needs a rewrite).

    Reads only. A row that says "ok" but lacks the result its config asks for (or names a file that is missing,
    or reached through a symbolic link) does not count: its cell runs again.
    """
    path = run_dir / RESULTS_FILE
    rows, torn = read_rows(path)
    by_hash = {c.hash: c for c in cells}
    unknown = sorted({r.cell for r in rows} - set(by_hash))
    if unknown:
        raise CheckpointError(f"{path} holds rows of cells that are not in this experiment ({', '.join(unknown[:3])}"
                              "); it was edited or copied in: pass --overwrite to start afresh")
    latest: dict[str, CellRow] = {}
    for row in rows:
        latest.pop(row.cell, None)
        latest[row.cell] = row
    done: dict[str, CellRow] = {}
    notes = []
    failed = 0
    for cell, row in latest.items():
        if row.status != "ok":
            failed += 1
            continue
        config = by_hash[cell].config
        enabled = [name for name in ATTACKS if getattr(config.attacks, name) is not None]
        problem = result_problem(row, run_dir, enabled=enabled)
        if problem is not None:
            notes.append(f"cell {cell} {_params_text(by_hash[cell].params)}: its row says ok, but {problem}; "
                         "it runs again")
            continue
        done[cell] = row
    if torn:
        notes.insert(0, f"{path}: discarded a torn last line ({len(torn)} bytes, from a write cut short by a "
                        "crash); its cell runs again")
    if failed:
        notes.append(f"retrying {failed} cell(s) that failed last time (their tracebacks: "
                     f"{run_dir / CELLS_DIR}/<hash>/{ERROR_FILE})")
    return done, notes, bool(torn) or len(done) != len(rows)


def _load_results(run_dir: Path, cells: list[Cell]) -> tuple[dict[str, CellRow], list[str]]:
    """The finished rows by cell; torn lines, failed and incomplete rows are dropped from the file (atomically)."""
    done, notes, rewrite = _finished_rows(run_dir, cells)
    if rewrite:
        write_rows(run_dir / RESULTS_FILE, list(done.values()))
    return done, notes


def _publish_cell(run_dir: Path, cell: str, artifacts: dict[str, bytes]) -> None:
    """Write the cell's files into cells/.<hash>.partial, then rename it to cells/<hash> (replacing a failed one)."""
    cells_dir = run_dir / CELLS_DIR
    staged, final, old = cells_dir / f".{cell}.partial", cells_dir / cell, cells_dir / f".{cell}.old"
    for leftover in (staged, old):
        remove_tree(leftover)
    cells_dir.mkdir(exist_ok=True)
    staged.mkdir()
    for relative, data in artifacts.items():
        parts = PurePosixPath(relative).parts
        if PurePosixPath(relative).is_absolute() or ".." in parts or not parts:
            raise ConfigError(f"cell {cell}: artifact path {relative!r} leaves the cell folder")
        target = staged.joinpath(*parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    if os.path.lexists(final):
        os.replace(final, old)
        os.replace(staged, final)
        remove_tree(old)
    else:
        os.replace(staged, final)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _start_record(previous: dict[str, Any] | None, config: ExperimentConfig, cells: list[Cell], engine: Executor,
                  todo: list[CellTask], cell_fn: str, address: str | None,
                  argv: Sequence[str] | None) -> dict[str, Any]:
    record: dict[str, Any] = dict(previous) if previous else {"experiment": config.name, "created": _now(),
                                                              "invocations": []}
    invocation: dict[str, Any] = {
        "argv": list(argv if argv is not None else sys.argv),
        "executor": engine.name,
        "workers": engine.size(todo) if todo else engine.workers,
        "address": address,
        "cell_fn": cell_fn,
        "started": _now(),
        "finished": None,
        "status": "running",
        "cells_to_run": len(todo),
        "environment": environment_record(),
    }
    record["experiment"] = config.name
    record["cells"] = {c.hash: c.params for c in cells}
    record["invocations"] = [*record.get("invocations", []), invocation]
    record.update({k: invocation[k] for k in ("argv", "executor", "workers", "address", "started", "finished",
                                              "status", "environment")})
    return record


def _finish_record(run_dir: Path, record: dict[str, Any], status: str, todo: list[CellTask],
                   rows: dict[str, CellRow]) -> None:
    ran = [rows[t.cell] for t in todo if t.cell in rows]
    invocation = record["invocations"][-1]
    invocation.update(finished=_now(), status=status, ok=sum(r.status == "ok" for r in ran),
                      errors=sum(r.status != "ok" for r in ran))
    record.update(finished=invocation["finished"], status=status,
                  ok=sum(r.status == "ok" for r in rows.values()), cells_total=len(record["cells"]))
    write_json_atomic(run_dir / RUN_FILE, record)


# ----- console ------------------------------------------------------------------------------------------------


def _say(console: Console, text: str) -> None:
    """One message, printed as is (no rich markup, no line breaks inserted: logs stay greppable)."""
    console.print(text, markup=False, highlight=False, soft_wrap=True)


def _params_text(params: dict[str, Any]) -> str:
    return "(" + ", ".join(f"{k}={v}" for k, v in params.items()) + ")"




