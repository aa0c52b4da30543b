"""`unlearnleak report RUN_DIR`: tables, figures and one self-contained HTML page from a run (or audit) folder.

Everything is read and checked, and every table and figure built in memory, before the output folder is
staged; it is then published whole (``unlearnleak.storage.output_folder``) or not at all.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from unlearnleak.commands.common import handle_errors

DEFAULT_OUT = "report"
# What a run (or audit) folder holds: a folder holding any of these is never replaced by a report.
RUN_ENTRIES = ("results.jsonl", "run.json", "experiment.yaml", "cells", "report.json", "summary.json")


def check_report_target(run_dir: Path, target: Path) -> None:
    """``--out`` may not be the run folder, a folder that contains it, a part of it (but its ``report/``), or
    another run: replacing it (``--overwrite``) would delete results."""
    import os

    from unlearnleak.errors import ConfigError

    run, out = Path(os.path.realpath(run_dir)), Path(os.path.realpath(target))
    fix = f"choose an --out outside the run folder (default: {run_dir / DEFAULT_OUT})"
    if out == run:
        raise ConfigError(f"--out {target} is the run folder {run_dir} itself; a report never replaces its run: {fix}")
    if out in run.parents:
        raise ConfigError(f"--out {target} contains the run folder {run_dir}; replacing it would delete the run: {fix}")
    if run in out.parents and out != run / DEFAULT_OUT:
        raise ConfigError(f"--out {target} is inside the run folder {run_dir}, which only its runs write; "
                          f"{fix}")
    held = [name for name in RUN_ENTRIES if os.path.lexists(out / name)] if out.is_dir() else []
    if held:
        raise ConfigError(f"--out {target} holds a run or an audit ({', '.join(held)}), which a report never "
                          f"replaces; {fix}")


def register(app: typer.Typer) -> None:
    """Add the `report` command to ``app``."""

    @app.command("report")
    @handle_errors
    def report_command(
        run_dir: Annotated[Path, typer.Argument(
            help="A run folder of `unlearnleak run`/`sweep` (results.jsonl) or an `unlearnleak audit` folder.")],
        out: Annotated[Path | None, typer.Option(
            "--out", "-o", help="Output folder (default: RUN_DIR/report).")] = None,
        overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing report folder.")]
        = False,
        pool: Annotated[list[str] | None, typer.Option(
            "--pool", help="A swept key whose cells are pooled like seeds, e.g. --pool scenario.forget.class_id "
                           "(accuracy over the deleted classes); repeatable.")] = None,
    ) -> None:
        """Write CSV/Markdown tables, PNG figures and a self-contained index.html for a run or an audit."""
        from unlearnleak.experiments.console import output_console
        from unlearnleak.report import build_report, headline_rich_table
        from unlearnleak.report.build import INDEX_FILE, write_report
        from unlearnleak.storage import check_output_folder, output_folder

        target = out if out is not None else run_dir / DEFAULT_OUT
        check_report_target(run_dir, target)
        check_output_folder(target, overwrite=overwrite)
        report = build_report(run_dir, pool=list(pool or []))
        with output_folder(target, overwrite=overwrite) as staged:
            write_report(report, staged)
        console = output_console()
        if report.headline is not None:
            console.print(headline_rich_table(report.headline))
        typer.echo(f"report written to {target / INDEX_FILE} ({len(report.tables)} tables, "
                   f"{len(report.figures)} figures)")
