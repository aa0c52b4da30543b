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

from unlearnleak.commands.common import (
    DATA_DIR_HELP,
    EXIT_NO_VERDICT,
    GRADIENT_SKETCH_HELP,
    PUBLIC_DATA_HELP,
    check_gradient_sketch,
    handle_errors,
    label_config,
    recovery_config,
)

ENDPOINT_TIMEOUT = 60.0  # seconds for one request, from connecting to the last byte, retries included
MAX_ENDPOINT_TIMEOUT = 3600.0
ENDPOINT_DEADLINE = 6 * 3600.0  # seconds for all the requests of one black-box audit
MAX_INPUT_VALUES = 1 << 24  # values in one input row (3×2365×2365): beyond, a typo rather than a model
MAX_CLASSES = 1_000_000

WHITE_BOX_ONLY = frozenset({"--model-kwargs", "--base", "--train-size", "--forget-size", "--unlearning", "--mean",
                            "--std", "--labels", "--preset", "--iterations", "--restarts", "--time-budget",
                            "--ground-truth", "--device"})
BLACK_BOX_ONLY = frozenset({"--budget", "--rate-limit", "--endpoint-outputs", "--endpoint-timeout",
                            "--endpoint-deadline", "--redirects"})


def mode_options(*, white: bool, black: bool, given: dict[str, object], label_options: dict[str, object],
                 per_class: int | None) -> None:
    """Refuse options that do not apply in the audit's mode (files: white-box; endpoints: black-box)."""
    from unlearnleak.errors import ConfigError

    if white == black:
        raise ConfigError("give either files (--model-def, --original, --unlearned) or endpoints "
                          "(--original-endpoint, --unlearned-endpoint), not both and not neither")
    stray = sorted(flag for flag, value in given.items()
                   if value is not None and flag in (BLACK_BOX_ONLY if white else WHITE_BOX_ONLY))
    if stray:
        mode, why = (("black-box", "they concern the endpoints, and this audit reads files") if white else
                     ("white-box", "they concern the files or the feature recovery, and this audit queries "
                                   "endpoints"))
        raise ConfigError(f"{', '.join(stray)} {'applies' if len(stray) == 1 else 'apply'} only to a {mode} audit "
                          f"({why}); remove {'it' if len(stray) == 1 else 'them'}")
    unused = sorted(flag for flag, value in label_options.items() if value is not None)
    if per_class == 0 and unused:
        raise ConfigError(f"{', '.join(unused)} set the label inference, which --per-class 0 skips; remove "
                          f"{'it' if len(unused) == 1 else 'them'} or give --per-class >= 1")


def check_seconds(value: float | None, flag: str, default: float, most: float | None) -> float:
    """``value`` (or ``default``) as a finite number of seconds > 0 (and <= ``most``)."""
    from unlearnleak.errors import ConfigError

    if value is None:
        return default
    if not (math.isfinite(value) and value > 0) or (most is not None and value > most):
        bound = f" and at most {most:g}" if most is not None else ""
        raise ConfigError(f"{flag} must be a finite number of seconds > 0{bound}, got {value}")
    return value


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


AUTO_NOTE = "label verdict calibrated with auto (other models' null pairs: its level is not guaranteed here)"


def own_null_rows(public: Any, num_classes: int) -> tuple[tuple[Any, Any] | None, str | None]:
    """The labelled public rows (x, y) a white-box audit makes θ's own null pairs on — those of a registered
    dataset given as --public-data — or None and a note saying why the label verdict rests on ``auto``."""
    if public is None:
        return None, (f"{AUTO_NOTE}: own null pairs of θ need labelled public rows; pass --public-data NAME, "
                      "the model's own dataset (e.g. cifar10[8000:], rows outside the fine-tuning data)")
    if public.y is None:
        return None, (f"{AUTO_NOTE}: own null pairs of θ need labelled public rows, and --public-data is a "
                      "folder of unlabelled images; pass a registered dataset NAME with the model's labels")
    if public.y.numel() and int(public.y.max()) >= num_classes:
        return None, (f"{AUTO_NOTE}: own null pairs of θ need public rows labelled with the model's classes, "
                      f"and --public-data's labels reach {int(public.y.max())} (--num-classes {num_classes}); "
                      "pass the model's own dataset")
    return (public.x, public.y), None


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
        endpoint_outputs: Annotated[str | None, typer.Option(
            help="Black-box: what the endpoints return: probabilities (default) | logits.")] = None,
        budget: Annotated[int | None, typer.Option(help="Black-box: query budget per endpoint (input rows).")]
        = None,
        rate_limit: Annotated[float | None, typer.Option(
            help="Black-box: most requests per second per endpoint (>= 0.01).")] = None,
        endpoint_timeout: Annotated[float | None, typer.Option(
            help=f"Black-box: seconds for one request, retries included (default {ENDPOINT_TIMEOUT:g}).")] = None,
        endpoint_deadline: Annotated[float | None, typer.Option(
            help=f"Black-box: seconds for all requests of the audit (default {ENDPOINT_DEADLINE:g}).")] = None,
        redirects: Annotated[str | None, typer.Option(
            help="Black-box: none (default: a redirect is an error) | same-origin.")] = None,
        preset: Annotated[str | None, typer.Option(
            help="Feature-recovery preset: best (races recipes, default) | paper | modern | smooth | tabular.")]
        = None,
        iterations: Annotated[int | None, typer.Option(help="Feature-recovery steps (preset default).")] = None,
        restarts: Annotated[int | None, typer.Option(help="Feature-recovery restarts (preset default).")] = None,
        time_budget: Annotated[float | None, typer.Option(help="Seconds for the feature-recovery optimisation.")]
        = None,
        generator: Annotated[str | None, typer.Option(help="Label-inference probe generator: nes (default) | zoo.")]
        = None,
        per_class: Annotated[int | None, typer.Option(
            help="Label-inference probes per class (default 10; 0: skip).")] = None,
        max_seconds: Annotated[float | None, typer.Option(help="Stop making probes after this long.")] = None,
        set_: Annotated[list[str] | None, typer.Option(
            "--set", help="Probe-generator parameter, e.g. --set max_steps=50 (docs/label_inference.md).")] = None,
        seed: Annotated[int, typer.Option(help="Seed of both attacks.")] = 0,
        ground_truth: Annotated[Path | None, typer.Option(
            help="safetensors with the deleted 'images' (or 'rows') and 'labels', to score the recovery.")] = None,
        device: Annotated[str | None, typer.Option(help="White-box: cpu (default) or cuda.")] = None,
        overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing results folder.")]
        = False,
        as_json: Annotated[bool, typer.Option(
            "--json", help="Print one JSON summary (verdict lines, report path, partial or not) instead.")]
        = False,
        public_data: Annotated[str | None, typer.Option(help=f"White-box. {PUBLIC_DATA_HELP}")] = None,
        data_dir: Annotated[Path | None, typer.Option(help=DATA_DIR_HELP)] = None,
        gradient_sketch: Annotated[int | None, typer.Option(help=f"White-box. {GRADIENT_SKETCH_HELP}")] = None,
    ) -> None:
        """Audit your own unlearning: attack your pair (files, white-box) or your endpoints (black-box).

        Exit status: 0 done, 2 bad input, 3 the black-box label inference has no verdict (a class lacks probes;
        the report and the other results are kept), 130 interrupted.
        """
        import torch

        from unlearnleak.attacks.feature_recovery.facade import FeatureRecovery
        from unlearnleak.attacks.label_inference.facade import LabelInference
        from unlearnleak.audit import pair_from_files, read_ground_truth, run_audit
        from unlearnleak.audit.checkpoint import check_ground_truth
        from unlearnleak.devices import check_device
        from unlearnleak.errors import ConfigError
        from unlearnleak.knowledge import ServerKnowledge
        from unlearnleak.oracle_http import HttpOracle, check_rate_limit
        from unlearnleak.safe_http import REDIRECT_POLICIES, Deadline
        from unlearnleak.storage import check_output_folder, output_folder

        mode_options(white=any(v is not None for v in (model_def, original, unlearned)),
                     black=any(v is not None for v in (original_endpoint, unlearned_endpoint)),
                     given={"--model-kwargs": model_kwargs, "--base": base, "--train-size": train_size,
                            "--forget-size": forget_size, "--unlearning": unlearning, "--mean": mean, "--std": std,
                            "--labels": labels, "--preset": preset, "--iterations": iterations,
                            "--restarts": restarts, "--time-budget": time_budget, "--ground-truth": ground_truth,
                            "--device": device, "--budget": budget, "--rate-limit": rate_limit,
                            "--endpoint-outputs": endpoint_outputs, "--endpoint-timeout": endpoint_timeout,
                            "--endpoint-deadline": endpoint_deadline, "--redirects": redirects},
                     label_options={"--generator": generator, "--set": set_ or None, "--max-seconds": max_seconds},
                     per_class=per_class)
        white = original_endpoint is None and unlearned_endpoint is None
        device = check_device(device or "cpu")
        check_output_folder(out, overwrite=overwrite)
        shape = parse_ints(input_shape, "--input-shape", low=1)
        if (shape is None) == (features is None):
            raise ConfigError("describe the input with exactly one of --input-shape C,H,W or --features D")
        if shape is not None and len(shape) != 3:
            raise ConfigError(f"--input-shape must be C,H,W (three integers), got {input_shape!r}")
        if features is not None and features < 1:
            raise ConfigError(f"--features must be >= 1, got {features}")
        dims = shape if shape is not None else (int(features or 0),)
        if math.prod(dims) > MAX_INPUT_VALUES:
            raise ConfigError(f"one input of shape {dims} holds {math.prod(dims):,} values, more than the "
                              f"{MAX_INPUT_VALUES:,} the audit accepts; check --input-shape / --features")
        if num_classes is None or not 2 <= num_classes <= MAX_CLASSES:
            raise ConfigError(f"--num-classes must be given, between 2 and {MAX_CLASSES:,}, got {num_classes}")
        known_labels = parse_ints(labels, "--labels")
        if known_labels is not None and any(v >= num_classes for v in known_labels):
            raise ConfigError(f"--labels must lie in [0, {num_classes}), got {labels!r}")
        if unlearning not in (None, "exact", "approximate"):
            raise ConfigError(f"--unlearning must be exact or approximate, got {unlearning!r}")
        check_gradient_sketch(gradient_sketch, public_data)  # also where no recovery config is built (black-box)
        if public_data is not None:
            if not white:
                raise ConfigError("--public-data feeds the white-box feature recovery; give the model files "
                                  "(--model-def, --original, --unlearned) or drop --public-data")
            if shape is None:
                raise ConfigError("--public-data: the learned prior decodes images; this model takes table rows "
                                  "(--features), so drop --public-data")
        label_attack = None
        if per_class != 0 and num_classes < 3:  # calibration.gap_statistic: T = 0 with fewer than two others
            fix = "give --per-class 0 to run the feature recovery alone" if white else \
                "a black-box audit of this model has nothing to run"
            raise ConfigError(f"--num-classes {num_classes}: the label test weighs the deleted class's drop against "
                              f"the spread of at least two other classes' drops, so with {num_classes} classes it "
                              f"could never detect a leak; {fix}")
        if per_class != 0:
            from unlearnleak.attacks.label_inference import PROBE_GENERATORS

            label_settings = label_config("audit", generator=generator, per_class=per_class, seed=seed,
                                          max_seconds=max_seconds, device=device, sets=set_)
            generator = label_settings.generator
            probes = PROBE_GENERATORS.get(generator)
            if not probes.black_box or probes.needs_public:
                usable = [n for n in PROBE_GENERATORS.names() if PROBE_GENERATORS.get(n).black_box
                          and not PROBE_GENERATORS.get(n).needs_public]
                missing = "the weights" if not probes.black_box else "public data"
                raise ConfigError(f"--generator {generator} needs {missing}, which the audit's label inference "
                                  f"(queries only) does not have; use one of {', '.join(usable)}")
            if probes.image_only and len(dims) != 3:
                raise ConfigError(f"--generator {generator} needs image inputs (--input-shape C,H,W); for --features "
                                  "use --generator zoo")
            label_attack = LabelInference(label_settings)
        inputs: dict[str, Any] = {"model_def": model_def, "model_kwargs": parse_kwargs(model_kwargs),
                                  "original": str(original) if original else original_endpoint,
                                  "unlearned": str(unlearned) if unlearned else unlearned_endpoint,
                                  "input_shape": list(dims), "num_classes": num_classes, "budget": budget,
                                  "mean": mean, "std": std,
                                  "ground_truth": str(ground_truth) if ground_truth else None}
        if white:
            if model_def is None or original is None or unlearned is None:
                raise ConfigError("a white-box audit needs --model-def, --original and --unlearned")
            declared = {"n_train": train_size, "n_forget": forget_size, "unlearning": unlearning,
                        "labels": known_labels}
            try:
                ServerKnowledge(**declared)  # type: ignore[arg-type]  # checked before any model is built
            except Exception as exc:
                raise ConfigError(f"--train-size/--forget-size/--labels: {exc}") from None
            feature_settings = recovery_config("audit", preset=preset, iterations=iterations, restarts=restarts,
                                               seed=seed, time_budget=time_budget, device=device, k=forget_size,
                                               public_data=public_data, gradient_sketch=gradient_sketch,
                                               flags={"k": "--forget-size"})
            learned = None
            if feature_settings.learned_prior is not None:  # read and checked before any model is built
                from unlearnleak.attacks.feature_recovery.learned_prior import learned_prior_for

                learned = learned_prior_for(feature_settings.learned_prior, data_dir=data_dir, input_shape=dims,
                                            flag="--public-data")
                inputs["public_data"] = learned.data.describe()
            own_rows, calibration_note = own_null_rows(learned.data if learned is not None else None,
                                                       num_classes)
            if label_attack is not None:
                label_attack = LabelInference(label_attack.config.model_copy(
                    update={"calibration": "auto" if own_rows is None else "own_nulls"}))
            feature = FeatureRecovery(feature_settings, learned_prior=learned)
            truth = read_ground_truth(ground_truth) if ground_truth is not None else None
            if truth is not None:
                check_ground_truth(truth, dims, num_classes, forget_size, f"--ground-truth {ground_truth}")
            pair, theta0 = pair_from_files(
                model_def, original=original, unlearned=unlearned, input_shape=dims, num_classes=num_classes,
                mean=parse_floats(mean, "--mean"), std=parse_floats(std, "--std", positive=True),
                model_kwargs=inputs["model_kwargs"], base=base)
            try:
                knowledge = ServerKnowledge(base=theta0, **declared)  # type: ignore[arg-type]
            except Exception as exc:
                raise ConfigError(f"--base/--train-size/--forget-size/--labels: {exc}") from None
            with output_folder(out, overwrite=overwrite) as staged:
                outcome = run_audit(staged, pair=pair, knowledge=knowledge, feature_recovery=feature,
                                    label_inference=label_attack, ground_truth=truth, inputs=inputs,
                                    own_nulls=own_rows, calibration_note=calibration_note)
        else:
            if original_endpoint is None or unlearned_endpoint is None:
                raise ConfigError("a black-box audit needs --original-endpoint and --unlearned-endpoint")
            if label_attack is None:
                raise ConfigError("a black-box audit runs label inference: --per-class must be >= 1")
            if budget is not None and budget < 1:
                raise ConfigError(f"--budget must be >= 1 input row per endpoint (leave it out for no limit), "
                                  f"got {budget}")
            check_rate_limit(rate_limit)
            timeout = check_seconds(endpoint_timeout, "--endpoint-timeout", ENDPOINT_TIMEOUT, MAX_ENDPOINT_TIMEOUT)
            seconds = check_seconds(endpoint_deadline, "--endpoint-deadline", ENDPOINT_DEADLINE, None)
            if endpoint_outputs not in (None, "probabilities", "logits"):
                raise ConfigError(f"--endpoint-outputs must be probabilities or logits, got {endpoint_outputs!r}")
            if redirects not in (None, *REDIRECT_POLICIES):
                raise ConfigError(f"--redirects must be one of {', '.join(REDIRECT_POLICIES)}, got {redirects!r}")
            deadline = Deadline(seconds, f"--endpoint-deadline {seconds:g} s")
            oracles = [HttpOracle(url, num_classes=num_classes, input_shape=dims, budget=budget,
                                  rate_limit=rate_limit, outputs=endpoint_outputs or "probabilities", flag=flag,
                                  timeout=timeout, deadline=deadline,
                                  redirects="same-origin" if redirects == "same-origin" else "none")
                       for url, flag in ((original_endpoint, "--original-endpoint"),
                                         (unlearned_endpoint, "--unlearned-endpoint"))]
            for oracle in oracles:
                oracle.check()  # reachable, V2 metadata (not a query)
                oracle.predict_proba(torch.zeros(1, *dims))  # answers the right shape: one counted query
            with output_folder(out, overwrite=overwrite) as staged:
                outcome = run_audit(staged, original_oracle=oracles[0], unlearned_oracle=oracles[1],
                                    label_inference=label_attack, inputs=inputs,
                                    calibration_note=f"{AUTO_NOTE}: own null pairs need θ's weights, which a "
                                                     "black-box audit does not have")
        if as_json:
            typer.echo(json.dumps({"out": str(out), "report": str(out / "report.json"),
                                   "page": str(out / "report.html"), "verdict": outcome.verdict,
                                   "partial": outcome.report.get("partial"),
                                   "partial_reason": outcome.report.get("partial_reason")}))
        else:
            for line in outcome.verdict:
                typer.echo(line)
            typer.echo(f"report written to {out / 'report.json'} (page: {out / 'report.html'})")
        if outcome.interrupted:
            typer.echo("interrupted: the finished stages are kept, marked partial", err=True)
            raise typer.Exit(130)
        if outcome.labels is not None and outcome.labels.guess is not None and not outcome.labels.guess.has_verdict:
            raise typer.Exit(EXIT_NO_VERDICT)  # label inference could give no verdict (classes lack probes)

