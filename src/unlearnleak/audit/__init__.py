"""Audit one's own unlearning from checkpoint files or prediction endpoints (see docs/audit.md)."""

from unlearnleak.audit.checkpoint import read_checkpoint, to_normalized_layout
from unlearnleak.audit.pipeline import (
    RECONSTRUCTIONS_FILE,
    REPORT_FILE,
    AuditOutcome,
    image_baselines,
    pair_from_files,
    read_ground_truth,
    run_audit,
    verdict,
)

__all__ = [
    "RECONSTRUCTIONS_FILE",
    "REPORT_FILE",
    "AuditOutcome",
    "image_baselines",
    "pair_from_files",
    "read_checkpoint",
    "read_ground_truth",
    "run_audit",
    "to_normalized_layout",
    "verdict",
]
