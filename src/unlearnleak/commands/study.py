"""`unlearnleak study methods|defenses`: the issue-10 studies, each writing one run folder (see docs/)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from unlearnleak.commands.common import handle_errors

study_app = typer.Typer(help="Studies: leakage by unlearning method; defense utility/attack trade-off.",
                        no_args_is_help=True)

ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="YAML study config (see docs/).")]
SetOpt = Annotated[list[str] | None, typer.Option(
    "--set", help="Override a config key, e.g. --set attack.iterations=600 --set setting.data_dir=data.")]
OutOpt = Annotated[Path, typer.Option("--out", "-o", help="Run folder to create (results.jsonl, summary.json, "
                                                          "table.md, PNG figures).")]
DataOpt = Annotated[str | None, typer.Option(help="Dataset folder (sets setting.data_dir).")]
DeviceOpt = Annotated[str | None, typer.Option(help="cpu or cuda (sets setting.device; default: the config's, cpu).")]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="Replace an existing --out folder.")]
ModelDefOpt = Annotated[str | None, typer.Option(
    "--model-def", help="Your model code that the config names as setting.model (path/to/file.py:Class); a config "
                        "never runs code you did not name here.")]
# config key → the flag that sets it (a flag and a --set of the same key would contradict each other)
FLAGS = {"setting.device": "--device", "setting.data_dir": "--data-dir"}


def _run(kind: str, config_path: Path | None, overrides: list[str] | None, out: Path, data_dir: str | None,
         device: str | None, overwrite: bool, model_def: str | None) -> None:
    from unlearnleak.devices import check_device
    from unlearnleak.errors import ConfigError
    from unlearnleak.experiments.config import check_named_code, load_config
    from unlearnleak.experiments.studies import DefensesStudyConfig, MethodsStudyConfig, run_study
    from unlearnleak.storage import check_output_folder

    sets = list(overrides or [])
    values = {"setting.device": device, "setting.data_dir": data_dir}
    for key, flag in FLAGS.items():
        if values[key] is not None and any(s.partition("=")[0].strip() == key for s in sets):
            raise ConfigError(f"{flag} and --set {key}=… both set {key}; give it once")
    check_output_folder(out, overwrite=overwrite)
    model: type[MethodsStudyConfig | DefensesStudyConfig] = \
        MethodsStudyConfig if kind == "methods" else DefensesStudyConfig
    config = load_config(model, config_path, sets, flags=FLAGS, values=values)
    check_device(config.setting.device)
    check_named_code([("setting.model", config.setting.model)], [model_def] if model_def else [], "study config")
    summary = run_study("methods" if kind == "methods" else "defenses", config, out, overwrite=overwrite,
                        log=typer.echo)
    typer.echo((out / "table.md").read_text(encoding="utf-8"))
    typer.echo(f"study finished in {summary['seconds']:.0f} s; results in {out}/ "
               f"(results.jsonl, summary.json, table.md, {', '.join(summary['figures'])})")


@study_app.command("methods")
@handle_errors
def methods(out: OutOpt, config: ConfigOpt = None, set_: SetOpt = None, data_dir: DataOpt = None,
            device: DeviceOpt = None, overwrite: OverwriteOpt = False, model_def: ModelDefOpt = None) -> None:
    """Feature recovery and label inference against every unlearning method, on the same forget sets."""
    _run("methods", config, set_, out, data_dir, device, overwrite, model_def)


@study_app.command("defenses")
@handle_errors
def defenses(out: OutOpt, config: ConfigOpt = None, set_: SetOpt = None, data_dir: DataOpt = None,
             device: DeviceOpt = None, overwrite: OverwriteOpt = False, model_def: ModelDefOpt = None) -> None:
    """Sweep each defense's strength on θ_u; utility (test accuracy) beside both attacks' success."""
    _run("defenses", config, set_, out, data_dir, device, overwrite, model_def)


def register(app: typer.Typer) -> None:
    """Mount `study` on ``app``."""
    app.add_typer(study_app, name="study")
