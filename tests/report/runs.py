"""Run folders built through the row models (``unlearnleak.rows``), from small real tensors (no pipeline needed).

Each row is built as a :class:`~unlearnleak.rows.CellRow` and handed to the tests as its dict (what the report's
tables receive); ``write_run`` writes them with the run folder's one writer. Importable from the report tests
(their folder is on sys.path): ``from runs import make_cell, write_run``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from unlearnleak.metrics import baseline_images, psnr, ssim
from unlearnleak.report.grids import save_reconstruction_grid
from unlearnleak.rows import (
    Baselines,
    CellRow,
    FeatureRecoveryResult,
    FeatureRecoverySample,
    LabelInferenceResult,
    parse_row,
)
from unlearnleak.run_folder import RESULTS_FILE, write_rows
from unlearnleak.storage import save_tensors_atomic, write_json_atomic, write_text_atomic

CHANGES = [0.01, -0.02, 0.03, -0.9, 0.0, 0.02, -0.01, 0.04, 0.0, -0.03]


def _baselines(truth: torch.Tensor) -> Baselines:
    guesses = baseline_images(truth, (0.5, 0.5, 0.5))
    return Baselines.model_validate({name: {"psnr": float(psnr(guess, truth).mean()),
                                            "ssim": float(ssim(guess, truth).mean()), "lpips": None}
                                     for name, guess in guesses.items()})


def make_cell(run: Path, cell: str, params: dict[str, Any], *, k: int = 2, noise: float = 0.1,
              defense: dict[str, Any] | None = None, served: float = 0.5, label_inference: bool = True,
              correct: bool = True, status: str = "ok", error: str | None = None) -> dict[str, Any]:
    """Write cells/<cell>/ (truth, reconstruction, PNGs) and return the cell's row (built as a CellRow)."""
    seed = int(params.get("seed", 0))
    head: dict[str, Any] = {"cell": cell, "params": params, "config": {"name": "toy"}, "status": status,
                            "seconds": 1.5 + seed}
    if status != "ok":
        return CellRow.model_validate({**head, "error": error or "RuntimeError: boom"}).to_dict()
    g = torch.Generator().manual_seed(1000 * seed + k)
    truth = torch.rand(k, 3, 16, 16, generator=g)
    shuffled = torch.arange(k).flip(0)  # the attack's order differs from D_u's
    recon = (truth + noise * torch.randn(truth.shape, generator=g)).clamp(0, 1)[shuffled]
    folder = run / "cells" / cell
    save_tensors_atomic(folder / "truth.safetensors", {"x": truth, "y": torch.arange(k)})
    save_tensors_atomic(folder / "reconstruction.safetensors", {"x": recon, "labels": torch.arange(k).flip(0)})
    save_reconstruction_grid(folder / "reconstruction.png", truth, recon[shuffled])
    matched = recon[shuffled]
    p, s = psnr(matched, truth).tolist(), ssim(matched, truth).tolist()
    samples = [FeatureRecoverySample(index=i, reconstruction=int(shuffled[i]), psnr=p[i], ssim=s[i], lpips=None,
                                     true_label=i, label=i if i % 2 == 0 else (i + 1) % 10) for i in range(k)]
    li = None
    if label_inference:
        changes = [c * (1 + 0.1 * seed) for c in CHANGES]
        save_reconstruction_grid(folder / "confidence_change.png", None, torch.rand(1, 3, 4, 4, generator=g))
        li = LabelInferenceResult(
            generator="public", per_class=10, statistic="log_odds", deleted=[3], best=3 if correct else 1,
            ranked=[3, 1], changes=changes, correct=correct, detected=correct, level=0.05, chance=0.1,
            queries_original=200, queries_unlearned=100, artifacts={"confidence_change": "confidence_change.png"})
    row = CellRow(
        **head, dataset="cifar10", model="convnet", method="gradient_ascent", kind="approximate", n_train=32, k=k,
        forget={"kind": "samples", "k": k, "indices": list(range(seed, seed + k))}, defense=defense,
        utility={"original_test_accuracy": 0.6, "unlearned_test_accuracy": 0.55, "served_test_accuracy": served,
                 "base_test_accuracy": 0.4},
        feature_recovery=FeatureRecoveryResult(
            preset="best", mode="approximate", iterations=10, seconds=0.5, target_cosine=0.9, image=True,
            metrics={"psnr": sum(p) / k, "ssim": sum(s) / k, "lpips": None,
                     "label_accuracy": sum(x.label == x.true_label for x in samples) / k},
            samples=samples, baselines=_baselines(truth),
            artifacts={"reconstruction": "reconstruction.safetensors", "truth": "truth.safetensors",
                       "grid": "reconstruction.png"}),
        label_inference=li)
    return row.to_dict()


def write_run(run: Path, rows: list[dict[str, Any]], *, torn: str | None = None) -> Path:
    """results.jsonl (the rows, checked by the row model and written by the run folder's writer; then ``torn``,
    a last line cut short), run.json and experiment.yaml."""
    write_rows(run / RESULTS_FILE, [parse_row(r) for r in rows])
    if torn:
        with (run / RESULTS_FILE).open("a", encoding="utf-8") as handle:
            handle.write(torn)
    write_json_atomic(run / "run.json", {"argv": ["unlearnleak", "sweep", "toy.yaml"], "executor": "local",
                                         "started": "2026-12-01T06:00:00Z", "finished": "2026-12-01T06:05:00Z",
                                         "environment": {"versions": {"torch": "2.13.0"}, "git_revision": "abc123",
                                                         "platform": "linux"},
                                         "cells": {r["cell"]: r["params"] for r in rows}})
    write_text_atomic(run / "experiment.yaml", "name: toy\nsweep:\n  scenario.forget.k: [1, 3]\nseeds: [0, 1, 2]\n")
    return run


def make_tabular_cell(cell: str, params: dict[str, Any], *, k: int = 2, error: float = 0.1) -> dict[str, Any]:
    """A tabular feature-recovery row (no image artifacts; the feature-mean baseline)."""
    g = torch.Generator().manual_seed(int(params.get("seed", 0)))
    mses = (error * (1 + torch.rand(k, generator=g))).tolist()
    samples = [FeatureRecoverySample(index=i, mse=m, max_abs_error=2 * m, true_label=1, label=1)
               for i, m in enumerate(mses)]
    return CellRow(
        cell=cell, params=params, status="ok", seconds=0.2, dataset="breast_cancer", model="mlp", method="exact",
        kind="exact", n_train=params.get("scenario.n_train", 8), k=k, defense=None, utility=None,
        label_inference=None,
        feature_recovery=FeatureRecoveryResult(
            preset="tabular", image=False, samples=samples,
            metrics={"mse": sum(mses) / k, "max_abs_error": 2 * sum(mses) / k, "label_accuracy": 1.0},
            baselines=Baselines(feature_mean={"mse": 1.0, "max_abs_error": 3.0}), artifacts={})).to_dict()
