"""The audit's results as a run folder of one cell (results.jsonl, run.json, cells/audit/), beside report.json.

The same row model as every other command (``unlearnleak.rows``), so an audit's numbers read like a cell of
`unlearnleak run`: ``report.json`` keeps what only an audit has (its verdict lines, the declared knowledge, the
query counts, why it is partial), the row the numbers.
"""

from __future__ import annotations

import math
import shutil
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from unlearnleak.report.load import AUDIT_CELL
from unlearnleak.rows import BASELINE_NAMES, CellRow, FeatureRecoveryResult, LabelInferenceResult
from unlearnleak.run_folder import CELLS_DIR, write_one_cell

if TYPE_CHECKING:
    from unlearnleak.audit.pipeline import AuditOutcome

IMAGE_METRICS = ("psnr", "ssim", "lpips")
SAMPLE_KEYS = ("index", "reconstruction", *IMAGE_METRICS, "mse", "max_abs_error", "true_label", "label")


def write_audit_cell(out: Path, outcome: AuditOutcome, truth: tuple[torch.Tensor, torch.Tensor | None] | None,
                     files: dict[str, str]) -> CellRow:
    """Write the audit's row and run.json into ``out`` and copy ``files`` (artifact key → file in ``out``, those
    that exist) into cells/audit/. An audit that finished no attack is an error row with its reason."""
    report = outcome.report
    cell_dir = out / CELLS_DIR / AUDIT_CELL
    cell_dir.mkdir(parents=True, exist_ok=True)
    kept = {}
    for key, name in files.items():
        if (out / name).is_file():
            shutil.copyfile(out / name, cell_dir / name)
            kept[key] = name
    fr = _feature_recovery(outcome, {k: v for k, v in kept.items() if k in ("reconstruction", "grid")})
    deleted = None if truth is None or truth[1] is None else sorted({int(c) for c in truth[1].flatten().tolist()})
    li = _label_inference(outcome, deleted, {k: v for k, v in kept.items() if k == "confidence_change"})
    attacks = {a["name"]: {"attack": a.get("attack"), "knowledge_used": a.get("knowledge_used")}
               for a in report["attacks"]}
    ran = {"feature_recovery": fr, "label_inference": li}
    head: dict[str, Any] = {
        "cell": AUDIT_CELL, "params": {"command": AUDIT_CELL, "mode": report["mode"]},
        "config": {"name": AUDIT_CELL, "command": AUDIT_CELL,
                   "attacks": {name: attacks.get(name) for name, section in ran.items() if section is not None}},
        "seconds": report["timing"].get("total_seconds")}
    if fr is None and li is None:
        row = CellRow.model_validate({**head, "status": "error",
                                      "error": report.get("partial_reason") or "the audit ran no attack"})
    else:
        row = CellRow.model_validate({**head, "status": "ok", **ran})
    now = datetime.now(UTC).isoformat(timespec="seconds")
    write_one_cell(out, row, {"command": "unlearnleak audit", "argv": list(sys.argv), "finished": now,
                              "status": "partial" if report.get("partial") else "finished",
                              "environment": report.get("environment")})
    return row


def _feature_recovery(outcome: AuditOutcome, artifacts: dict[str, str]) -> FeatureRecoveryResult | None:
    rec = outcome.reconstruction
    if rec is None:
        return None
    evaluation = outcome.report.get("evaluation")
    image = rec.kind == "image"
    metrics = baselines = None
    samples: list[dict[str, Any]] = [{"index": i, "label": int(v)} for i, v in enumerate(rec.labels.tolist())]
    if evaluation is not None:
        mean = evaluation["mean"]
        keys = IMAGE_METRICS if image else ("mse", "max_abs_error")
        metrics = {**{k: mean.get(k) for k in keys}, "label_accuracy": evaluation.get("label_accuracy")}
        samples = [{k: s[k] for k in SAMPLE_KEYS if k in s} for s in evaluation["samples"]]
        if image:  # the audit's evaluation holds each baseline's means as <name>_<metric>
            baselines = {name: {m: mean.get(f"{name}_{m}") for m in IMAGE_METRICS}
                         for name in BASELINE_NAMES if mean.get(f"{name}_psnr") is not None}
    alone = (evaluation or {}).get("decoder_alone")
    cost = rec.best_cost
    return FeatureRecoveryResult.model_validate({
        "preset": rec.preset, "mode": rec.target_mode, "method": rec.method, "iterations": rec.iterations,
        "seconds": rec.seconds, "target_cosine": None if math.isnan(cost) else 1.0 - cost, "image": image,
        "label_source": rec.label_source, "scored": evaluation is not None, "metrics": metrics, "samples": samples,
        "baselines": baselines, "artifacts": artifacts, "learned_prior": rec.config.get("learned_prior"),
        "decoder_alone": None if alone is None else {m: alone["mean"].get(m) for m in IMAGE_METRICS}})


def _label_inference(outcome: AuditOutcome, deleted: list[int] | None,
                     artifacts: dict[str, str]) -> LabelInferenceResult | None:
    result = outcome.labels
    if result is None or result.guess is None:
        return None
    g = result.guess
    scored = bool(deleted) and g.has_verdict
    ranks = [r for r in (g.rank(c) for c in deleted or ()) if r is not None]
    return LabelInferenceResult.model_validate({
        "generator": g.generator, "statistic": g.statistic, "deleted": deleted, "best": g.best,
        "ranked": list(g.ranked), "changes": [None if math.isnan(v) else v for v in g.changes],
        "correct": (g.best in (deleted or ())) if scored else None, "detected": g.detected,
        "detected_correct": (g.detected and g.label in (deleted or ())) if scored else None,
        "verdict": g.verdict, "reason": g.reason, "lacking": list(g.lacking), "min_per_class": g.min_per_class,
        "deleted_rank": min(ranks) if ranks else None, "predicted": list(g.predicted), "level": g.level,
        "p_value": g.p_value, "chance": (len(deleted) if deleted else 1) / len(g.changes),
        "calibration": g.calibration, "calibration_info": dict(result.calibration_info) or None,
        "probes": None if result.probes is None else len(result.probes),
        "probe_counts": list(g.probe_counts), "queries_original": g.queries_original,
        "queries_unlearned": g.queries_unlearned, "artifacts": artifacts})
