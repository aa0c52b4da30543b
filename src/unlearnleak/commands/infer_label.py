"""`unlearnleak infer-label`: the user's label-inference attack (PAPER.md §4) on a saved ModelPair.

The pair's two models are served as black-box oracles; the attack never sees their weights (except with
``--generator gradient``, the white-box variant, which reads θ's weights to make probes).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from unlearnleak.commands.common import handle_errors


def guess_table(guess: Any, class_names: list[str] | None, deleted: list[int] | None) -> Table:
    """The ranked classes with their confidence changes, the guess and the queries spent."""
    names = class_names or [str(c) for c in range(len(guess.changes))]
    verdict = ", ".join(names[c] for c in guess.predicted) if guess.detected else "no detectable change"
    table = Table(title=f"Label inference ({guess.generator} probes): {verdict}")
    table.add_column("rank", justify="right")
    table.add_column("class")
    table.add_column("mean Δ p_c", justify="right")
    table.add_column("probes", justify="right")
    table.add_column("", justify="left")
    for rank, c in enumerate(guess.ranked, start=1):
        change = guess.changes[c]
        marks = []
        if c in guess.significant:
            marks.append("detected")
        if deleted and c in deleted:
            marks.append("deleted (ground truth)")
        table.add_row(str(rank), f"{c} {names[c]}" if class_names else str(c),
                      "—" if math.isnan(change) else f"{change:+.3e}", str(guess.probe_counts[c]), ", ".join(marks))
    table.caption = (f"detection level {guess.center - guess.z * guess.scale:+.3e} (center {guess.center:+.2e} − "
                     f"{guess.z:g}·{guess.scale:.2e}); queries: original {guess.queries_original}, "
                     f"unlearned {guess.queries_unlearned}")
    return table


def register(app: typer.Typer) -> None:
    """Add the `infer-label` command to ``app``."""

    @app.command("infer-label")
    @handle_errors
    def infer_label_command(
        pair_dir: Annotated[Path, typer.Argument(help="Model-pair folder (from `unlearnleak scenario`).")],
        generator: Annotated[str, typer.Option("--generator", "-g",
                                               help="Probe generator: nes | zoo | public | gradient.")] = "nes",
        per_class: Annotated[int, typer.Option(help="Probes per class.")] = 10,
        top_k: Annotated[int, typer.Option(help="How many deleted classes to name.")] = 1,
        statistic: Annotated[str, typer.Option(
            help="Confidence change: log_odds (default) or probability (the paper's Eq. 11).")] = "log_odds",
        seed: Annotated[int, typer.Option(help="Seed of the probe generator.")] = 0,
        set_: Annotated[list[str] | None, typer.Option(
            "--set", help="Generator parameter, e.g. --set threshold=0.999 (see docs/label_inference.md).")] = None,
        probes_dir: Annotated[Path | None, typer.Option(
            "--probes", help="Reuse probes saved earlier (made against this pair's original model).")] = None,
        budget: Annotated[int | None, typer.Option(help="Query budget of the original model's oracle.")] = None,
        max_seconds: Annotated[float | None, typer.Option(help="Stop making probes after this long.")] = None,
        public_split: Annotated[str, typer.Option(help="Split the `public` generator draws real samples from.")]
        = "test",
        data_dir: Annotated[str | None, typer.Option(help="Dataset folder (for --generator public).")] = None,
        out: Annotated[Path | None, typer.Option("--out", "-o", help="Folder for guess.json, figures, probes.")]
        = None,
        device: Annotated[str, typer.Option(help="cpu or cuda.")] = "cpu",
        model_def: Annotated[str | None, typer.Option(
            help="Accept a manifest naming this model code (file.py:Class or pkg.mod:Class); never implied.")]
        = None,
    ) -> None:
        """Probe θ before the deletion, replay the probes to θ_u, and name the class whose confidence fell most."""
        from unlearnleak.attacks.label_inference import (
            PROBE_GENERATORS,
            DecisionConfig,
            ProbeSet,
            generate_probes,
            infer_label,
        )
        from unlearnleak.attacks.label_inference.decision import STATISTICS
        from unlearnleak.errors import ConfigError

        if statistic not in STATISTICS:
            raise ConfigError(f"--statistic must be one of {', '.join(STATISTICS)}, got {statistic!r}")
        from unlearnleak.experiments.config import load_config
        from unlearnleak.oracle import ModelOracle
        from unlearnleak.pair import ModelPair
        from unlearnleak.record import RunRecord
        from unlearnleak.report.label_figures import plot_confidence_changes, plot_probe_grid
        from unlearnleak.storage import write_json_atomic

        pair = ModelPair.load(pair_dir, model_def=model_def)
        run_record = RunRecord.load(pair_dir)  # dataset name and class names for probes and reports; never D_u
        meta: dict[str, Any] = run_record.to_dict() if run_record else {}
        spec = pair.spec
        original = ModelOracle.from_pair(pair, "original", budget=budget, device=device)
        unlearned = ModelOracle.from_pair(pair, "unlearned", device=device)
        if probes_dir is not None:
            probes = ProbeSet.load(probes_dir)
        else:
            params = load_config(PROBE_GENERATORS.get(generator).Config, None, list(set_ or [])).model_dump()
            public = None
            if generator == "public":
                from unlearnleak.data import load_dataset

                dataset = str(meta.get("config", {}).get("dataset", ""))
                if not dataset:
                    raise ConfigError("this pair's manifest does not name its dataset; the public generator "
                                      "needs one")
                root = data_dir or meta.get("config", {}).get("data_dir")
                public = load_dataset(dataset, public_split, root)
            target = pair.model("original", device) if generator == "gradient" else original
            probes = generate_probes(generator, target, spec.num_classes, per_class, tuple(spec.input_shape),
                                     seed, public=public, max_seconds=max_seconds, device=device, **params)
        guess = infer_label(original, unlearned, probes, config=DecisionConfig(top_k=top_k, statistic=statistic))
        class_names = _class_names(meta)
        deleted = sorted(set(meta.get("forget_labels", []))) or None
        Console().print(guess_table(guess, class_names, deleted))
        if probes.notes:
            typer.echo(f"note: {probes.notes}")
        if out is not None:
            record = {"guess": guess.to_dict(), "deleted_labels": deleted, "probes": {
                "generator": probes.generator, "count": len(probes), "accepted": probes.num_accepted,
                "total_queries": probes.total_queries, "queries_per_accepted": probes.queries_per_accepted,
                "seconds": probes.seconds, "notes": probes.notes, "params": dict(probes.params)}}
            write_json_atomic(out / "guess.json", record)
            if probes_dir is None:
                probes.save(out / "probes")
            plot_confidence_changes(guess, out / "confidence_change.png", class_names=class_names, deleted=deleted)
            if len(probes.input_shape) == 3:
                plot_probe_grid(probes, out / "probes.png", class_names=class_names)
            typer.echo(f"results written to {out}")
        else:
            typer.echo(json.dumps(guess.to_dict()))


def _class_names(meta: dict[str, Any]) -> list[str] | None:
    names = meta.get("dataset", {}).get("classes")
    return [str(n) for n in names] if names else None
