"""`unlearnleak infer-label`: the user's label-inference attack (docs/paper.md §4) on a saved ModelPair.

The pair's two models are served as black-box oracles; the attack never sees their weights (except with
``--generator gradient``, the white-box variant, which reads θ's weights to make probes).
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from unlearnleak.commands.common import EXIT_NO_VERDICT, check_device_flag, handle_errors, label_config
from unlearnleak.experiments.console import output_console

STATISTIC_WORDS = {"log_odds": "log-odds", "probability": "probability"}


def guess_table(guess: Any, class_names: list[str] | None, deleted: list[int] | None) -> Table:
    """The ranked classes with their confidence changes, the guess and the queries spent (a guess with a
    verdict; without one, print ``guess.no_verdict_line()`` instead)."""
    names = class_names or [str(c) for c in range(len(guess.changes))]
    verdict = ", ".join(names[c] for c in guess.predicted) if guess.detected else "no significant change"
    table = Table(title=f"Label inference ({guess.generator} probes): {verdict}")
    table.add_column("rank", justify="right")
    table.add_column("class")
    statistic = STATISTIC_WORDS.get(guess.statistic, guess.statistic)
    table.add_column(f"mean change of the class's {statistic} (negative: fell)", justify="right")
    table.add_column("probes", justify="right")
    table.add_column("", justify="left")
    for rank, c in enumerate(guess.ranked, start=1):
        change = guess.changes[c]
        marks = []
        if c in guess.significant:
            marks.append("significant")
        if deleted and c in deleted:
            marks.append("deleted (ground truth)")
        table.add_row(str(rank), f"{c} {names[c]}" if class_names else str(c),
                      "—" if math.isnan(change) else f"{change:+.3e}", str(guess.probe_counts[c]), ", ".join(marks))
    level = "uncalibrated threshold" if guess.level is None else f"false-detection level {guess.level:g}"
    p_value = "" if guess.p_value is None else f", p = {guess.p_value:.2g}"
    queries = f"queries: {guess.queries_original} to θ, {guess.queries_unlearned} to θ_u"
    if guess.calibration == "own_nulls" and guess.threshold is not None:  # standardised units: say it in words
        table.caption = (f"{level}{p_value} (own_nulls calibration, guess.json says how): each class's change is "
                         f"standardised by its drift over null updates of θ and tested against what the other "
                         f"classes predict for it; {queries}")
        return table
    table.caption = (f"{level}{p_value} ({guess.calibration} calibration, guess.json says how): a class counts as "
                     f"significant when its change is below {guess.threshold:+.3e}, the other classes' center minus "
                     f"{guess.z:.3g} × their spread; {queries}" if guess.threshold is not None else
                     f"{level}: too few probed classes to calibrate a threshold; {queries}")
    return table


def register(app: typer.Typer) -> None:
    """Add the `infer-label` command to ``app``."""

    @app.command("infer-label")
    @handle_errors
    def infer_label_command(
        pair_dir: Annotated[Path, typer.Argument(help="Model-pair folder (from `unlearnleak scenario`).")],
        generator: Annotated[str | None, typer.Option(
            "--generator", "-g", help="Probe generator: nes (the default) | zoo | public | gradient.")] = None,
        per_class: Annotated[int | None, typer.Option(help="Probes per class (default 10).")] = None,
        top_k: Annotated[int | None, typer.Option(
            help="How many deleted classes to name (default 1; fewer than the classes).")] = None,
        statistic: Annotated[str | None, typer.Option(
            help="Confidence change: log_odds (default) or probability (the paper's Eq. 11).")] = None,
        level: Annotated[float | None, typer.Option(
            help="False-detection rate the 'detected' verdict holds when nothing was deleted, in (0, 1) "
                 "(default 0.05).")] = None,
        calibration: Annotated[str | None, typer.Option(
            help="How the detection threshold is obtained: own_nulls (null pairs of θ itself, made on the scenario's "
                 "labelled public rows; the default when the pair folder's run record and --data-dir allow it) | "
                 "auto (the default otherwise) | null_pairs | gaussian | student_t | fixed "
                 "(docs/label_inference.md).")] = None,
        test: Annotated[str | None, typer.Option(
            help="Centre/spread of the other classes' changes: student (mean/std, default), robust (median/MAD), "
                 "lower.")] = None,
        min_per_class: Annotated[int | None, typer.Option(
            help="A verdict needs at least this many probes per class (predicted as it by θ; default 3); fewer for "
                 "any class: 'no verdict', exit status 3.")] = None,
        seed: Annotated[int, typer.Option(help="Seed of the probe generator.")] = 0,
        set_: Annotated[list[str] | None, typer.Option(
            "--set", help="Generator parameter, e.g. --set threshold=0.999 (see docs/label_inference.md).")] = None,
        probes_dir: Annotated[Path | None, typer.Option(
            "--probes", help="Reuse probes saved earlier (made against this pair's original model).")] = None,
        budget: Annotated[int | None, typer.Option(help="Query budget of the original model's oracle.", min=1)]
        = None,
        max_seconds: Annotated[float | None, typer.Option(help="Stop making probes after this long (finite, > 0).")]
        = None,
        public_split: Annotated[str, typer.Option(help="Split the `public` generator draws real samples from.")]
        = "test",
        data_dir: Annotated[str | None, typer.Option(
            help="Dataset folder (for --generator public and the own null pairs; default: the run record's).")]
        = None,
        out: Annotated[Path | None, typer.Option("--out", "-o", help="Folder for guess.json, figures, probes.")]
        = None,
        device: Annotated[str, typer.Option(help="cpu or cuda.")] = "cpu",
        overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing output folder --out.")]
        = False,
        model_def: Annotated[str | None, typer.Option(
            help="Accept a manifest naming this model code (file.py:Class or pkg.mod:Class); never implied.")]
        = None,
        as_json: Annotated[bool, typer.Option(
            "--json", help="Print one JSON summary (verdict, guess, folder) instead of the table.")] = False,
    ) -> None:
        """Probe θ before the deletion, replay the probes to θ_u, and name the class whose confidence fell most.

        Exit status: 0 with a verdict (detected or not), 3 for "no verdict" (a class has fewer than
        --min-per-class probes that θ predicts as it, or the model has fewer than 3 classes: nothing is ranked
        or tested), 2 for bad input.
        """
        from unlearnleak.cache import cache_dir
        from unlearnleak.errors import ConfigError
        from unlearnleak.experiments.pipeline import infer_and_evaluate, publish_inference
        from unlearnleak.oracle import ModelOracle
        from unlearnleak.pair import ModelPair
        from unlearnleak.record import RunRecord
        from unlearnleak.storage import check_output_folder

        # ---- every check before any probe is made --------------------------------------------------------
        attack = label_config("infer-label", generator=generator, per_class=per_class, top_k=top_k,
                              statistic=statistic, level=level, calibration=calibration, test=test,
                              min_per_class=min_per_class, max_seconds=max_seconds, seed=seed, device=device,
                              sets=set_)
        check_device_flag(device)
        if out is not None:
            check_output_folder(out, overwrite=overwrite)
        pair = ModelPair.load(pair_dir, model_def=model_def)
        run_record = RunRecord.load(pair_dir, ground_truth=False)  # dataset and class names; never D_u
        meta: dict[str, Any] = run_record.to_dict() if run_record else {}
        spec = pair.spec
        own_rows, calibration_note = None, None
        if calibration in (None, "own_nulls"):
            own_rows, calibration_note = own_null_rows(run_record, data_dir, spec.num_classes,
                                                       explicit=calibration == "own_nulls")
            attack = attack.model_copy(update={"calibration": "auto" if own_rows is None else "own_nulls"})
        if attack.top_k >= spec.num_classes:
            raise ConfigError(f"--top-k {attack.top_k}: this model has {spec.num_classes} classes, so at most "
                              f"{spec.num_classes - 1} can be named as deleted (the rest are the reference); "
                              "lower --top-k")
        probes = public = None
        if probes_dir is not None:
            from unlearnleak.attacks.label_inference import PROBE_GENERATORS

            probes = _load_probes(probes_dir, spec.num_classes, tuple(spec.input_shape))
            # the attack replays these probes; the config names their generator when it is a registered one
            if probes.generator in PROBE_GENERATORS:
                attack = attack.model_copy(update={"generator": probes.generator})
        elif attack.generator == "public":
            public = _public_data(meta, public_split, data_dir)
        original = ModelOracle.from_pair(pair, "original", budget=budget, device=device)
        unlearned = ModelOracle.from_pair(pair, "unlearned", device=device)
        white_box = pair.model("original", device) if probes is None and attack.generator == "gradient" else None
        class_names = _class_names(meta)
        deleted = sorted(set(meta.get("forget_labels", []))) or None

        # ---- the attack (pipeline), then what the user sees -------------------------------------------------
        ev = infer_and_evaluate(original, unlearned, attack, deleted, public=public, probes=probes,
                                white_box=white_box, cache=cache_dir() / "own_nulls",
                                own_nulls=None if own_rows is None else (pair.model("original", device), own_rows))
        if calibration_note is not None:
            ev = replace(ev, calibration_info={"note": calibration_note})
        from unlearnleak.verdicts import label_verdict

        verdict = label_verdict({**ev.guess.to_dict(), "best": ev.guess.best}, class_names, deleted)
        written = None
        if out is not None:
            publish_inference(out, ev, class_names=class_names, save_probes=probes_dir is None, overwrite=overwrite,
                              scenario=run_record.scenario_summary() if run_record else {}, seed=seed)
            written = sorted(p.name for p in out.iterdir())
        if as_json:
            typer.echo(json.dumps({"out": None if out is None else str(out), "files": written,
                                   "verdict": verdict.sentence, "state": verdict.level, "leaked": verdict.leaked,
                                   "guess": ev.guess.to_dict(), "deleted": deleted,
                                   "calibration": {"method": ev.guess.calibration, **ev.calibration_info},
                                   "notes": ev.probes.notes or None}))
            if not ev.guess.has_verdict:
                raise typer.Exit(EXIT_NO_VERDICT)
            return
        if not ev.guess.has_verdict:  # one line, the documented exit status; nothing is ranked
            typer.echo(verdict.sentence)  # no threshold was used: the calibration has nothing to add
            if out is not None:
                typer.echo(f"results written to {out}", err=True)
            raise typer.Exit(EXIT_NO_VERDICT)
        output_console().print(guess_table(ev.guess, class_names, deleted))
        if ev.probes.notes:
            typer.echo(f"note: {ev.probes.notes}")
        line = calibration_line(ev.guess.calibration, ev.calibration_info)
        if line is not None:
            typer.echo(line)
        typer.echo(f"verdict: {verdict.sentence}")
        typer.echo(f"results written to {out}" if out is not None else
                   "nothing written: pass --out DIR to keep the guess, its figure and the probes")


def own_null_rows(record: Any, data_dir: str | None, num_classes: int, *,
                  explicit: bool) -> tuple[Any, str | None]:
    """The labelled public rows the own null pairs are made on (the scenario's ``Scenario.public``, rebuilt from
    the run record), or — when the folder does not allow them and own_nulls was not asked for — None and a note
    saying why the verdict rests on ``auto``. Asked for (``explicit``) and impossible: a ConfigError."""
    from unlearnleak.errors import ConfigError, UnlearnleakError
    from unlearnleak.scenario import recorded_public

    try:
        if record is None:
            raise ConfigError("this folder has no run record (record.json) naming its scenario (a folder from "
                              "`unlearnleak scenario` has one)")
        rows = recorded_public(record, data_dir)
        if rows.y.numel() and int(rows.y.max()) >= num_classes:
            raise ConfigError(f"the scenario's labels reach {int(rows.y.max())}, beyond this model's "
                              f"{num_classes} classes")
    except UnlearnleakError as exc:
        why = str(exc).rstrip(".")
        if explicit:
            raise ConfigError(f"--calibration own_nulls needs labelled public rows of the pair's scenario, but "
                              f"{why}; or choose --calibration auto") from None
        return None, (f"auto calibration (other models' null pairs): own null pairs of θ need labelled public "
                      f"rows of the pair's scenario, but {why}; or pass --calibration auto to choose this one")
    return rows, None


def calibration_line(method: str, info: Any) -> str | None:
    """One line on what the threshold rests on: the own null pairs' cost, or why they were not made."""
    if info.get("note"):
        return f"note: {info['note']}"
    if method == "own_nulls":
        made = "read from the cache" if info.get("cached") else f"made in {info.get('seconds')} s"
        return (f"calibration: {info.get('pairs')} null pairs of θ itself on {info.get('public_rows')} labelled "
                f"public rows ({made})")
    return None  # a calibration the user chose: the verdict's words say what its level rests on


def _load_probes(folder: Path, num_classes: int, input_shape: tuple[int, ...]) -> Any:
    """Probes saved by an earlier `infer-label --out DIR` (in DIR/probes), checked against this pair."""
    from unlearnleak.attacks.label_inference import ProbeSet
    from unlearnleak.attacks.label_inference.probeset import MANIFEST_FILE, TENSORS_FILE
    from unlearnleak.errors import ConfigError

    missing = [name for name in (TENSORS_FILE, MANIFEST_FILE) if not (folder / name).is_file()]
    if missing:
        raise ConfigError(f"--probes {folder}: {', '.join(missing)} missing; a probe folder is the `probes` "
                          "folder that `unlearnleak infer-label PAIR --out DIR` writes (DIR/probes)")
    probes = ProbeSet.load(folder)
    if probes.num_classes != num_classes or tuple(probes.input_shape) != input_shape:
        raise ConfigError(f"--probes {folder}: these probes are {tuple(probes.input_shape)} inputs with "
                          f"{probes.num_classes} classes, but this pair's model takes {input_shape} with "
                          f"{num_classes} classes; use probes made against this pair")
    return probes


def _public_data(meta: dict[str, Any], split: str, data_dir: str | None) -> Any:
    """The real samples of the `public` generator: the pair's dataset, split ``split``."""
    from unlearnleak.data import DATASET_INFO, load_dataset
    from unlearnleak.errors import ConfigError

    config = meta.get("config")
    dataset = config.get("dataset") if isinstance(config, dict) else None
    if not isinstance(dataset, str) or not dataset:
        raise ConfigError("--generator public: this pair's manifest does not name its dataset; use another "
                          "--generator (nes, zoo, gradient)")
    if dataset in DATASET_INFO and split not in DATASET_INFO[dataset].splits:
        raise ConfigError(f"--public-split {split!r}: dataset {dataset!r} has the splits "
                          f"{', '.join(DATASET_INFO[dataset].splits)}; choose one of them")
    root = data_dir or (config.get("data_dir") if isinstance(config, dict) else None)
    return load_dataset(dataset, split, root if isinstance(root, str) else None)


def _class_names(meta: dict[str, Any]) -> list[str] | None:
    names = meta.get("dataset", {}).get("classes")
    return [str(n) for n in names] if names else None
