"""`unlearnleak demo`: the whole pipeline on real data that installs with the dependencies (no files, no network).

1. Feature recovery on real CIFAR-10 photos (the 20 official test images shipped in the foolbox wheel):
   θ is fine-tuned from a fresh θ0 on 8 of them, one photo is unlearned by gradient ascent,
   and the server attack recovers it from (θ, θ_u) alone, with the label inferred from ∇*.
2. Label inference on scikit-learn's real handwritten digits: a class is partly deleted and a black-box
   user finds which one from the two models' answers to its probes, counting every query.
"""

from __future__ import annotations

import io
import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from unlearnleak.attacks.feature_recovery.config import FeatureRecoveryConfig
from unlearnleak.attacks.label_inference.config import LabelInferenceConfig
from unlearnleak.commands.common import check_device_flag, handle_errors
from unlearnleak.commands.scenario import scenario_table
from unlearnleak.experiments import pipeline
from unlearnleak.experiments.console import heading, output_console
from unlearnleak.experiments.schema import AttacksConfig, ExperimentConfig
from unlearnleak.run_folder import CELLS_DIR, RESULTS_FILE, RUN_FILE
from unlearnleak.scenario import ScenarioConfig
from unlearnleak.storage import (
    check_output_folder,
    environment_record,
    output_folder,
    write_json_atomic,
)
from unlearnleak.training import TrainConfig
from unlearnleak.verdicts import feature_recovery_verdict, gradient_label_phrase, label_verdict


def feature_recovery_config(seed: int, device: str) -> ScenarioConfig:
    """Real CIFAR-10 photos: N = 8 of them fine-tune θ from θ0, k = 1 is unlearned by gradient ascent.

    θ0 is a freshly initialised LeNet-style CNN: 12 public photos are too few to pretrain on (a LeNet fitted
    to them made inversion worse: 11.9 dB vs 16.1 dB in our trial). The CNN keeps the demo to about a minute
    on two CPU cores; the paper's ConvNet costs ~10× more per inversion step (`scenario --model convnet`).
    """
    return ScenarioConfig(
        dataset="embedded_cifar10", train_split="test", test_split=None, model="lenet",
        model_kwargs={}, holdout=8, n_train=8,
        pretrain=TrainConfig(epochs=0),
        forget={"kind": "samples", "k": 1}, unlearning={"method": "gradient_ascent", "params": {"lr": 1e-3}},
        seed=seed, device=device)


def label_inference_config(seed: int, device: str) -> ScenarioConfig:
    """Real digits: LeNet pretrained on the public rows, N = 300 private rows, half of class 3 unlearned."""
    return ScenarioConfig(
        dataset="digits", model="lenet", model_kwargs={}, holdout=500, n_train=300,
        pretrain=TrainConfig(epochs=15, lr=0.05, momentum=0.9, batch_size=64),
        forget={"kind": "class", "class_id": 3, "fraction": 0.5},
        unlearning={"method": "gradient_ascent", "params": {"lr": 1e-3}}, seed=seed, device=device)


def feature_recovery_experiment(seed: int, device: str, iterations: int) -> ExperimentConfig:
    """The demo's first cell: the `best` preset with two restarts on the CIFAR-10 pair."""
    return ExperimentConfig(
        name="demo-feature-recovery", description="Feature recovery on real CIFAR-10 photos (offline).",
        scenario=feature_recovery_config(seed, device), seeds=[seed], device=device,
        attacks=AttacksConfig(feature_recovery=FeatureRecoveryConfig(preset="best", iterations=iterations,
                                                                     restarts=2)))


def label_inference_experiment(seed: int, device: str) -> ExperimentConfig:
    """The demo's second cell: black-box NES probes (5 per class) on the digits pair."""
    return ExperimentConfig(
        name="demo-label-inference", description="Label inference on real handwritten digits (offline).",
        scenario=label_inference_config(seed, device), seeds=[seed], device=device,
        attacks=AttacksConfig(feature_recovery=None,
                              label_inference=LabelInferenceConfig(generator="nes", per_class=5)))


def run_feature_recovery(out: Path, seed: int, device: str, iterations: int, console: Console,
                         shown: Path | None = None) -> dict[str, Any]:
    """The CIFAR-10 cell through the pipeline; prints its tables and returns its summary.

    ``out`` is where files are written; ``shown`` is where they will be once published (for the messages).
    """
    shown = shown or out
    result = pipeline.run_feature_recovery(feature_recovery_experiment(seed, device, iterations), out,
                                           save_pair=True)
    scn, ev = result.prepared.scenario, result.feature_recovery
    assert ev is not None and ev.scores is not None
    console.print(scenario_table(scn))
    rec, names = ev.reconstruction, scn.train.classes
    grid = shown / pipeline.GRID_FILE
    table = Table(title="Feature recovery (server, white-box): the unlearned photo from (θ, θ_u) alone")
    for col in ("sample", "true label", "inferred label", "PSNR dB", "SSIM", "LPIPS", "seconds"):
        table.add_column(col, justify="right")
    for s in ev.scores["samples"]:
        lp = "n/a" if s.get("lpips") is None else f"{s['lpips']:.3f}"
        table.add_row(str(scn.forget_indices[s["index"]].item()), names[s["true_label"]], names[s["label"]],
                      f"{s['psnr']:.2f}", f"{s['ssim']:.3f}", lp, f"{rec.seconds:.1f}")
    console.print(table)
    verdict = feature_recovery_verdict(ev.to_row())
    labels = gradient_label_phrase(ev.scores["label_accuracy"], len(ev.scores["samples"]))
    for line in (f"verdict: {verdict.sentence}" if verdict else None, labels):
        if line:
            console.print(line, markup=False, highlight=False)
    console.print(f"ground truth (top) and recovery (bottom): {grid}", markup=False, highlight=False)
    if ev.scores["mean"].get("lpips") is None:
        console.print("LPIPS unavailable: no weights found (see docs/metrics.md); reported as n/a, not 0.")
    return {"scenario": dict(scn.record.metrics), "attack": rec.summary(), "evaluation": ev.scores,
            "grid": str(grid), "row": result.row(), "verdict": None if verdict is None else verdict.sentence,
            "seconds": result.seconds}


def run_label_inference(out: Path, seed: int, device: str, console: Console,
                        shown: Path | None = None) -> dict[str, Any]:
    """The digits cell through the pipeline; prints its tables and returns its summary."""
    shown = shown or out
    result = pipeline.run_label_inference(label_inference_experiment(seed, device), out, save_pair=True,
                                          save_probes=True)
    scn, ev = result.prepared.scenario, result.label_inference
    assert ev is not None
    console.print(scenario_table(scn))
    guess, names = ev.guess, scn.train.classes
    deleted = int(scn.forget_y[0])
    plot = shown / pipeline.CONFIDENCE_FILE
    table = Table(title="Label inference (user, black-box): which class was deleted?")
    table.add_column("class")
    table.add_column(f"mean change of its {guess.statistic.replace('_', '-')} (negative: fell)", justify="right")
    for c in guess.ranked[:5]:
        table.add_row(names[c], f"{guess.changes[c]:+.2e}")
    table.caption = (f"the 5 classes whose confidence fell most; deleted: {names[deleted]} "
                     f"({scn.forget_y.numel()} samples)")
    console.print(table)
    verdict = label_verdict({**guess.to_dict(), "best": guess.best}, names, [deleted])
    console.print(f"verdict: {verdict.sentence} (chance {ev.chance:.2f})", markup=False, highlight=False)
    console.print(f"confidence changes of every class: {plot}", markup=False, highlight=False)
    return {"scenario": dict(scn.record.metrics), "deleted_class": deleted, "guess": guess.to_dict(),
            "correct_argmin": guess.best == deleted, "detected": guess.detected,
            "probe_queries": ev.probes.total_queries, "plot": str(plot), "row": result.row(),
            "verdict": verdict.sentence, "seconds": result.seconds}


FR_CELL, LI_CELL = "feature_recovery", "label_inference"  # the demo's two cells, under cells/


def _write_run_folder(staged: Path, summary: dict[str, Any]) -> None:
    """The demo's folder is also a run folder of two cells (results.jsonl, run.json), so `report` reads it."""
    from unlearnleak.run_folder import check_row, write_rows

    rows = []
    for cell in (FR_CELL, LI_CELL):
        config = summary["experiments"][cell]
        rows.append(check_row({"cell": cell, "params": {"experiment": config["name"]}, "config": config,
                               "status": "ok", "seconds": round(summary[cell]["seconds"], 3),
                               **summary[cell]["row"]}))
    write_rows(staged / RESULTS_FILE, rows)
    write_json_atomic(staged / RUN_FILE, {"command": "unlearnleak demo", "cells": [FR_CELL, LI_CELL],
                                          "seconds": summary["seconds"], "environment": summary["environment"]})


def register(app: typer.Typer) -> None:
    """Add the `demo` command to ``app``."""

    @app.command("demo")
    @handle_errors
    def demo(
        out: Annotated[Path, typer.Option("--out", "-o", help="Run folder for all outputs.")] = Path("runs/demo"),
        device: Annotated[str, typer.Option(help="cpu or cuda.")] = "cpu",
        seed: Annotated[int, typer.Option(help="Seed for every random choice.")] = 0,
        iterations: Annotated[int, typer.Option(help="Inversion iterations for feature recovery.", min=1)] = 600,
        overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing run folder --out.")]
        = False,
        as_json: Annotated[bool, typer.Option(
            "--json", help="Print one JSON summary (verdicts, files) instead of the tables.")] = False,
    ) -> None:
        """Run both attacks end to end on real data shipped with the dependencies (offline)."""
        check_device_flag(device)
        check_output_folder(out, overwrite=overwrite)
        console = Console(file=io.StringIO()) if as_json else output_console()
        started = time.perf_counter()
        with output_folder(out, overwrite=overwrite) as staged:
            heading(console, "1. Feature recovery on real CIFAR-10 photos")
            fr = run_feature_recovery(staged / CELLS_DIR / FR_CELL, seed, device, iterations, console,
                                      shown=out / CELLS_DIR / FR_CELL)
            heading(console, "2. Label inference on real handwritten digits")
            li = run_label_inference(staged / CELLS_DIR / LI_CELL, seed, device, console,
                                     shown=out / CELLS_DIR / LI_CELL)
            summary = {"feature_recovery": fr, "label_inference": li, "seconds": time.perf_counter() - started,
                       "configs": {"feature_recovery": feature_recovery_config(seed, device).model_dump(mode="json"),
                                   "label_inference": label_inference_config(seed, device).model_dump(mode="json")},
                       "experiments": {
                           "feature_recovery": feature_recovery_experiment(seed, device, iterations).model_dump(
                               mode="json"),
                           "label_inference": label_inference_experiment(seed, device).model_dump(mode="json")},
                       "environment": environment_record()}
            write_json_atomic(staged / "summary.json", summary)
            _write_run_folder(staged, summary)
        if as_json:
            typer.echo(json.dumps({"out": str(out), "seconds": summary["seconds"],
                                   "feature_recovery": {"verdict": fr["verdict"], "grid": fr["grid"]},
                                   "label_inference": {"verdict": li["verdict"], "plot": li["plot"]}}))
            return
        rows = [part["row"] for part in (fr, li) if "row" in part]
        if rows:
            console.print(pipeline.headline_table(rows, title="Demo: headline metrics"))
        console.print(f"demo finished in {summary['seconds']:.0f} s; results in {out}/ (summary.json, "
                      f"{CELLS_DIR}/{FR_CELL}/reconstruction.png, {CELLS_DIR}/{LI_CELL}/confidence_change.png; "
                      f"`unlearnleak report {out}` draws them on one page)", markup=False, highlight=False)
