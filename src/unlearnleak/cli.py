"""The ``unlearnleak`` command: data, scenario, demo, and the attacks (mounted from unlearnleak.commands)."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Annotated

import typer

from unlearnleak.commands.common import OneLineErrors, handle_errors
from unlearnleak.data.cli import data_app

app = typer.Typer(
    name="unlearnleak",
    help="Measure how much machine unlearning leaks about the data it deletes (Hu et al., IEEE S&P 2024).",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    cls=OneLineErrors,  # typer's usage errors print as one `error: …` line, exit code 2
)

# Sub-commands living in their own modules; each exposes register(app).
for _module in ("unlearnleak.commands.scenario", "unlearnleak.commands.demo", "unlearnleak.commands.recover",
                "unlearnleak.commands.infer_label", "unlearnleak.commands.audit", "unlearnleak.commands.study",
                "unlearnleak.commands.run"):
    importlib.import_module(_module).register(app)
importlib.import_module("unlearnleak.commands.report").register(app)  # issue 11: tables, figures, HTML
app.add_typer(data_app, name="data", help="List, inspect and download datasets.")


@app.callback()
def _options(
    threads: Annotated[int | None, typer.Option(
        "--threads", min=1, envvar="UNLEARNLEAK_THREADS",
        help="CPU threads for torch (default: torch's choice). On a busy machine, 1 is often much faster "
             "for the small networks of the attacks than oversubscribed cores.")] = None,
) -> None:
    """Options that apply to every command."""
    if threads is not None:
        import torch

        torch.set_num_threads(threads)


@app.command("version")
@handle_errors
def version(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Also print dependency versions.")] = False,
) -> None:
    """Print the unlearnleak version (and the versions that determine results)."""
    from unlearnleak import __version__
    from unlearnleak.storage import environment_record

    typer.echo(f"unlearnleak {__version__}")
    if verbose:
        for k, v in environment_record()["versions"].items():
            typer.echo(f"  {k} {v}")


def main() -> None:
    """Console-script entry point."""
    app()


__all__ = ["Path", "app", "main"]
