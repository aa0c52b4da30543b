"""The ``unlearnleak`` command: data, scenario, demo, and the attacks (mounted from unlearnleak.commands)."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import typer

from unlearnleak.commands.common import OneLineErrors, handle_errors
from unlearnleak.commands.data import data_app

GLOBAL_OPTIONS = ("--threads",)  # options of every command, taking one value each


def hoist_global_options(args: Sequence[str], commands: Sequence[str]) -> list[str]:
    """``args`` with each global option (``--threads N`` or ``--threads=N``) given after the sub-command moved
    before it, where click looks for it: ``recover RUN --threads 1`` runs as ``--threads 1 recover RUN``."""
    args = list(args)
    at = next((i for i, a in enumerate(args) if a in commands), None)
    if at is None:
        return args
    head, tail, moved = args[:at], [], []
    rest = iter(args[at:])
    for arg in rest:
        if arg == "--":
            tail += [arg, *rest]
            break
        name = arg.split("=", 1)[0]
        if name in GLOBAL_OPTIONS:
            moved.append(arg)
            if "=" not in arg:
                value = next(rest, None)
                if value is not None:
                    moved.append(value)
            continue
        tail.append(arg)
    return head + moved + tail


class Unlearnleak(OneLineErrors):
    """The root command: one-line usage errors, and the global options accepted after the sub-command too."""

    def main(self, args: Sequence[str] | None = None, *rest: Any, **kwargs: Any) -> Any:
        """Run the command line (``sys.argv[1:]`` by default) with its global options hoisted."""
        given = sys.argv[1:] if args is None else args
        return super().main(hoist_global_options(given, list(self.commands)), *rest, **kwargs)


app = typer.Typer(
    name="unlearnleak",
    help="Measure how much machine unlearning leaks about the data it deletes (Hu et al., IEEE S&P 2024).",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    cls=Unlearnleak,  # typer's usage errors print as one `error: …` line, exit code 2; --threads anywhere
)

# Sub-commands living in their own modules; each exposes register(app).
for _module in ("unlearnleak.commands.scenario", "unlearnleak.commands.demo", "unlearnleak.commands.recover",
                "unlearnleak.commands.infer_label", "unlearnleak.commands.audit", "unlearnleak.commands.study",
                "unlearnleak.commands.run"):
    importlib.import_module(_module).register(app)
importlib.import_module("unlearnleak.commands.report").register(app)  # issue 11: tables, figures, HTML
app.add_typer(data_app, name="data", help="List, inspect and download datasets.")


def default_threads() -> int:
    """Torch's CPU threads when neither --threads nor UNLEARNLEAK_THREADS says: half the cores this process may
    use, at least 1. Torch's own default (every core) thrashes as soon as anything else runs: on the shared
    2-core machine, 20 inversion steps took 103 s with 2 threads and 6 s with 1 (load average ≈ 12)."""
    from unlearnleak.experiments.executors.local import available_cpus

    return max(1, available_cpus() // 2)


@app.callback()
def _options(
    threads: Annotated[int | None, typer.Option(
        "--threads", min=1, envvar="UNLEARNLEAK_THREADS", show_default=False,
        help="CPU threads for torch (default: half the cores, at least 1); also accepted after the command. "
             "More threads help only on an otherwise idle machine: a busy one makes them wait on each other.")]
    = None,
) -> None:
    """Options that apply to every command."""
    import torch

    torch.set_num_threads(threads if threads is not None else default_threads())


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
