"""`unlearnleak study methods|defenses`: a short alias for the shipped study configs, run by `unlearnleak run`.

A study is two experiment configs (feature recovery on a small D_ft, label inference on a larger one), each run
into its own run folder and reported with its forget sets pooled (`unlearnleak report RUN --pool KEY`). The alias
prints the commands it runs, so a user can run, resume or change them directly.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Annotated, NamedTuple

import typer

from unlearnleak.commands.common import handle_errors
from unlearnleak.errors import ConfigError


class StudyPart(NamedTuple):
    """One config of a study: its run folder under --out, the shipped config and the key its report pools."""

    folder: str
    config: str
    pool: str


STUDIES: dict[str, tuple[StudyPart, ...]] = {
    "methods": (StudyPart("recovery", "studies/methods_recovery", "scenario.forget.positions"),
                StudyPart("labels", "studies/methods_labels", "scenario.forget.class_id")),
    "defenses": (StudyPart("recovery", "studies/defenses_recovery", "scenario.forget.positions"),
                 StudyPart("labels", "studies/defenses_labels", "scenario.forget.class_id")),
}

study_app = typer.Typer(help="Studies (aliases of shipped configs): leakage by unlearning method; the defenses' "
                             "utility/attack trade-off.", no_args_is_help=True)

OutOpt = Annotated[Path, typer.Option("--out", "-o", help="Folder of the study's run folders (recovery/, labels/), "
                                                          "each with its pooled report/.")]
SetOpt = Annotated[list[str] | None, typer.Option(
    "--set", help="Override a key of both configs, e.g. --set attacks.feature_recovery.iterations=600.")]
QuickOpt = Annotated[bool, typer.Option("--quick", help="Apply the configs' `quick:` overrides.")]
DataOpt = Annotated[str | None, typer.Option(help="Dataset folder (sets scenario.data_dir).")]
DeviceOpt = Annotated[str | None, typer.Option(help="cpu or cuda (sets device).")]
WorkersOpt = Annotated[int | None, typer.Option("--workers", "-w", min=1, help="Cells at once (as for `run`).")]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="Start both run folders afresh.")]
ModelDefOpt = Annotated[list[str] | None, typer.Option(
    "--model-def", help="Your model code that a --set scenario.model names (as for `run`).")]
ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", hidden=True,
                                                help="Removed: study configs are experiment configs now.")]
# the flag → the config key it sets (a flag and a --set of the same key would contradict each other)
FLAGS = {"--data-dir": "scenario.data_dir", "--device": "device"}


def _applies(config: str, setting: str) -> bool:
    """False for a ``--set attacks.NAME.…`` when the config switches attack NAME off (the other part runs it)."""
    from unlearnleak.experiments.config import read_yaml_mapping
    from unlearnleak.experiments.schema import resolve_config_path

    parts = setting.partition("=")[0].strip().split(".")
    if len(parts) < 3 or parts[0] != "attacks":
        return True
    attacks = read_yaml_mapping(resolve_config_path(config), "experiment config").get("attacks") or {}
    return not (parts[1] in attacks and attacks[parts[1]] is None)


def study_commands(kind: str, out: Path, sets: list[str], quick: bool) -> list[tuple[StudyPart, list[str]]]:
    """Each part of study ``kind`` with the `unlearnleak run` arguments that run it (without global options);
    a ``--set`` of an attack's key goes to the parts that run that attack."""
    commands = []
    for part in STUDIES[kind]:
        argv = ["run", part.config, "--out", str(out / part.folder), *(["--quick"] if quick else [])]
        for s in sets:
            argv += ["--set", s] if _applies(part.config, s) else []
        commands.append((part, argv))
    return commands


def _run(ctx: typer.Context, kind: str, out: Path, sets: list[str] | None, quick: bool, data_dir: str | None,
         device: str | None, workers: int | None, overwrite: bool, model_defs: list[str] | None,
         config: Path | None) -> None:
    from unlearnleak.commands.report import DEFAULT_OUT
    from unlearnleak.commands.run import _execute
    from unlearnleak.report import build_report
    from unlearnleak.report.build import INDEX_FILE, write_report
    from unlearnleak.storage import output_folder

    if config is not None:
        raise ConfigError(f"--config: study configs are experiment configs now; copy "
                          f"{' and '.join(p.config + '.yaml' for p in STUDIES[kind])} (unlearnleak run --list), "
                          "change them and run each with `unlearnleak run`")
    sets = list(sets or [])
    for flag, value in (("--data-dir", data_dir), ("--device", device)):
        if value is None:
            continue
        if any(s.partition("=")[0].strip() == FLAGS[flag] for s in sets):
            raise ConfigError(f"{flag} and --set {FLAGS[flag]}=… both set {FLAGS[flag]}; give it once")
        sets.append(f"{FLAGS[flag]}={value}")
    for part, argv in study_commands(kind, out, sets, quick):
        shown = [*argv, *(["--workers", str(workers)] if workers else []), *(["--overwrite"] if overwrite else []),
                 *(a for m in model_defs or [] for a in ("--model-def", m))]
        typer.echo(f"study {kind} ({part.folder}): unlearnleak {shlex.join(shown)}")
        mine = [argv[i + 1] for i in range(len(argv) - 1) if argv[i] == "--set"]
        _execute(ctx, "run", Path(part.config), out / part.folder, mine, quick, None, "local", workers, None,
                 overwrite, "unlearnleak.experiments.pipeline:run_cell", False, model_defs)
    for part in STUDIES[kind]:
        run_dir = out / part.folder
        typer.echo(f"study {kind} ({part.folder}) report: unlearnleak report {shlex.quote(str(run_dir))} "
                   f"--pool {part.pool} --overwrite")
        report = build_report(run_dir, pool=[part.pool])
        with output_folder(run_dir / DEFAULT_OUT, overwrite=True) as staged:
            write_report(report, staged)
        typer.echo(f"  written to {run_dir / DEFAULT_OUT / INDEX_FILE}")


@study_app.command("methods")
@handle_errors
def methods(ctx: typer.Context, out: OutOpt, set_: SetOpt = None, quick: QuickOpt = False, data_dir: DataOpt = None,
            device: DeviceOpt = None, workers: WorkersOpt = None, overwrite: OverwriteOpt = False,
            model_def: ModelDefOpt = None, config: ConfigOpt = None) -> None:
    """Feature recovery and label inference against every unlearning method (studies/methods_*)."""
    _run(ctx, "methods", out, set_, quick, data_dir, device, workers, overwrite, model_def, config)


@study_app.command("defenses")
@handle_errors
def defenses(ctx: typer.Context, out: OutOpt, set_: SetOpt = None, quick: QuickOpt = False, data_dir: DataOpt = None,
             device: DeviceOpt = None, workers: WorkersOpt = None, overwrite: OverwriteOpt = False,
             model_def: ModelDefOpt = None, config: ConfigOpt = None) -> None:
    """Each defense's strength swept on θ_u: utility beside both attacks (studies/defenses_*)."""
    _run(ctx, "defenses", out, set_, quick, data_dir, device, workers, overwrite, model_def, config)


def register(app: typer.Typer) -> None:
    """Mount `study` on ``app``."""
    app.add_typer(study_app, name="study")
