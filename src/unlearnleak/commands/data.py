"""``unlearnleak data …``: list the registered datasets, inspect one, download one.

Each command catches :class:`~unlearnleak.errors.UnlearnleakError`, prints its message to stderr and exits
with code 2, so the sub-app behaves the same on its own and mounted in the main CLI.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, TypeVar

import torch
import typer
from rich.markup import escape
from rich.table import Table

from unlearnleak.commands.common import OneLineErrors, fail
from unlearnleak.data import DATASET_INFO, DATASETS, Dataset, load_dataset, resolve_data_dir
from unlearnleak.data.download import check_data_dir, check_deadline, download, download_url
from unlearnleak.data.files import LAYOUTS, files_present
from unlearnleak.data.transform import TabularTransform
from unlearnleak.errors import ConfigError, UnlearnleakError
from unlearnleak.experiments.console import output_console

data_app = typer.Typer(name="data", help="List, inspect and download datasets.", no_args_is_help=True,
                       add_completion=False, cls=OneLineErrors)

DataDirOption = Annotated[
    Path | None,
    typer.Option("--data-dir", help="Data folder (default: $UNLEARNLEAK_DATA_DIR, else ./data)."),
]

T = TypeVar("T")


def _run(action: Callable[[], T]) -> T:
    """Run ``action``; a user error is printed to stderr and becomes exit code 2."""
    try:
        return action()
    except KeyboardInterrupt:  # Ctrl-C, or SIGTERM during a download: its temporary files are already gone
        typer.echo("interrupted: nothing was installed", err=True)
        raise typer.Exit(130) from None
    except UnlearnleakError as exc:
        raise fail(str(exc)) from None
    except OSError as exc:  # a folder that turned unwritable mid-way: environmental, one line
        where = f"{exc.filename}: " if exc.filename else ""
        raise fail(f"{where}{exc.strerror or exc}; check the --data-dir path, its permissions and free space") \
            from None


def _presence(name: str, root: Path) -> str:
    if not DATASET_INFO[name].needs_files:
        return "built in"
    return "present" if files_present(name, root) else "missing"


@data_app.command("list")
def list_datasets(data_dir: DataDirOption = None) -> None:
    """Show every registered dataset, its kind and splits, and whether its files are in the data folder."""
    root = resolve_data_dir(data_dir)
    table = Table(title=escape(f"datasets (data folder: {root})"))
    for column in ("name", "kind", "splits", "files", "description"):
        table.add_column(column)
    for name in DATASETS.names():
        info = DATASET_INFO[name]
        table.add_row(name, info.kind, ", ".join(info.splits), _presence(name, root),
                      escape(info.description))
    output_console().print(table)


def _class_counts(dataset: Dataset) -> Table:
    counts = torch.bincount(dataset.y, minlength=dataset.num_classes).tolist()
    table = Table(title="per-class counts")
    for column in ("label", "class", "count"):
        table.add_column(column)
    for label, (cls, count) in enumerate(zip(dataset.classes, counts, strict=False)):
        table.add_row(str(label), escape(cls), str(count))
    return table


def _files_table(dataset: Dataset) -> Table:
    table = Table(title=escape(f"source: {dataset.provenance.source}"))
    table.add_column("file", overflow="fold")
    table.add_column("bytes")
    table.add_column("sha256", no_wrap=True)
    for record in dataset.provenance.files:
        table.add_row(escape(record.path), str(record.size), record.sha256)
    return table


def _describe(dataset: Dataset) -> list[str]:
    x = dataset.x
    lines = [
        f"{dataset.name} / {dataset.split}: {len(dataset)} {dataset.kind} rows, input shape "
        f"{tuple(dataset.input_shape)}, {dataset.num_classes} classes",
        (f"values: {x.dtype} in [{x.min().item():.4g}, {x.max().item():.4g}]" if len(dataset)
         else "values: none"),
        f"counts: {dict(dataset.provenance.counts)}",
    ]
    if dataset.kind == "image":
        lines.append(f"normalisation: mean {dataset.mean}, std {dataset.std}")
    if isinstance(dataset.transform, TabularTransform):
        lines.append(f"numeric columns: {', '.join(dataset.transform.numeric_columns) or '-'}")
        lines.append(f"categorical columns: {', '.join(dataset.transform.categorical_columns) or '-'}")
        lines.append(f"features ({len(dataset.feature_names)}): {', '.join(dataset.feature_names)}")
    if dataset.extra_labels:
        lines.append(f"extra labels: {', '.join(dataset.extra_labels)}")
    if dataset.provenance.notes:
        lines.append(f"notes: {dataset.provenance.notes}")
    return lines


@data_app.command("info")
def info(
    name: Annotated[str, typer.Argument(help="A registered dataset (see `unlearnleak data list`).")],
    split: Annotated[str | None, typer.Option("--split", help="Split to load (default: the first).")] = None,
    data_dir: DataDirOption = None,
) -> None:
    """Load one split and show its counts, shape, classes with per-class counts, and source checksums."""

    def load() -> Dataset:
        DATASETS.get(name)
        chosen = split or DATASET_INFO[name].splits[0]
        return load_dataset(name, chosen, data_dir=data_dir)

    dataset = _run(load)
    console = output_console()
    for line in _describe(dataset):
        console.print(escape(line))
    console.print(_class_counts(dataset))
    console.print(_files_table(dataset))


@data_app.command("download")
def download_dataset(
    name: Annotated[str, typer.Argument(help="A dataset with an official download.")],
    data_dir: DataDirOption = None,
    mirror: Annotated[str | None, typer.Option(
        "--mirror", help="Base URL serving the official file names (default: $UNLEARNLEAK_DOWNLOAD_MIRROR).",
    )] = None,
    force: Annotated[bool, typer.Option("--force", help="Download even if the files are present.")] = False,
    timeout: Annotated[float | None, typer.Option(
        "--timeout", help="Seconds the whole download may take (default: the file at 100 KiB/s, plus 10 min).",
    )] = None,
) -> None:
    """Fetch the official archive, verify its published MD5 and install it in the data folder."""
    root = resolve_data_dir(data_dir)

    def fetch() -> Path | None:
        if name not in LAYOUTS:
            DATASETS.get(name)
            raise ConfigError(f"dataset {name!r} installs with the package and needs no download")
        if files_present(name, root) and not force:
            return None
        url = download_url(name, mirror)
        deadline = check_deadline(name, timeout)
        check_data_dir(root)
        typer.echo(f"downloading {url}", err=True)
        return download(name, root, base_url=mirror, force=force, deadline=deadline)

    installed = _run(fetch)
    if installed is None:
        typer.echo(f"{name}: already present in {root} (use --force to download again)")
    else:
        typer.echo(f"{name}: installed {installed}")
