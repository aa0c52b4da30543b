"""The server attack's result value: what was recovered, how, and at what cost (DESIGN.md value objects)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from unlearnleak.errors import CheckpointError
from unlearnleak.storage import save_tensors_atomic

RECONSTRUCTION_FILE = "reconstruction.safetensors"


@dataclass(frozen=True)
class Reconstruction:
    """Recovered samples of D_u with the labels used, per-restart costs and timing.

    ``x`` holds images in [0, 1] (k, C, H, W) or tabular rows in model-input units (k, D) — the units the
    model's ``Normalized`` wrapper takes; ``rows`` maps them back to original units via a dataset transform.
    ``restart_costs`` are the final gradient-matching costs ``1 − cos(∇′, ∇*)`` of every restart (NaN for a
    restart dropped early), ``best_restart`` the one kept.
    """

    x: torch.Tensor
    labels: torch.Tensor  # (k,) int64, the labels the reconstruction was optimised with
    label_source: Literal["given", "inferred"]
    kind: Literal["image", "tabular"]
    method: Literal["inversion", "analytic"]
    target_mode: Literal["approximate", "exact"]
    restart_costs: torch.Tensor  # (R,) float
    best_restart: int
    iterations: int
    seconds: float
    preset: str
    config: Mapping[str, Any] = field(default_factory=dict)
    label_scores: torch.Tensor | None = None  # (C,) output-layer entries of ∇* when labels were inferred
    timings: Mapping[str, float] = field(default_factory=dict)
    decoded: torch.Tensor | None = None  # (k, …) the learned prior's decoded images alone (None: prior off)

    @property
    def k(self) -> int:
        return int(self.x.shape[0])

    @property
    def best_cost(self) -> float:
        return float(self.restart_costs[self.best_restart])

    def summary(self) -> dict[str, Any]:
        """A JSON-able description without the tensors' bulk."""
        return {
            "k": self.k, "kind": self.kind, "method": self.method, "target_mode": self.target_mode,
            "labels": self.labels.tolist(), "label_source": self.label_source,
            "restart_costs": [None if c != c else float(c) for c in self.restart_costs.tolist()],
            "best_restart": self.best_restart, "best_cost": self.best_cost, "iterations": self.iterations,
            "seconds": self.seconds, "preset": self.preset, "config": dict(self.config),
            "timings": dict(self.timings),
            "label_scores": None if self.label_scores is None else self.label_scores.tolist(),
        }

    def save(self, path: str | Path) -> Path:
        """Write the tensors and the summary (as safetensors metadata) to ``path`` atomically."""
        tensors = {"x": self.x, "labels": self.labels, "restart_costs": self.restart_costs}
        if self.label_scores is not None:
            tensors["label_scores"] = self.label_scores
        if self.decoded is not None:
            tensors["decoded"] = self.decoded
        meta = {k: v for k, v in self.summary().items() if k not in ("labels", "restart_costs", "label_scores")}
        return save_tensors_atomic(path, tensors, {"reconstruction": json.dumps(meta, default=str)})

    @classmethod
    def load(cls, path: str | Path) -> Reconstruction:
        """Read a file written by :meth:`save`."""
        path = Path(path)
        try:
            from safetensors import safe_open

            tensors = load_file(str(path))
            with safe_open(str(path), framework="pt") as handle:
                meta = json.loads((handle.metadata() or {})["reconstruction"])
        except (SafetensorError, OSError, KeyError, json.JSONDecodeError) as exc:
            raise CheckpointError(f"{path} is not a reconstruction file written by unlearnleak: {exc}") from exc
        return cls(x=tensors["x"], labels=tensors["labels"], label_source=meta["label_source"],
                   kind=meta["kind"], method=meta["method"], target_mode=meta["target_mode"],
                   restart_costs=tensors["restart_costs"], best_restart=int(meta["best_restart"]),
                   iterations=int(meta["iterations"]), seconds=float(meta["seconds"]), preset=meta["preset"],
                   config=meta.get("config", {}), label_scores=tensors.get("label_scores"),
                   timings=meta.get("timings", {}), decoded=tensors.get("decoded"))
