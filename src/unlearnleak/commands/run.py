"""`unlearnleak run` and `unlearnleak sweep`: an experiment config's cells into a resumable run folder."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Annotated

import typer

from unlearnleak.commands.common import handle_errors
from unlearnleak.errors import ConfigError
from unlearnleak.experiments.schema import with_grid

__all__ = ["register", "with_grid"]

EXIT_INTERRUPTED = 130  # the shell's convention for a run stopped by Ctrl-C (128 + SIGINT)
EXIT_CELLS_FAILED = 1

ConfigArg = Annotated[Path | None, typer.Argument(
    help="Experiment config: a YAML file, or a shipped config's name such as paper/fig3_cifar10 (see --list).",
    show_default=False)]
ListOpt = Annotated[bool, typer.Option("--list", help="List the shipped configs (name, runtime, description) "
                                                      "and exit.")]
OutOpt = Annotated[Path | None, typer.Option("--out", "-o", help="Run folder: created, or resumed if it holds this "
                                                          "experiment (experiment.yaml, run.json, results.jsonl, "
                                                          "cells/).")]
SetOpt = Annotated[list[str] | None, typer.Option(
    "--set", help="Override a config key, e.g. --set scenario.n_train=8 --set device=cuda (repeatable).")]
QuickOpt = Annotated[bool, typer.Option("--quick", help="Apply the config's `quick:` overrides (minutes, on the "
                                                        "shared subsets).")]
ExecutorOpt = Annotated[str, typer.Option("--executor", "-e", help="Where cells run: local (a process pool on "
                                                                   "this machine) or ray (a Ray cluster).")]
WorkersOpt = Annotated[int | None, typer.Option(
    "--workers", "-w", min=1, help="Cells at once (local default: one per CPU core, one for cuda cells; ray "
                                   "default: as many as the cluster fits).")]
AddressOpt = Annotated[str | None, typer.Option("--address", help="Ray cluster address (e.g. auto, or "
                                                                  "ray://head:10001); default: a local instance.")]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="Delete what --out holds and start afresh.")]
CellFnOpt = Annotated[str, typer.Option("--cell-fn", help="Advanced: the function that runs one cell, "
                                                          "module:function(config, cell_dir) -> row.")]
ModelDefOpt = Annotated[list[str] | None, typer.Option(
    "--model-def", help="Your model code that the config names as scenario.model (path/to/file.py:Class or "
                        "package.module:Class); a config never runs code you did not name here (repeatable).")]
GridOpt = Annotated[list[str] | None, typer.Option(
    "--grid", help="Add or replace a swept key: key=\\[v1,v2], e.g. --grid scenario.n_train=[8,32] (repeatable).")]


def _command(kind: str, config: Path, out: Path, sets: list[str], quick: bool, grid: list[str], executor: str,
             workers: int | None, address: str | None, cell_fn: str, threads: int | None,
             model_defs: list[str]) -> list[str]:
    """The command line that reruns (resumes) this run; --overwrite is left out on purpose."""
    argv = ["unlearnleak", *(["--threads", str(threads)] if threads else []), kind, str(config), "--out", str(out)]
    argv += ["--quick"] if quick else []
    for s in sets:
        argv += ["--set", s]
    for g in grid:
        argv += ["--grid", g]
    for m in model_defs:
        argv += ["--model-def", m]
    argv += [] if executor == "local" else ["--executor", executor]
    argv += [] if workers is None else ["--workers", str(workers)]
    argv += [] if address is None else ["--address", address]
    from unlearnleak.experiments.runner import DEFAULT_CELL_FN

    argv += [] if cell_fn == DEFAULT_CELL_FN else ["--cell-fn", cell_fn]
    return argv


def list_configs() -> None:
    """Print the shipped configs: name, kind (run or sweep), expected runtime and the description's first line."""
    from rich.table import Table
    from rich.text import Text

    from unlearnleak.experiments.config import read_yaml_mapping
    from unlearnleak.experiments.console import output_console
    from unlearnleak.experiments.schema import resolve_config_path, shipped_configs

    table = Table(title="shipped experiment configs (unlearnleak run|sweep NAME --out RUN_DIR [--quick])")
    for column in ("name", "grid", "expected runtime", "description"):
        table.add_column(column)
    for name in shipped_configs():
        data = read_yaml_mapping(resolve_config_path(name), "experiment config")
        description = str(data.get("description") or "").strip().splitlines()
        table.add_row(*(Text(cell) for cell in (name, f"{len(data.get('sweep') or {})} swept key(s)",
                                                str(data.get("expected_runtime") or "?"),
                                                description[0] if description else "")))
    output_console().print(table)  # full width off a terminal: names and runtimes are copied from here


def _execute(ctx: typer.Context, kind: str, config_path: Path | None, out: Path | None, sets: list[str] | None,
             quick: bool, grid: list[str] | None, executor: str, workers: int | None, address: str | None,
             overwrite: bool, cell_fn: str, list_: bool, model_defs: list[str] | None) -> None:
    from unlearnleak.experiments.runner import RunInterrupted, run_experiment
    from unlearnleak.experiments.schema import load_experiment

    if list_:
        given = [flag for flag, value in (("CONFIG", config_path), ("--out", out), ("--set", sets),
                                          ("--grid", grid), ("--model-def", model_defs)) if value]
        if given:
            raise ConfigError(f"--list lists the shipped configs and runs nothing; drop {', '.join(given)} "
                              f"(or drop --list to run)")
        list_configs()
        return
    if config_path is None or out is None:
        missing = "CONFIG (a YAML file or a shipped name, see --list)" if config_path is None else "--out RUN_DIR"
        raise ConfigError(f"missing {missing}; usage: unlearnleak {kind} CONFIG --out RUN_DIR")
    sets, grid, model_defs = list(sets or []), list(grid or []), list(model_defs or [])
    config = load_experiment(config_path, sets, quick, grid=grid, model_defs=model_defs)
    if kind == "sweep" and not config.sweep:
        raise ConfigError(f"{config_path} has no `sweep:` section and no --grid was given: add one "
                          "(e.g. --grid scenario.n_train=[8,32]) or run it with `unlearnleak run`")
    threads = ctx.find_root().params.get("threads")
    argv = _command(kind, config_path, out, sets, quick, grid, executor, workers, address, cell_fn, threads,
                    model_defs)
    try:
        rows = run_experiment(config, out, executor=executor, workers=workers, address=address,
                              overwrite=overwrite, cell_fn=cell_fn, threads=threads,
                              argv=[*argv, *(["--overwrite"] if overwrite else [])])
    except RunInterrupted as exc:
        print(f"{exc.message}: {shlex.join(argv)}", file=sys.stderr)
        raise typer.Exit(EXIT_INTERRUPTED) from None
    failed = [r for r in rows if r.get("status") != "ok"]
    typer.echo(f"{len(rows) - len(failed)} of {len(rows)} cells ok; rows in {out / 'results.jsonl'}, "
               f"files in {out / 'cells'}/")
    if failed:
        print(f"{len(failed)} cell(s) failed (tracebacks in {out / 'cells'}/<hash>/error.txt); rerun the same "
              f"command to retry only them: {shlex.join(argv)}", file=sys.stderr)
        raise typer.Exit(EXIT_CELLS_FAILED)


@handle_errors
def run_command(ctx: typer.Context, config: ConfigArg = None, out: OutOpt = None, set_: SetOpt = None,
                quick: QuickOpt = False, executor: ExecutorOpt = "local", workers: WorkersOpt = None,
                address: AddressOpt = None, overwrite: OverwriteOpt = False,
                cell_fn: CellFnOpt = "unlearnleak.experiments.pipeline:run_cell", list_: ListOpt = False,
                model_def: ModelDefOpt = None) -> None:
    """Run one experiment: its grid (`sweep:`) × seeds, one cell each; re-running the same command resumes it."""
    _execute(ctx, "run", config, out, set_, quick, None, executor, workers, address, overwrite, cell_fn, list_,
             model_def)


@handle_errors
def sweep_command(ctx: typer.Context, config: ConfigArg = None, out: OutOpt = None, set_: SetOpt = None,
                  quick: QuickOpt = False, grid: GridOpt = None, executor: ExecutorOpt = "local",
                  workers: WorkersOpt = None, address: AddressOpt = None, overwrite: OverwriteOpt = False,
                  cell_fn: CellFnOpt = "unlearnleak.experiments.pipeline:run_cell", list_: ListOpt = False,
                  model_def: ModelDefOpt = None) -> None:
    """Run the grid of a config's `sweep:` (× seeds), one cell per point; re-running resumes it."""
    _execute(ctx, "sweep", config, out, set_, quick, grid, executor, workers, address, overwrite, cell_fn, list_,
             model_def)


def register(app: typer.Typer) -> None:
    """Mount `run` and `sweep` on ``app``."""
    app.command("run")(run_command)
    app.command("sweep")(sweep_command)
