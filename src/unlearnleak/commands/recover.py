"""`unlearnleak recover`: run the server's feature-recovery attack on a saved ModelPair folder.

The attack reads only ``manifest.json`` and ``weights.safetensors``. When the folder also holds
``ground_truth.safetensors`` (written by `unlearnleak scenario`), the *evaluation* step reads it afterwards
to score the reconstruction; the attack itself never sees it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from unlearnleak.commands.common import (
    DATA_DIR_HELP,
    GRADIENT_SKETCH_HELP,
    PUBLIC_DATA_HELP,
    check_device_flag,
    handle_errors,
    recovery_config,
)
from unlearnleak.experiments.console import output_console

GROUND_TRUTH_FILE = "ground_truth.safetensors"


def _parse_labels(text: str | None) -> list[int] | None:
    from unlearnleak.errors import ConfigError

    if text is None or text.strip().lower() in ("", "infer", "inferred"):
        return None
    try:
        return [int(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        raise ConfigError(f"--labels must be comma-separated class indices (e.g. 3,5) or 'infer', "
                          f"got {text!r}") from None


def _load_ground_truth(folder: Path) -> tuple[Any, Any] | None:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from unlearnleak.errors import CheckpointError

    path = folder / GROUND_TRUTH_FILE
    if not path.is_file():
        return None
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{path} is not a readable safetensors file: {exc}") from exc
    if "forget_x" not in tensors or "forget_y" not in tensors:
        raise CheckpointError(f"{path} lacks forget_x / forget_y")
    return tensors["forget_x"], tensors["forget_y"]


def _tabular_transform(metadata: dict[str, Any]) -> Any:
    """The dataset transform named by the pair's recorded config (for errors in original units), or None."""
    from unlearnleak.data import load_dataset
    from unlearnleak.errors import UnlearnleakError

    config = metadata.get("config")
    if not isinstance(config, dict) or "dataset" not in config:
        return None
    try:
        data = load_dataset(config["dataset"], "train", config.get("data_dir"), **config.get("dataset_options", {}))
    except UnlearnleakError:
        return None
    return data.transform


def run_recover(pair_dir: Path, out: Path, *, preset: str | None = None, labels: list[int] | None = None,
                iterations: int | None = None, restarts: int | None = None, mode: str | None = None,
                k: int | None = None, device: str = "cpu", seed: int = 0, time_budget: float | None = None,
                overrides: list[str] | None = None, evaluate: bool = True,
                lpips_path: str | None = None, overwrite: bool = False,
                model_def: str | None = None, public_data: str | None = None,
                data_dir: str | Path | None = None, gradient_sketch: int | None = None) -> dict[str, Any]:
    """Check every input, then attack the pair in ``pair_dir`` through the pipeline and publish ``out``.

    The attack's options become its one config (``commands.common.recovery_config``: a refused value is
    reported under its flag; None: the config's default). Every input (the options, the output folder, the
    pair, the ground truth, the LPIPS weights) is checked before the attack starts; ``out`` is then written
    whole, or not at all (``pipeline.publish_recovery``).
    """
    from unlearnleak.attacks.feature_recovery.learned_prior import learned_prior_for
    from unlearnleak.attacks.feature_recovery.target_gradient import resolve_mode
    from unlearnleak.errors import CheckpointError, ConfigError
    from unlearnleak.experiments.pipeline import publish_recovery, recover_and_evaluate
    from unlearnleak.metrics import load_lpips
    from unlearnleak.pair import load_pair_folder
    from unlearnleak.record import RunRecord
    from unlearnleak.storage import check_output_folder

    started = time.perf_counter()
    spec = recovery_config("recover", preset=preset, iterations=iterations, restarts=restarts, mode=mode, k=k,
                           device=device, seed=seed, time_budget=time_budget, sets=overrides,
                           public_data=public_data, gradient_sketch=gradient_sketch)
    check_output_folder(out, overwrite=overwrite)
    pair, knowledge = load_pair_folder(pair_dir, model_def=model_def)
    image = len(pair.spec.input_shape) == 3
    resolve_mode(knowledge, spec.mode)  # `exact` without θ0, N and k
    if not image and spec.preset == "best":
        spec = spec.model_copy(update={"preset": "tabular"})  # what `best` means for table rows (recorded so)
    _check_k_and_labels(pair, knowledge, k, labels)
    learned = None
    if spec.learned_prior is not None:
        if not image:
            raise ConfigError("--public-data: the learned prior decodes images; this pair's model takes table rows, "
                              "so drop --public-data")
        learned = learned_prior_for(spec.learned_prior, data_dir=data_dir, input_shape=pair.spec.input_shape,
                                    flag="--public-data")
    truth = _load_ground_truth(pair_dir) if evaluate else None
    lpips = None
    if lpips_path is not None or (image and truth is not None):
        try:
            lpips = load_lpips(lpips_path)
        except CheckpointError as exc:
            if lpips_path is None:
                raise
            raise ConfigError(f"--lpips {lpips_path}: {exc}; give the LPIPS weights file "
                              "(see docs/metrics.md) or omit --lpips") from exc
    transform = None
    if truth is not None and not image:
        record = RunRecord.load(pair_dir)
        transform = _tabular_transform(dict(record.config) if record else {})
    ev = recover_and_evaluate(pair, knowledge, spec, truth, lpips=lpips, labels=labels, transform=transform,
                              learned_prior=learned)
    pair_record = RunRecord.load(pair_dir, ground_truth=False)  # the setting's names only, never D_u
    header = {"format": "unlearnleak.recover/1", "pair": str(pair_dir), "preset": spec.preset, "seed": seed,
              "scenario": pair_record.scenario_summary() if pair_record else {},
              "labels_given": labels, "learned_prior": ev.reconstruction.config.get("learned_prior"),
              "decoder_alone": ev.decoder_alone()}
    return publish_recovery(out, ev, truth=truth, header=header, started=started, overwrite=overwrite)


def _check_k_and_labels(pair: Any, knowledge: Any, k: int | None, labels: list[int] | None) -> None:
    """--k against the pair's N, --labels against k and the number of classes (before any computation)."""
    from unlearnleak.errors import ConfigError

    n = knowledge.n_train
    if k is not None and n is not None and k >= n:
        raise ConfigError(f"--k {k}: the pair's fine-tuning set has N = {n} rows, so at most {n - 1} can have "
                          f"been unlearned; give --k below {n} (or omit it to use the declared k = "
                          f"{knowledge.n_forget})")
    if labels is None:
        return
    expected = k or knowledge.n_forget or len(labels)
    if len(labels) != expected:
        raise ConfigError(f"--labels: {len(labels)} labels given for k = {expected} unlearned samples; give one "
                          "label per sample (comma-separated) or omit --labels to infer them")
    classes = pair.spec.num_classes
    if any(not 0 <= c < classes for c in labels):
        raise ConfigError(f"--labels: every label must lie in [0, {classes}) for this {classes}-class model, "
                          f"got {labels}")


BASELINE_ROWS = (("dataset_mean_colour", "baseline: the dataset's mean colour"),
                 ("own_mean_colour", "baseline: the photo's own mean colour"),
                 ("thumbnail_4x4", "baseline: a 4×4 thumbnail of the photo"),
                 ("feature_mean", "baseline: the feature-mean row"))


def _summary_table(results: dict[str, Any]) -> Table:
    """Per recovered sample its scores and labels, their mean, and the same scores of each trivial baseline."""
    rec = results["reconstruction"]
    table = Table(title=f"Feature recovery ({rec['preset']}, ∇* {rec['target_mode']}, "
                        f"labels {rec['label_source']})")
    evaluation = results.get("evaluation")
    if evaluation is None:
        table.add_column("sample")
        table.add_column("label", justify="right")
        for i, label in enumerate(rec["labels"]):
            table.add_row(str(i), str(label))
        table.caption = "no ground truth in the pair folder: nothing to evaluate"
        return table
    keys = [k for k in ("psnr", "ssim", "lpips", "mse", "max_abs_error") if k in evaluation["samples"][0]]
    table.add_column("sample")
    for key in keys:
        table.add_column(key, justify="right")
    table.add_column("label (true)", justify="right")
    for s in evaluation["samples"]:
        table.add_row(str(s["index"]), *(_fmt(s.get(key)) for key in keys),
                      f"{s['label']} ({s['true_label']}){'' if s['label_correct'] else ' ✗'}")
    table.add_row("mean", *(_fmt(evaluation["mean"].get(key)) for key in keys),
                  f"{evaluation['label_accuracy']:.0%} right")
    baselines = results.get("baselines") or {}
    for name, title in BASELINE_ROWS:
        if name in baselines:
            table.add_row(title, *(_fmt(baselines[name].get(key)) for key in keys), "")
    table.caption = f"{rec['iterations']} iterations, {rec['seconds']:.1f} s, best restart {rec['best_restart']}"
    return table


def _learned_prior_line(results: dict[str, Any]) -> str:
    from unlearnleak.attacks.feature_recovery.learned_prior import FEATURES_ONLY

    record = results.get("learned_prior") or {}
    if record.get("status") != "on":
        return f"learned prior: off — {record.get('reason', 'no public data given')}"
    alone = results.get("decoder_alone")
    scored = f"; the decoded image alone: PSNR {_fmt(alone.get('psnr'))} dB" if alone else ""
    reads = record.get("inputs", FEATURES_ONLY)
    extra = "" if reads == FEATURES_ONLY else f"; it reads {reads}"
    return f"learned prior: on (decoder trained on {record.get('decoder_model')}'s features, " \
           f"cache {record.get('decoder', {}).get('cache')}{extra}){scored}"


def recovery_entry(results: dict[str, Any]) -> dict[str, Any] | None:
    """The run row's ``feature_recovery`` entry that `recover` wrote (``results.jsonl``, and the same in
    ``results.json``), for the shared verdict; None when nothing was scored (no ground truth)."""
    entry = results.get("feature_recovery")
    return entry if isinstance(entry, dict) and entry.get("metrics") is not None else None


def summary(results: dict[str, Any], folder: Path) -> dict[str, Any]:
    """What `recover --json` prints: the folder, the verdict in words and the numbers behind it."""
    from unlearnleak.verdicts import feature_recovery_verdict, gradient_label_phrase

    entry = recovery_entry(results)
    verdict = feature_recovery_verdict(entry)
    evaluation = results.get("evaluation") or {}
    return {"out": str(folder), "files": sorted(p.name for p in folder.iterdir()),
            "verdict": None if verdict is None else verdict.sentence,
            "leaked": None if verdict is None else verdict.leaked, "level": None if verdict is None else verdict.level,
            "below_baselines": None if verdict is None else list(verdict.below),
            "labels": gradient_label_phrase(evaluation.get("label_accuracy"), len(evaluation.get("samples") or [])
                                            or None),
            "mean": evaluation.get("mean"), "label_accuracy": evaluation.get("label_accuracy"),
            "baselines": results.get("baselines"), "seconds": results.get("total_seconds"),
            "learned_prior": _learned_prior_line(results), "decoder_alone": results.get("decoder_alone")}


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def register(app: typer.Typer) -> None:
    """Add the `recover` command to ``app``."""

    @app.command("recover")
    @handle_errors
    def recover_command(
        pair_dir: Annotated[Path, typer.Argument(help="ModelPair folder (manifest.json + weights.safetensors).")],
        out: Annotated[Path | None, typer.Option("--out", "-o", help="Output folder (default PAIR/recovery).")]
        = None,
        preset: Annotated[str | None, typer.Option(
            help="Inversion preset: best (races paper, modern, smooth; the default) | paper | modern | smooth | "
                 "tabular.")] = None,
        labels: Annotated[str | None, typer.Option(
            help="Known labels, comma-separated (e.g. 3,5); default: inferred from the gradient.")] = None,
        iterations: Annotated[int | None, typer.Option(help="Optimisation steps (preset default).")] = None,
        restarts: Annotated[int | None, typer.Option(help="Restarts, run as one batch (preset default).")] = None,
        mode: Annotated[str | None, typer.Option(
            help="Target gradient: auto (the default) | approximate (θ_u − θ) | exact (needs θ0, N, k).")] = None,
        k: Annotated[int | None, typer.Option(help="Number of unlearned samples (default: the pair's).")] = None,
        device: Annotated[str, typer.Option(help="cpu or cuda.")] = "cpu",
        seed: Annotated[int, typer.Option(help="Seed for the restarts' starting points.")] = 0,
        time_budget: Annotated[float | None, typer.Option(help="Seconds for the optimisation (finite, > 0).")]
        = None,
        set_: Annotated[list[str] | None, typer.Option(
            "--set", help="Inversion override, e.g. --set bn_prior=0 --set lr=0.05.")] = None,
        no_eval: Annotated[bool, typer.Option("--no-eval", help="Do not read the ground truth.")] = False,
        lpips: Annotated[str | None, typer.Option(help="LPIPS weights file (default: found automatically).")]
        = None,
        overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing output folder.")]
        = False,
        model_def: Annotated[str | None, typer.Option(
            help="Accept a manifest naming this model code (file.py:Class or pkg.mod:Class); never implied.")]
        = None,
        public_data: Annotated[str | None, typer.Option(help=PUBLIC_DATA_HELP)] = None,
        data_dir: Annotated[Path | None, typer.Option(help=DATA_DIR_HELP)] = None,
        gradient_sketch: Annotated[int | None, typer.Option(help=GRADIENT_SKETCH_HELP)] = None,
        as_json: Annotated[bool, typer.Option(
            "--json", help="Print one JSON summary (verdict, means, baselines, folder) instead of the tables.")]
        = False,
    ) -> None:
        """Recover the unlearned samples from θ and θ_u (white-box server attack, docs/paper.md §2)."""
        check_device_flag(device)
        folder = out if out is not None else pair_dir / "recovery"
        results = run_recover(pair_dir, folder, preset=preset, labels=_parse_labels(labels),
                              iterations=iterations, restarts=restarts, mode=mode, k=k, device=device,
                              seed=seed, time_budget=time_budget, overrides=set_, evaluate=not no_eval,
                              lpips_path=lpips, overwrite=overwrite, model_def=model_def,
                              public_data=public_data, data_dir=data_dir, gradient_sketch=gradient_sketch)
        info = summary(results, folder)
        if as_json:
            typer.echo(json.dumps(info, allow_nan=False, default=_json_number))
            return
        output_console().print(_summary_table(results))
        if info["verdict"]:
            typer.echo(f"verdict: {info['verdict']}")
        if info["labels"]:
            typer.echo(info["labels"])
        typer.echo(_learned_prior_line(results))
        typer.echo(f"results written to {folder} ({', '.join(info['files'])})")


def _json_number(value: Any) -> Any:
    raise TypeError(f"not JSON: {value!r}")
