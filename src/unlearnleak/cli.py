"""The ``unlearnleak`` command: data, scenario, demo, and the attacks (mounted from unlearnleak.commands)."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Annotated

import typer

from unlearnleak.commands.common import handle_errors

app = typer.Typer(
    name="unlearnleak",
    help="Measure how much machine unlearning leaks about the data it deletes (Hu et al., IEEE S&P 2024).",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)

# Sub-commands living in their own modules; each exposes register(app) (or a typer sub-app for `data`).
for _module in ("unlearnleak.commands.scenario", "unlearnleak.commands.demo", "unlearnleak.commands.recover",
                "unlearnleak.commands.infer_label"):
    try:
        importlib.import_module(_module).register(app)
    except ModuleNotFoundError as exc:
        if exc.name != _module:
            raise

try:
    from unlearnleak.data.cli import data_app
except ModuleNotFoundError as exc:  # pragma: no cover - only while the data CLI is absent
    if exc.name != "unlearnleak.data.cli":
        raise
else:
    app.add_typer(data_app, name="data", help="List, inspect and download datasets.")


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
