"""`unlearnleak scenario`: build and save a ModelPair from a YAML config and/or flags.

The command starts from one of two named settings, then applies ``--config``, ``--set`` and the flags (later
wins): :data:`QUICK` (the default, sized for a 2-core CPU: minutes) or, with ``--paper``, :data:`PAPER` (the
official code's pretraining: hours on a CPU, a GPU advised).
"""

from __future__ import annotations

import copy
import math
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from unlearnleak.commands.common import check_device_flag, handle_errors
from unlearnleak.experiments.config import check_named_code, load_config
from unlearnleak.experiments.console import output_console
from unlearnleak.models.base import names_code
from unlearnleak.scenario import Scenario, ScenarioConfig, build_scenario, plan_scenario

# config key → the flag that sets it, so that a bad value is reported under the flag the user typed
FLAGS = {"dataset": "--dataset", "data_dir": "--data-dir", "model": "--model", "unlearning.method": "--method",
         "n_train": "--n-train", "forget.k": "--k", "seed": "--seed", "device": "--device"}

# The default: θ0 pretrained for 2 epochs on at most 2,048 public images (ConvNet-16, SGD with momentum), which
# takes minutes on a 2-core CPU; the fine-tune, D_u and the unlearning are the paper's (ScenarioConfig defaults).
QUICK: dict[str, Any] = {
    "pretrain_rows": 2048,
    "pretrain": {"epochs": 2, "lr": 0.01, "momentum": 0.9, "weight_decay": 5e-4, "batch_size": 64,
                 "augment": False, "drop_last": True, "milestones": []},
}
# --paper: the official code's setting (docs/paper.md §5): ConvNet width 64, the first 10,000 training images held
# out as the private pool, θ0 pretrained on all the others for 120 epochs (SGD lr 0.1, no momentum, wd 5e-4,
# batch 128, crop + flip, ×0.1 at epochs 44/74/105).
PAPER: dict[str, Any] = {
    "model_kwargs": {"width": 64}, "holdout": 10_000, "pretrain_rows": None,
    "pretrain": {"epochs": 120, "lr": 0.1, "momentum": 0.0, "weight_decay": 5e-4, "batch_size": 128,
                 "augment": True, "drop_last": True, "milestones": [44, 74, 105]},
}


def _methods() -> str:
    from unlearnleak.unlearning import UNLEARNING

    return " | ".join(UNLEARNING.names())


def scenario_table(scn: Scenario) -> Table:
    """A summary table of a built scenario: sizes, forget set and the accuracies of θ0, θ, θ_u ("n/a" where
    the dataset has no test split)."""
    m = dict(scn.record.metrics)
    table = Table(title=f"Scenario: {scn.config.dataset}, {scn.config.model}, "
                        f"unlearning = {scn.config.unlearning.method}")
    table.add_column("")
    table.add_column("θ0 (base)", justify="right")
    table.add_column("θ (original)", justify="right")
    table.add_column("θ_u (unlearned)", justify="right")
    for label, key in [("test accuracy", "test_accuracy"), ("accuracy on D_u", "forget_accuracy"),
                       ("accuracy on D_ft \\ D_u", "retain_accuracy")]:
        table.add_row(label, *(_accuracy(m.get(f"{w}_{key}")) for w in ("base", "original", "unlearned")))
    table.caption = (f"N = |D_ft| = {scn.knowledge.n_train}, k = |D_u| = {scn.knowledge.n_forget}, "
                     f"D_u labels = {list(scn.record.forget_labels)}, D_u rows = {list(scn.record.forget_indices)}")
    return table


def _accuracy(value: Any) -> str:
    return "n/a" if not isinstance(value, int | float) or math.isnan(value) else f"{value:.3f}"


def chance_warning(scn: Scenario) -> str | None:
    """A warning when θ0 was pretrained (epochs > 0) yet its test accuracy cannot be told from chance (1/C):
    within two standard errors of it on this test set. None otherwise."""
    accuracy = dict(scn.record.metrics).get("base_test_accuracy")
    test = scn.test
    if scn.config.pretrain.epochs == 0 or not isinstance(accuracy, float) or math.isnan(accuracy) or test is None:
        return None
    chance = 1 / scn.pair.spec.num_classes
    n = len(test)
    bound = chance + 2 * math.sqrt(chance * (1 - chance) / max(n, 1))
    if accuracy > bound:
        return None
    return (f"warning: θ0's test accuracy {accuracy:.3f} is at chance ({chance:.3f} for "
            f"{scn.pair.spec.num_classes} classes, ≤ {bound:.3f} on {n} test rows): pretraining learnt nothing, "
            "so the attacks run on an untrained model; raise pretrain.epochs or pretrain.lr "
            "(e.g. --set pretrain.epochs=10) or pass --paper")


def _from_command_line(ctx: typer.Context, name: str) -> bool:
    """Whether the option ``name`` was typed (not left at its default, nor taken from the environment)."""
    source = ctx.get_parameter_source(name)
    return source is not None and source.name == "COMMANDLINE"


def register(app: typer.Typer) -> None:
    """Add the `scenario` command to ``app``."""

    @app.command("scenario")
    @handle_errors
    def scenario(
        ctx: typer.Context,
        out: Annotated[Path, typer.Option("--out", "-o", help="Run folder to write the model pair into.",
                                          show_default=False)],
        config: Annotated[Path | None, typer.Option(
            "--config", "-c", help="YAML ScenarioConfig (docs/scenario.md); its keys override the setting.",
            show_default=False)] = None,
        set_: Annotated[list[str] | None, typer.Option(
            "--set", help="Override any key, e.g. --set n_train=64 --set pretrain.epochs=10 (repeatable).",
            show_default=False)] = None,
        paper: Annotated[bool, typer.Option(
            "--paper", help="Start from the paper's setting instead of the quick one: ConvNet width 64, "
                            "10,000 held-out images, θ0 pretrained 120 epochs on all the others (hours on a "
                            "CPU; a GPU is advised). Default: quick, θ0 pretrained 2 epochs on 2,048 public "
                            "images (minutes on 2 CPU cores).")] = False,
        dataset: Annotated[str, typer.Option(help="Dataset name (see `unlearnleak data list`).")] = "cifar10",
        data_dir: Annotated[str | None, typer.Option(
            help="Folder holding the dataset files (default: $UNLEARNLEAK_DATA_DIR, else ./data).",
            show_default=False)] = None,
        model: Annotated[str, typer.Option(help="Model name (convnet, resnet18, lenet, mlp, …) or "
                                                "'module:Class'.")] = "convnet",
        method: Annotated[str, typer.Option(help=f"Unlearning method: {_methods()} (docs/unlearning_methods.md)."
                                            )] = "gradient_ascent",
        n_train: Annotated[int, typer.Option(help="N, the size of the fine-tuning set D_ft.")] = 32,
        k: Annotated[int, typer.Option(help="k, how many samples of D_ft to unlearn.")] = 1,
        seed: Annotated[int, typer.Option(help="Seed for every random choice.")] = 0,
        device: Annotated[str, typer.Option(help="cpu or cuda.")] = "cpu",
        overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing run folder --out.")]
        = False,
    ) -> None:
        """Pretrain θ0 (cached), fine-tune θ on D_ft, unlearn D_u, and save the ModelPair with its manifest.

        Everything is checked before training (config, data, model fit, forget set, --out); the run folder
        is written whole or not at all. A flag given on the command line wins over --config and --set; a
        flag left at its default does not override them.
        """
        given = {name for name in ("dataset", "data_dir", "model", "method", "n_train", "k", "seed", "device")
                 if _from_command_line(ctx, name)}
        if "device" in given:
            check_device_flag(device)
        keys = {"dataset": "dataset", "data_dir": "data_dir", "model": "model", "method": "unlearning.method",
                "n_train": "n_train", "k": "forget.k", "seed": "seed", "device": "device"}
        flag_values = {"dataset": dataset, "data_dir": data_dir, "model": model, "method": method,
                       "n_train": n_train, "k": k, "seed": seed, "device": device}
        values = {keys[name]: flag_values[name] for name in given}
        from unlearnleak.storage import check_output_folder, output_folder

        cfg = load_config(ScenarioConfig, config, list(set_ or []), base=copy.deepcopy(PAPER if paper else QUICK),
                          flags=FLAGS, values=values)
        # a config file (or --set) never runs code; --model names it on the command line (docs/security.md)
        check_named_code([("model", cfg.model)], [model] if model and names_code(model) else [],
                         "scenario config", flag="--model")
        check_output_folder(out, overwrite=overwrite)
        scn = build_scenario(cfg, plan_scenario(cfg))
        with output_folder(out, overwrite=overwrite) as staged:
            scn.save(staged)
        output_console().print(scenario_table(scn))
        warning = chance_warning(scn)
        if warning:
            print(warning, file=sys.stderr)
        typer.echo(f"model pair written to {out}")
