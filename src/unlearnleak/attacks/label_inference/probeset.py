"""ProbeSet: probes made once against the original model, stored with that model's answers (docs/paper.md §4.2).

A user has to make its probes *before* the deletion, while θ still answers, and record θ's predictions
then: after the deletion only θ_u answers. The decision rule therefore reuses ``original_proba`` from here
instead of re-querying θ.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from unlearnleak.errors import CheckpointError
from unlearnleak.storage import save_tensors_atomic, write_json_atomic

TENSORS_FILE = "probes.safetensors"
MANIFEST_FILE = "probes.json"
FORMAT = "unlearnleak.ProbeSet/1"


@dataclass(frozen=True)
class ProbeSet:
    """Probe inputs, the class each was made for, and the original model's probabilities for them.

    Attributes:
        x: (m, *input_shape) raw probe inputs (images in [0, 1]).
        target: (m,) the class each probe was generated for.
        original_proba: (m, K) the original oracle's answers, recorded at generation time (float64).
        queries: (m,) queries to the original model charged to each probe, its failed attempts included
            (for the white-box ``gradient`` generator: forward-backward evaluations, not oracle queries).
        accepted: (m,) whether the probe reached the generator's confidence threshold.
        generator: the generator's registry name.
        params: the generator's effective configuration.
        total_queries: all queries spent on the original model, including probes that were never finished.
        seconds: wall time of the generation.
        black_box: True when only oracle queries were used (False for white-box ``gradient`` probes).
        notes: free text, e.g. why fewer probes than asked for were made.
    """

    x: torch.Tensor
    target: torch.Tensor
    original_proba: torch.Tensor
    queries: torch.Tensor
    accepted: torch.Tensor
    generator: str
    params: Mapping[str, Any] = field(default_factory=dict)
    total_queries: int = 0
    seconds: float = 0.0
    black_box: bool = True
    notes: str = ""

    def __post_init__(self) -> None:
        m = self.x.shape[0]
        for name in ("target", "original_proba", "queries", "accepted"):
            if getattr(self, name).shape[0] != m:
                raise ValueError(f"ProbeSet.{name} has {getattr(self, name).shape[0]} rows, x has {m}")
        if self.original_proba.dim() != 2:
            raise ValueError(f"original_proba must be (m, K), got {tuple(self.original_proba.shape)}")

    def __len__(self) -> int:
        return int(self.x.shape[0])

    @property
    def num_classes(self) -> int:
        """K."""
        return int(self.original_proba.shape[1])

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The shape of one probe."""
        return tuple(self.x.shape[1:])

    @property
    def predicted(self) -> torch.Tensor:
        """(m,) the original model's predicted class of each probe (the paper groups probes by it)."""
        return self.original_proba.argmax(dim=1)

    @property
    def confidence(self) -> torch.Tensor:
        """(m,) the original model's probability of each probe's target class."""
        return self.original_proba.gather(1, self.target[:, None]).squeeze(1)

    @property
    def num_accepted(self) -> int:
        return int(self.accepted.sum())

    @property
    def queries_per_accepted(self) -> float:
        """All queries spent divided by the number of accepted probes (NaN when none was accepted)."""
        n = self.num_accepted
        return self.total_queries / n if n else math.nan

    def per_class(self) -> list[int]:
        """How many probes each class has, by the original model's prediction."""
        return torch.bincount(self.predicted, minlength=self.num_classes).tolist()

    @property
    def on_target(self) -> torch.Tensor:
        """(m,) whether θ predicts each probe as the class it was made for: the probes the decision uses."""
        return self.predicted == self.target

    def class_counts(self) -> list[int]:
        """Per class, the probes made for it that θ predicts as it (what the decision has to go on)."""
        return torch.bincount(self.target[self.on_target], minlength=self.num_classes).tolist()

    def verdict_minimum(self, min_per_class: int) -> int:
        """The on-target probes per class a verdict needs: ``min_per_class``, at most what was asked per class
        (or, without a record of it, made)."""
        asked = self.params.get("per_class")
        if not isinstance(asked, int) or asked < 1:
            asked = int(torch.bincount(self.target, minlength=self.num_classes).max())
        return min(min_per_class, asked)

    def lacking(self, minimum: int = 1) -> list[int]:
        """The classes with fewer than ``minimum`` on-target probes."""
        return [c for c, n in enumerate(self.class_counts()) if n < minimum]

    def subset(self, keep: torch.Tensor) -> ProbeSet:
        """The probes selected by a bool mask or an index tensor (queries totals are kept)."""
        return ProbeSet(x=self.x[keep], target=self.target[keep], original_proba=self.original_proba[keep],
                        queries=self.queries[keep], accepted=self.accepted[keep], generator=self.generator,
                        params=self.params, total_queries=self.total_queries, seconds=self.seconds,
                        black_box=self.black_box, notes=self.notes)

    def save(self, folder: str | Path) -> Path:
        """Write ``probes.safetensors`` and ``probes.json`` into ``folder`` (atomically, each)."""
        folder = Path(folder)
        save_tensors_atomic(folder / TENSORS_FILE, {
            "x": self.x.float(), "target": self.target.long(), "original_proba": self.original_proba.double(),
            "queries": self.queries.long(), "accepted": self.accepted.to(torch.uint8)})
        write_json_atomic(folder / MANIFEST_FILE, {
            "format": FORMAT, "generator": self.generator, "params": dict(self.params),
            "total_queries": self.total_queries, "seconds": self.seconds, "black_box": self.black_box,
            "notes": self.notes, "num_probes": len(self), "num_classes": self.num_classes,
            "input_shape": list(self.input_shape)})
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> ProbeSet:
        """Read a probe set written by :meth:`save` (safetensors + JSON; nothing is unpickled)."""
        folder = Path(folder)
        tensors_path, manifest_path = folder / TENSORS_FILE, folder / MANIFEST_FILE
        for p in (tensors_path, manifest_path):
            if not p.is_file():
                raise CheckpointError(f"{p} is missing; a probe folder holds {TENSORS_FILE} and {MANIFEST_FILE} "
                                      f"(`unlearnleak infer-label PAIR --out DIR` saves one in DIR/probes)")
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
            tensors = load_file(str(tensors_path))
        except (json.JSONDecodeError, UnicodeDecodeError, SafetensorError, OSError) as exc:
            raise CheckpointError(f"cannot read the probe set in {folder}: {exc}") from exc
        if manifest.get("format") != FORMAT:
            raise CheckpointError(f"{manifest_path} is not a probe-set manifest (format {manifest.get('format')!r})")
        missing = {"x", "target", "original_proba", "queries", "accepted"} - set(tensors)
        if missing:
            raise CheckpointError(f"{tensors_path} lacks {sorted(missing)}")
        try:
            return cls(x=tensors["x"], target=tensors["target"].long(), original_proba=tensors["original_proba"],
                       queries=tensors["queries"].long(), accepted=tensors["accepted"].bool(),
                       generator=str(manifest.get("generator", "")), params=manifest.get("params", {}),
                       total_queries=int(manifest.get("total_queries", 0)),
                       seconds=float(manifest.get("seconds", 0.0)), black_box=bool(manifest.get("black_box", True)),
                       notes=str(manifest.get("notes", "")))
        except ValueError as exc:
            raise CheckpointError(f"inconsistent probe set in {folder}: {exc}") from exc
