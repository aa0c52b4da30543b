"""Aggregate tables: the numbers, intervals and n a reader would recompute from results.jsonl by hand."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
from runs import make_tabular_cell, write_run
from scipy import stats
from typer.testing import CliRunner

from unlearnleak.cli import app
from unlearnleak.report.load import load_run
from unlearnleak.report.stats import interval, metric_interval
from unlearnleak.report.tables import all_tables, feature_recovery_table, label_inference_table


def _rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "results.jsonl").read_text().splitlines()]


def _csv(table) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(table.csv())))


def test_interval_is_the_t_interval_of_scipy() -> None:
    values = [17.1, 18.4, 16.9, 19.2, 18.0]
    got = interval(values)
    low, high = stats.t.interval(0.95, len(values) - 1, loc=np.mean(values), scale=stats.sem(values))
    assert got.n == 5 and got.mean == pytest.approx(np.mean(values))
    assert (got.low, got.high) == (pytest.approx(low), pytest.approx(high))
    assert interval([3.0]).low is None and interval([None, float("nan")]).n == 0
    assert interval([1.0, 0.0, 1.0], bounds=(0, 1)).high == 1.0  # clipped to the metric's range
    errors = [2e-9, 4e-9, 1e-10, 3e-9]  # tabular MSEs: the t-interval alone would go below 0
    assert interval(errors).low < 0 and metric_interval("feature_recovery.metrics.mse", errors).low == 0.0
    assert metric_interval("max_abs_error", errors).low == 0.0 and metric_interval("psnr", errors).low < 0


def test_feature_recovery_pools_samples_of_every_seed(k_sweep: Path) -> None:
    rows = _rows(k_sweep)
    table = feature_recovery_table(load_run(k_sweep).rows)
    assert table is not None
    by_k = {r["scenario.forget.k"]: r for r in _csv(table)}
    assert set(by_k) == {"1", "3"}  # the failed k=5 cell makes no group
    for k, line in by_k.items():
        group = [r for r in rows if r["status"] == "ok" and r["params"]["scenario.forget.k"] == int(k)]
        psnrs = [s["psnr"] for r in group for s in r["feature_recovery"]["samples"]]
        assert int(line["psnr_n"]) == 3 * int(k) == len(psnrs)
        low, high = stats.t.interval(0.95, len(psnrs) - 1, loc=np.mean(psnrs), scale=stats.sem(psnrs))
        assert float(line["psnr_mean"]) == pytest.approx(np.mean(psnrs))
        assert (float(line["psnr_low95"]), float(line["psnr_high95"])) == (pytest.approx(low), pytest.approx(high))
        thumb = [r["feature_recovery"]["baselines"]["thumbnail_4x4"]["psnr"] for r in group]
        assert float(line["thumbnail_4x4_psnr_mean"]) == pytest.approx(np.mean(thumb))
        assert float(line["psnr_mean"]) > float(line["thumbnail_4x4_psnr_mean"])  # the toy recovery beats it
        correct = [s["label"] == s["true_label"] for r in group for s in r["feature_recovery"]["samples"]]
        assert float(line["label_accuracy_mean"]) == pytest.approx(np.mean(correct))
        assert float(line["served_test_accuracy_mean"]) == pytest.approx(0.5)
        assert line["cells"] == "3" and line["dataset"] == "cifar10" and line["method"] == "gradient_ascent"
    md = table.markdown()
    assert "| k | dataset |" in md and "(n=9)" in md and "thumbnail_4x4 psnr" in md


def test_label_inference_against_chance(defense_sweep: Path) -> None:
    table = label_inference_table(load_run(defense_sweep).rows)
    assert table is not None
    lines = {r["defense.params.sigma"]: r for r in _csv(table)}
    assert [float(lines[s]["correct_mean"]) for s in ("0.0", "0.1", "0.3")] == [1.0, 1.0, 0.0]
    assert all(float(r["chance_mean"]) == pytest.approx(0.1) and r["correct_n"] == "2" for r in lines.values())
    assert float(lines["0.0"]["change_deleted_mean"]) == pytest.approx(np.mean([-0.9, -0.9 * 1.1]))


def test_a_retried_cell_counts_once_and_errors_are_listed(k_sweep: Path) -> None:
    results = k_sweep / "results.jsonl"
    rows = _rows(k_sweep)
    failed_then_ok = dict(rows[0], status="error", error="killed")
    results.write_text("".join(json.dumps(r) + "\n" for r in [failed_then_ok, *rows]))
    data = load_run(k_sweep)
    assert data.superseded == 1 and len(data.rows) == len(rows)
    names = [t.name for t in all_tables(data.rows)]
    assert names == ["verdicts", "headline", "feature_recovery", "label_inference", "errors", "cells"]
    errors = next(t for t in all_tables(data.rows) if t.name == "errors")
    assert len(errors.rows) == 1 and "k=5" in errors.display_rows[0][1]


def test_tabular_rows_report_their_metrics_beside_the_feature_mean(tmp_path: Path) -> None:
    run = write_run(tmp_path / "tab", [make_tabular_cell(f"t{n}s{s}", {"scenario.n_train": n, "seed": s},
                                                         error=0.01 * n) for n in (8, 32) for s in (0, 1)])
    table = feature_recovery_table(load_run(run).rows)
    assert table is not None
    lines = {r["scenario.n_train"]: r for r in _csv(table)}
    assert float(lines["8"]["feature_mean_mse_mean"]) == 1.0 and lines["8"]["mse_n"] == "4"
    assert float(lines["8"]["mse_mean"]) < float(lines["32"]["mse_mean"])
    assert CliRunner().invoke(app, ["report", str(run)]).exit_code == 0
    figures = sorted(p.name for p in (run / "report" / "figures").iterdir())
    assert figures == ["feature_recovery_vs_n_train.png"]  # no image grid for rows of a table


def test_non_finite_values_written_as_strings_are_read_as_numbers(k_sweep: Path) -> None:
    """Strict JSON (unlearnleak.storage.to_json) holds NaN as "nan": left out of means, never a crash."""
    rows = _rows(k_sweep)
    rows[0]["label_inference"]["changes"][0] = "nan"
    rows[0]["feature_recovery"]["samples"][0]["psnr"] = "nan"
    rows[1]["label_inference"]["changes"][3] = "nan"  # the deleted class's change
    (k_sweep / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    data = load_run(k_sweep)
    fr = {r["scenario.forget.k"]: r for r in _csv(feature_recovery_table(data.rows))}
    assert fr["1"]["psnr_n"] == "2"  # k=1: three seeds, one sample NaN
    li = {r["scenario.forget.k"]: r for r in _csv(label_inference_table(data.rows))}
    assert li["1"]["change_deleted_n"] == "2"
    assert CliRunner().invoke(app, ["report", str(k_sweep)]).exit_code == 0


def test_rows_of_an_earlier_unlearnleak_still_report(tmp_path: Path) -> None:
    """results.jsonl rows from before the baselines were named apart (`mean_colour`, the bilinear `thumbnail`, a
    flat tabular baseline) and before later keys existed: read through the row model, reported under today's
    names where the number is the same (`mean_colour` → `dataset_mean_colour`), under their own otherwise."""
    run = tmp_path / "old"
    image = {"cell": "i1", "status": "ok", "params": {"seed": 0}, "dataset": "cifar10",
             "feature_recovery": {"metrics": {"psnr": 14.0}, "samples": [{"index": 0, "psnr": 14.0}],
                                  "baselines": {"mean_colour": {"psnr": 9.0}, "thumbnail": {"psnr": 15.0}},
                                  "artifacts": {}, "a_key_of_that_time": 1}}
    table_row = {"cell": "t1", "status": "ok", "params": {"seed": 1}, "dataset": "adult",
                 "feature_recovery": {"image": False, "metrics": {"mse": 0.5},
                                      "baselines": {"mse": 1.0}, "artifacts": {}}}
    (run).mkdir()
    (run / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in (image, table_row)))
    data = load_run(run)
    assert len(data.ok) == 2 and data.rows[0]["feature_recovery"]["a_key_of_that_time"] == 1
    lines = {r["dataset"]: r for r in _csv(feature_recovery_table(data.rows[:1]))}
    assert float(lines["cifar10"]["dataset_mean_colour_psnr_mean"]) == 9.0
    assert float(lines["cifar10"]["thumbnail_psnr_mean"]) == 15.0 and "thumbnail_4x4_psnr_mean" not in lines["cifar10"]
    tabular = _csv(feature_recovery_table(data.rows[1:]))
    assert float(tabular[0]["feature_mean_mse_mean"]) == 1.0
    assert CliRunner().invoke(app, ["report", str(run)]).exit_code == 0
