"""RunRecord: provenance and ground truth of a run (indices, labels, accuracies, config), beside the pair.

Written by the scenario as ``record.json`` + ``ground_truth.safetensors``; read only by evaluation and
reports, never by an attack (an attack run with the record deleted gives identical results — tested).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from unlearnleak.errors import CheckpointError
from unlearnleak.storage import read_json_object, read_safetensors, save_tensors_atomic, write_json_atomic

RECORD_FILE = "record.json"
GROUND_TRUTH_FILE = "ground_truth.safetensors"
FORMAT = "unlearnleak.RunRecord/1"


@dataclass(frozen=True)
class RunRecord:
    """What happened in a run: the effective config, D_u's rows and labels, accuracies, environment.

    Attributes:
        config: the effective scenario configuration (JSON).
        dataset: dataset name, provenance and class names.
        ft_indices, forget_indices: train-split rows of D_ft and of D_u.
        forget_labels: D_u's labels.
        metrics: accuracies of θ0, θ, θ_u on the test split, D_u and D_ft \\ D_u.
        environment: versions, git revision, platform.
        forget_x, forget_y: D_u itself (saved as ``ground_truth.safetensors``), when kept.
        stages: per stage of the scenario (base θ0, original θ, unlearned θ_u): its cache key, whether it came
            from the cache, and what it recorded when computed (seconds; θ_u: the method's gradient work).
    """

    config: Mapping[str, Any] = field(default_factory=dict)
    dataset: Mapping[str, Any] = field(default_factory=dict)
    ft_indices: tuple[int, ...] = ()
    forget_indices: tuple[int, ...] = ()
    forget_labels: tuple[int, ...] = ()
    metrics: Mapping[str, float] = field(default_factory=dict)
    environment: Mapping[str, Any] = field(default_factory=dict)
    forget_x: torch.Tensor | None = None
    forget_y: torch.Tensor | None = None
    forget_positions: torch.Tensor | None = None
    stages: Mapping[str, Any] = field(default_factory=dict)

    @property
    def class_names(self) -> list[str] | None:
        """The dataset's class names, when recorded."""
        names = self.dataset.get("classes")
        return [str(n) for n in names] if isinstance(names, list) and names else None

    def scenario_summary(self) -> dict[str, Any]:
        """The pair's setting as a run row names it (dataset, model, method, n_train, k), so that a one-attack
        command's output reports like a cell; keys the record lacks are left out."""
        c = self.config
        unlearning, forget = c.get("unlearning"), c.get("forget")
        found = {"dataset": c.get("dataset"), "model": c.get("model"), "n_train": c.get("n_train"),
                 "method": unlearning.get("method") if isinstance(unlearning, Mapping) else None,
                 "k": len(self.forget_indices) or (forget.get("k") if isinstance(forget, Mapping) else None)}
        return {key: value for key, value in found.items() if isinstance(value, str | int)}

    def to_dict(self) -> dict[str, Any]:
        """The JSON part (tensors excluded)."""
        return {"format": FORMAT, "config": dict(self.config), "dataset": dict(self.dataset),
                "ft_indices": list(self.ft_indices), "forget_indices": list(self.forget_indices),
                "forget_labels": list(self.forget_labels), "metrics": dict(self.metrics),
                "environment": dict(self.environment), "stages": dict(self.stages)}

    def save(self, folder: str | Path) -> Path:
        """Write ``record.json`` and, when D_u is kept, ``ground_truth.safetensors``."""
        folder = Path(folder)
        if self.forget_x is not None and self.forget_y is not None:
            tensors = {"forget_x": self.forget_x, "forget_y": self.forget_y,
                       "ft_indices": torch.tensor(self.ft_indices, dtype=torch.long)}
            if self.forget_positions is not None:
                tensors["forget_positions"] = self.forget_positions
            save_tensors_atomic(folder / GROUND_TRUTH_FILE, tensors)
        write_json_atomic(folder / RECORD_FILE, self.to_dict())
        return folder

    @classmethod
    def load(cls, folder: str | Path, *, ground_truth: bool = True) -> RunRecord | None:
        """Read the record beside a pair, or None when the folder has none (e.g. an audit of one's own files).
        ``ground_truth=False`` leaves D_u's file unread (an attack's own process never touches it)."""
        folder = Path(folder)
        path = folder / RECORD_FILE
        gt_path = folder / GROUND_TRUTH_FILE
        if not path.is_file() and not (ground_truth and gt_path.is_file()):
            return None
        data = read_json_object(path) if path.is_file() else {}
        tensors = read_safetensors(gt_path, "ground truth") if ground_truth and gt_path.is_file() else {}
        if tensors and ("forget_x" not in tensors or "forget_y" not in tensors):
            raise CheckpointError(f"{gt_path} lacks forget_x / forget_y")
        try:
            return cls(config=dict(data.get("config") or {}), dataset=dict(data.get("dataset") or {}),
                       ft_indices=tuple(int(v) for v in data.get("ft_indices") or ()),
                       forget_indices=tuple(int(v) for v in data.get("forget_indices") or ()),
                       forget_labels=tuple(int(v) for v in data.get("forget_labels") or ()),
                       metrics=dict(data.get("metrics") or {}), environment=dict(data.get("environment") or {}),
                       forget_x=tensors.get("forget_x"), forget_y=tensors.get("forget_y"),
                       forget_positions=tensors.get("forget_positions"), stages=dict(data.get("stages") or {}))
        except (TypeError, ValueError) as exc:
            raise CheckpointError(f"{path} is not a run record written by unlearnleak: {exc}") from exc
