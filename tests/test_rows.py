"""The typed rows of results.jsonl: one model read and written everywhere, older rows still read."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from unlearnleak.errors import CheckpointError
from unlearnleak.metrics import baselines
from unlearnleak.rows import BASELINE_NAMES, Baselines, CellRow, RowError, parse_row
from unlearnleak.run_folder import append_row, check_row, read_rows, write_rows

PIPELINE_ROW: dict[str, Any] = {  # a row as `unlearnleak run` writes it (numbers cut short)
    "cell": "0123456789abcdef", "params": {"seed": 0}, "config": {"name": "x", "attacks": {"feature_recovery": {}}},
    "status": "ok", "seconds": 3.2, "dataset": "cifar10", "model": "convnet", "method": "gradient_ascent",
    "kind": "approximate", "n_train": 32, "k": 1, "forget": {"kind": "samples", "k": 1}, "seed": 0, "defense": None,
    "utility": {"original_test_accuracy": 0.5, "served_test_accuracy": None},
    "forgetting": {"original_forget_accuracy": 1.0},
    "feature_recovery": {
        "preset": "best", "mode": "approximate", "method": "inversion", "iterations": 10, "seconds": 1.0,
        "target_cosine": 0.9, "image": True, "label_source": "inferred",
        "metrics": {"psnr": "inf", "ssim": 0.5, "lpips": None, "label_accuracy": 1.0},
        "samples": [{"index": 0, "psnr": "inf", "ssim": 0.5, "true_label": 3, "label": 3}],
        "baselines": {name: {"psnr": 10.0, "ssim": 0.1, "lpips": None} for name in BASELINE_NAMES},
        "artifacts": {"reconstruction": "reconstruction.safetensors", "grid": None},
        "learned_prior": {"status": "off", "reason": "no public data given"}, "decoder_alone": None},
    "label_inference": None,
}


def test_the_baseline_names_are_those_the_metrics_define() -> None:
    assert BASELINE_NAMES == baselines.BASELINE_NAMES
    assert set(Baselines.model_fields) == {*BASELINE_NAMES, "feature_mean"}


def test_a_row_reads_and_writes_back_as_it_was(tmp_path: Path) -> None:
    row = parse_row(json.loads(json.dumps(PIPELINE_ROW)))
    assert row.feature_recovery is not None and row.feature_recovery.metrics is not None
    assert row.feature_recovery.metrics["psnr"] == float("inf")  # stored as "inf" (strict JSON), read as the float
    assert row.feature_recovery.baselines is not None and row.feature_recovery.baselines.thumbnail_4x4 == {
        "psnr": 10.0, "ssim": 0.1, "lpips": None}
    path = tmp_path / "results.jsonl"
    append_row(path, row)
    write_rows(tmp_path / "again.jsonl", [row])
    assert path.read_bytes() == (tmp_path / "again.jsonl").read_bytes()
    (back,), torn = read_rows(path)
    assert torn == b"" and back == row
    assert json.loads(path.read_text()) == PIPELINE_ROW  # no key added, none lost, "inf" kept


def test_rows_of_earlier_versions_still_read() -> None:
    """Older rows: extra keys, the dataset's mean colour named `mean_colour`, the bilinear `thumbnail`, the
    tabular baseline given flat, label sections without the later fields."""
    old = {"cell": "c1", "status": "ok", "params": {}, "total": 3, "kind_of_run": "old",
           "feature_recovery": {"metrics": {"psnr": 12.0}, "baselines": {
               "mean_colour": {"psnr": 9.0}, "thumbnail": {"psnr": 11.0}}, "old_key": [1, 2]},
           "label_inference": {"correct": True, "changes": [0.1, None, "nan"]}}
    row = parse_row(old)
    fr, li = row.feature_recovery, row.label_inference
    assert fr is not None and fr.baselines is not None and li is not None
    assert fr.baselines.named() == {"dataset_mean_colour": {"psnr": 9.0}, "thumbnail": {"psnr": 11.0}}
    assert row.to_dict()["total"] == 3 and fr.to_dict()["old_key"] == [1, 2] and li.correct is True
    flat = Baselines.model_validate({"mse": 1.0, "max_abs_error": 3.0, "mean_abs_error": None})
    assert flat.named() == {"feature_mean": {"mse": 1.0, "max_abs_error": 3.0, "mean_abs_error": None}}


@pytest.mark.parametrize(("change", "key"), [
    (lambda r: r["feature_recovery"]["metrics"].update(psnr="high"), "`feature_recovery.metrics.psnr`"),
    (lambda r: r["feature_recovery"]["samples"][0].pop("index"), "`feature_recovery.samples.0.index`"),
    (lambda r: r.update(label_inference={"ranked": "3,1"}), "`label_inference.ranked`"),
    (lambda r: r.update(utility=[0.5]), "`utility`"),
    (lambda r: r.update(cell="../x"), "`cell`"),
    (lambda r: r.update(status="running"), "`status`"),
])
def test_a_malformed_row_is_named_in_one_line(change: Any, key: str, tmp_path: Path) -> None:
    row = json.loads(json.dumps(PIPELINE_ROW))
    change(row)
    with pytest.raises(RowError, match="^" + key.replace(".", r"\.")) as caught:
        parse_row(row)
    assert "\n" not in str(caught.value)
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        check_row(row)  # what a writer is handed is checked like what a reader reads
    (tmp_path / "results.jsonl").write_text(json.dumps(row) + "\n")
    with pytest.raises(CheckpointError, match="line 1"):
        read_rows(tmp_path / "results.jsonl")


def test_models_are_frozen() -> None:
    row = CellRow(cell="c", status="ok")
    with pytest.raises(ValueError):
        row.status = "error"  # type: ignore[misc]
