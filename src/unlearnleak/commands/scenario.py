"""`unlearnleak scenario`: build and save a ModelPair from a YAML config and/or flags."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from unlearnleak.commands.common import check_device_flag, handle_errors
from unlearnleak.experiments.config import check_named_code, load_config
from unlearnleak.models.base import names_code
from unlearnleak.scenario import Scenario, ScenarioConfig, build_scenario, plan_scenario
from unlearnleak.storage import check_output_folder, output_folder

# config key → the flag that sets it, so that a bad value is reported under the flag the user typed
FLAGS = {"dataset": "--dataset", "data_dir": "--data-dir", "model": "--model", "unlearning.method": "--method",
         "n_train": "--n-train", "forget.k": "--k", "seed": "--seed", "device": "--device"}


def scenario_table(scn: Scenario) -> Table:
    """A summary table of a built scenario: sizes, forget set and the accuracies of θ0, θ, θ_u."""
    m = dict(scn.record.metrics)
    table = Table(title=f"Scenario: {scn.config.dataset}, {scn.config.model}, "
                        f"unlearning = {scn.config.unlearning.method}")
    table.add_column("")
    table.add_column("θ0 (base)", justify="right")
    table.add_column("θ (original)", justify="right")
    table.add_column("θ_u (unlearned)", justify="right")
    for label, key in [("test accuracy", "test_accuracy"), ("accuracy on D_u", "forget_accuracy"),
                       ("accuracy on D_ft \\ D_u", "retain_accuracy")]:
        table.add_row(label, *(f"{m.get(f'{w}_{key}', float('nan')):.3f}" for w in ("base", "original", "unlearned")))
    table.caption = (f"N = |D_ft| = {scn.knowledge.n_train}, k = |D_u| = {scn.knowledge.n_forget}, "
                     f"D_u labels = {list(scn.record.forget_labels)}, D_u rows = {list(scn.record.forget_indices)}")
    return table


def register(app: typer.Typer) -> None:
    """Add the `scenario` command to ``app``."""

    @app.command("scenario")
    @handle_errors
    def scenario(
        out: Annotated[Path, typer.Option("--out", "-o", help="Run folder to write the model pair into.")],
        config: Annotated[Path | None, typer.Option("--config", "-c", help="YAML ScenarioConfig.")] = None,
        set_: Annotated[list[str] | None, typer.Option("--set", help="Override, e.g. --set n_train=64.")] = None,
        dataset: Annotated[str | None, typer.Option(help="Dataset name (see `unlearnleak data list`).")] = None,
        data_dir: Annotated[str | None, typer.Option(help="Folder holding the dataset files.")] = None,
        model: Annotated[str | None, typer.Option(help="Model name or 'module:Class'.")] = None,
        method: Annotated[str | None, typer.Option(help="Unlearning method: exact | gradient_ascent.")] = None,
        n_train: Annotated[int | None, typer.Option(help="N, the size of the fine-tuning set D_ft.")] = None,
        k: Annotated[int | None, typer.Option(help="k, how many samples of D_ft to unlearn.")] = None,
        seed: Annotated[int | None, typer.Option(help="Seed for every random choice.")] = None,
        device: Annotated[str | None, typer.Option(help="cpu or cuda.")] = None,
        overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing run folder --out.")]
        = False,
    ) -> None:
        """Pretrain θ0 (cached), fine-tune θ on D_ft, unlearn D_u, and save the ModelPair with its manifest.

        Everything is checked before training (config, data, model fit, forget set, --out); the run folder
        is written whole or not at all.
        """
        if device is not None:
            check_device_flag(device)
        values = {"dataset": dataset, "data_dir": data_dir, "model": model, "unlearning.method": method,
                  "n_train": n_train, "forget.k": k, "seed": seed, "device": device}
        cfg = load_config(ScenarioConfig, config, list(set_ or []), flags=FLAGS, values=values)
        # a config file (or --set) never runs code; --model names it on the command line (docs/security.md)
        check_named_code([("model", cfg.model)], [model] if model and names_code(model) else [],
                         "scenario config", flag="--model")
        check_output_folder(out, overwrite=overwrite)
        scn = build_scenario(cfg, plan_scenario(cfg))
        with output_folder(out, overwrite=overwrite) as staged:
            scn.save(staged)
        Console().print(scenario_table(scn))
        typer.echo(f"model pair written to {out}")
