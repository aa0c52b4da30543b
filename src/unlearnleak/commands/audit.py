"""`unlearnleak audit`: what does my own pair (θ, θ_u) — files or endpoints — give away about the deleted data?

Everything is checked before anything is computed: the output folder, the model definition (the only code
that runs), the checkpoints (never unpickled beyond tensors), their shapes and values, the endpoints.
The results folder is written atomically: the whole folder or nothing (a Ctrl-C keeps the finished stages).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated, Any

import typer

from unlearnleak.commands.common import EXIT_NO_VERDICT, handle_errors


def parse_ints(text: str | None, flag: str, *, low: int = 0) -> tuple[int, ...] | None:
    """``"3,32,32"`` → (3, 32, 32), refusing anything else with a one-line error naming ``flag``."""
    from unlearnleak.errors import ConfigError

    if text is None:
        return None
    parts = [p.strip() for p in text.split(",")]
    try:
        values = tuple(int(p) for p in parts)
    except ValueError:
        raise ConfigError(f"{flag} must be comma-separated integers (e.g. 3,32,32), got {text!r}") from None
    if not values or any(v < low for v in values) or len(values) > 64:
        raise ConfigError(f"{flag} must be comma-separated integers >= {low}, got {text!r}")
    return values


def parse_floats(text: str | None, flag: str, *, positive: bool = False) -> tuple[float, ...] | None:
    """``"0.5,0.5,0.5"`` → floats, finite (and > 0 with ``positive``)."""
    from unlearnleak.errors import ConfigError

    if text is None:
        return None
    try:
        values = tuple(float(p) for p in text.split(","))
    except ValueError:
        raise ConfigError(f"{flag} must be comma-separated numbers (e.g. 0.5,0.5,0.5), got {text!r}") from None
    if not values or any(not math.isfinite(v) or (positive and v <= 0) for v in values):
        raise ConfigError(f"{flag} must be {'positive ' if positive else ''}finite numbers, got {text!r}")
    return values


def parse_kwargs(text: str | None) -> dict[str, Any]:
    """``--model-kwargs '{"width": 16}'`` → a dict."""
    from unlearnleak.errors import ConfigError

    if text is None:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"--model-kwargs must be a JSON object, e.g. '{{\"width\": 16}}': {exc}") from None
    if not isinstance(value, dict):
        raise ConfigError(f"--model-kwargs must be a JSON object, got {type(value).__name__}")
    return value


def register(app: typer.Typer) -> None:
    """Add the `audit` command to ``app``."""

    @app.command("audit")
    @handle_errors
    def audit_command(
        out: Annotated[Path, typer.Option("--out", "-o", help="Results folder (report.json, tensors, PNGs).")],
        model_def: Annotated[str | None, typer.Option(
            help="Your model class: path/to/file.py:Class or package.module:Class (the only code that runs).")]
        = None,
        model_kwargs: Annotated[str | None, typer.Option(help="JSON keyword arguments for the model class.")]
        = None,
        original: Annotated[Path | None, typer.Option(help="θ: safetensors or a torch state dict.")] = None,
        unlearned: Annotated[Path | None, typer.Option(help="θ_u: safetensors or a torch state dict.")] = None,
        base: Annotated[Path | None, typer.Option(help="θ0, the model θ was fine-tuned from (optional).")]
        = None,
        train_size: Annotated[int | None, typer.Option(help="N, the size of θ's training set (optional).")]
        = None,
        forget_size: Annotated[int | None, typer.Option(help="k, how many samples were unlearned (optional).")]
        = None,
        unlearning: Annotated[str | None, typer.Option(help="Kind of unlearning: exact | approximate.")] = None,
        input_shape: Annotated[str | None, typer.Option(help="Image input shape C,H,W (pixels in [0,1]).")]
        = None,
        features: Annotated[int | None, typer.Option(help="Tabular input: number of features D.")] = None,
        num_classes: Annotated[int | None, typer.Option(help="Number of classes K.")] = None,
        mean: Annotated[str | None, typer.Option(help="Input normalisation mean, per channel (e.g. 0.5,0.5,0.5).")]
        = None,
        std: Annotated[str | None, typer.Option(help="Input normalisation std, per channel.")] = None,
        labels: Annotated[str | None, typer.Option(help="Known labels of the deleted samples (e.g. 3,5).")]
        = None,
        original_endpoint: Annotated[str | None, typer.Option(
            help="Black-box: θ's V2 endpoint, e.g. http://host:8080/v2/models/original.")] = None,
        unlearned_endpoint: Annotated[str | None, typer.Option(help="Black-box: θ_u's V2 endpoint.")] = None,
        endpoint_outputs: Annotated[str, typer.Option(help="What the endpoints return: probabilities | logits.")]
        = "probabilities",
        budget: Annotated[int | None, typer.Option(help="Query budget per model (input rows).")] = None,
        rate_limit: Annotated[float | None, typer.Option(help="Most requests per second per endpoint.")] = None,
        preset: Annotated[str, typer.Option(
            help="Feature-recovery preset: best (adaptive) | paper | smooth | tabular.")] = "best",
        iterations: Annotated[int | None, typer.Option(help="Feature-recovery steps (preset default).")] = None,
        restarts: Annotated[int | None, typer.Option(help="Feature-recovery restarts (preset default).")] = None,
        time_budget: Annotated[float | None, typer.Option(help="Seconds for the feature-recovery optimisation.")]
        = None,
        generator: Annotated[str, typer.Option(help="Label-inference probe generator: nes | zoo.")] = "nes",
        per_class: Annotated[int, typer.Option(help="Label-inference probes per class (0: skip).")] = 5,
        max_seconds: Annotated[float | None, typer.Option(help="Stop making probes after this long.")] = None,
        set_: Annotated[list[str] | None, typer.Option(
            "--set", help="Probe-generator parameter, e.g. --set max_steps=50 (docs/label_inference.md).")] = None,
        seed: Annotated[int, typer.Option(help="Seed of both attacks.")] = 0,
        ground_truth: Annotated[Path | None, typer.Option(
            help="safetensors with the deleted 'images' (or 'rows') and 'labels', to score the recovery.")] = None,
        device: Annotated[str, typer.Option(help="cpu or cuda.")] = "cpu",
        overwrite: Annotated[bool, typer.Option(help="Replace an existing results folder.")] = False,
    ) -> None:
        """Audit your own unlearning: attack your pair (files, white-box) or your endpoints (black-box)."""
        import torch

        from unlearnleak.attacks.interface import (
            FeatureRecovery,
            FeatureRecoveryConfig,
            LabelInference,
            LabelInferenceConfig,
        )
        from unlearnleak.audit import pair_from_files, read_ground_truth, run_audit
        from unlearnleak.devices import check_device
        from unlearnleak.errors import ConfigError
        from unlearnleak.knowledge import ServerKnowledge
        from unlearnleak.oracle_http import HttpOracle
        from unlearnleak.storage import check_output_folder, output_folder

        check_device(device)
        check_output_folder(out, overwrite=overwrite)
        white = any(v is not None for v in (model_def, original, unlearned))
        black = any(v is not None for v in (original_endpoint, unlearned_endpoint))
        if white == black:
            raise ConfigError("give either files (--model-def, --original, --unlearned) or endpoints "
                              "(--original-endpoint, --unlearned-endpoint), not both and not neither")
        shape = parse_ints(input_shape, "--input-shape", low=1)
        if (shape is None) == (features is None):
            raise ConfigError("describe the input with exactly one of --input-shape C,H,W or --features D")
        if shape is not None and len(shape) != 3:
            raise ConfigError(f"--input-shape must be C,H,W (three integers), got {input_shape!r}")
        if features is not None and features < 1:
            raise ConfigError(f"--features must be >= 1, got {features}")
        if num_classes is None or num_classes < 2:
            raise ConfigError(f"--num-classes must be given and >= 2, got {num_classes}")
        dims = shape if shape is not None else (int(features or 0),)
        if per_class < 0:
            raise ConfigError(f"--per-class must be >= 0 (0 skips label inference), got {per_class}")
        known_labels = parse_ints(labels, "--labels")
        if known_labels is not None and any(v >= num_classes for v in known_labels):
            raise ConfigError(f"--labels must lie in [0, {num_classes}), got {labels!r}")
        if unlearning not in (None, "exact", "approximate"):
            raise ConfigError(f"--unlearning must be exact or approximate, got {unlearning!r}")
        label_attack = None
        if per_class:
            from unlearnleak.attacks.label_inference import PROBE_GENERATORS
            from unlearnleak.experiments.config import load_config

            params = load_config(PROBE_GENERATORS.get(generator).Config, None, list(set_ or [])).model_dump()
            label_attack = LabelInference(LabelInferenceConfig(generator=generator, per_class=per_class, seed=seed,
                                                               max_seconds=max_seconds, params=params))
        truth = read_ground_truth(ground_truth) if ground_truth is not None else None
        inputs: dict[str, Any] = {"model_def": model_def, "model_kwargs": parse_kwargs(model_kwargs),
                                  "original": str(original) if original else original_endpoint,
                                  "unlearned": str(unlearned) if unlearned else unlearned_endpoint,
                                  "input_shape": list(dims), "num_classes": num_classes, "budget": budget,
                                  "ground_truth": str(ground_truth) if ground_truth else None}
        if white:
            if model_def is None or original is None or unlearned is None:
                raise ConfigError("a white-box audit needs --model-def, --original and --unlearned")
            pair, theta0 = pair_from_files(
                model_def, original=original, unlearned=unlearned, input_shape=dims, num_classes=num_classes,
                mean=parse_floats(mean, "--mean"), std=parse_floats(std, "--std", positive=True),
                model_kwargs=inputs["model_kwargs"], base=base)
            try:
                knowledge = ServerKnowledge(base=theta0, n_train=train_size, n_forget=forget_size,
                                            unlearning=unlearning, labels=known_labels)  # type: ignore[arg-type]
            except Exception as exc:
                raise ConfigError(f"--base/--train-size/--forget-size/--labels: {exc}") from None
            feature = FeatureRecovery(FeatureRecoveryConfig(
                preset=preset, iterations=iterations, restarts=restarts, seed=seed, time_budget=time_budget,
                device=device, k=forget_size))
            with output_folder(out, overwrite=overwrite) as staged:
                outcome = run_audit(staged, pair=pair, knowledge=knowledge, feature_recovery=feature,
                               label_inference=label_attack, ground_truth=truth, inputs=inputs)
        else:
            if original_endpoint is None or unlearned_endpoint is None:
                raise ConfigError("a black-box audit needs --original-endpoint and --unlearned-endpoint")
            if label_attack is None:
                raise ConfigError("a black-box audit runs label inference: --per-class must be >= 1")
            oracles = [HttpOracle(url, num_classes=num_classes, input_shape=dims, budget=budget,
                                  rate_limit=rate_limit, outputs=endpoint_outputs, flag=flag)
                       for url, flag in ((original_endpoint, "--original-endpoint"),
                                         (unlearned_endpoint, "--unlearned-endpoint"))]
            for oracle in oracles:
                oracle.check()  # reachable, V2 metadata (not a query)
                oracle.predict_proba(torch.zeros(1, *dims))  # answers the right shape: one counted query
            with output_folder(out, overwrite=overwrite) as staged:
                outcome = run_audit(staged, original_oracle=oracles[0], unlearned_oracle=oracles[1],
                               label_inference=label_attack, inputs=inputs)
        for line in outcome.verdict:
            typer.echo(line)
        typer.echo(f"report written to {out / 'report.json'}")
        if outcome.interrupted:
            typer.echo("interrupted: the finished stages are kept, marked partial", err=True)
            raise typer.Exit(130)
        if outcome.labels is not None and outcome.labels.guess is not None and not outcome.labels.guess.has_verdict:
            raise typer.Exit(EXIT_NO_VERDICT)  # label inference could give no verdict (classes lack probes)

