"""ServerKnowledge: what the white-box attacker may know beside the pair (θ0, N, k, the kind of unlearning, labels).

Each part is optional and *declared* — by the user (`unlearnleak audit --base/--train-size/...`) or by the
scenario that built the pair — never read from a run's ground truth. Attacks receive ``(pair, knowledge)``
and report which parts they used (DESIGN.md, "threat models in the types").
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import torch

from unlearnleak.errors import CheckpointError
from unlearnleak.storage import check_finite, read_json_object, read_safetensors, save_tensors_atomic, write_json_atomic

StateDict = dict[str, torch.Tensor]
UnlearningKind = Literal["exact", "approximate"]

KNOWLEDGE_FILE = "knowledge.json"
BASE_FILE = "base.safetensors"
FORMAT = "unlearnleak.ServerKnowledge/1"
PARTS = ("base", "n_train", "n_forget", "unlearning", "labels", "batch_size")


@dataclass(frozen=True)
class ServerKnowledge:
    """Optional side knowledge of the server attacker; ``None`` means "not known".

    Attributes:
        base: θ0, the weights θ was fine-tuned from (a state dict of the pair's architecture).
        n_train: N = |D_ft|, the size of the set θ was trained on.
        n_forget: k = |D_u|, how many samples were unlearned.
        unlearning: the kind of unlearning, "exact" (retraining) or "approximate" (e.g. gradient ascent).
        labels: the labels of the k unlearned samples.
        batch_size: the fine-tuning batch size (for schedule-aware estimators).
    """

    base: StateDict | None = None
    n_train: int | None = None
    n_forget: int | None = None
    unlearning: UnlearningKind | None = None
    labels: tuple[int, ...] | None = None
    batch_size: int | None = None

    def __post_init__(self) -> None:
        for name in ("n_train", "n_forget", "batch_size"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise CheckpointError(f"knowledge {name} must be a positive integer or unknown, got {value!r}")
        if self.n_train is not None and self.n_forget is not None and self.n_forget >= self.n_train:
            raise CheckpointError(f"knowledge says k = {self.n_forget} of N = {self.n_train} samples were "
                                  f"unlearned; k must be smaller than N")
        if self.unlearning not in (None, "exact", "approximate"):
            raise CheckpointError(f"knowledge unlearning must be 'exact', 'approximate' or unknown, "
                                  f"got {self.unlearning!r}")
        if self.labels is not None:
            if any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in self.labels):
                raise CheckpointError(f"knowledge labels must be class indices >= 0, got {list(self.labels)}")
            if self.n_forget is not None and len(self.labels) != self.n_forget:
                raise CheckpointError(f"knowledge gives {len(self.labels)} labels for k = {self.n_forget}")
        if self.base is not None:
            check_finite(self.base, "θ0")

    @property
    def declared(self) -> tuple[str, ...]:
        """The names of the parts that are known."""
        return tuple(p for p in PARTS if getattr(self, p) is not None)

    def knows_exact_setting(self) -> bool:
        """θ0, N and k are all known (what the exact-unlearning target needs)."""
        return self.base is not None and self.n_train is not None and self.n_forget is not None

    def without(self, *parts: str) -> ServerKnowledge:
        """The same knowledge with ``parts`` forgotten."""
        unknown = [p for p in parts if p not in PARTS]
        if unknown:
            raise ValueError(f"unknown knowledge parts {unknown}; parts are {PARTS}")
        return replace(self, **dict.fromkeys(parts))

    def describe(self) -> dict[str, Any]:
        """A JSON-able view (θ0 as a flag, not its weights)."""
        return {"base": self.base is not None, "n_train": self.n_train, "n_forget": self.n_forget,
                "unlearning": self.unlearning, "labels": None if self.labels is None else list(self.labels),
                "batch_size": self.batch_size}

    def save(self, folder: str | Path) -> Path:
        """Write ``knowledge.json`` (and ``base.safetensors`` when θ0 is known) into ``folder``."""
        folder = Path(folder)
        if self.base is not None:
            save_tensors_atomic(folder / BASE_FILE, self.base)
        write_json_atomic(folder / KNOWLEDGE_FILE, {"format": FORMAT, **self.describe()})
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> ServerKnowledge:
        """Read ``knowledge.json`` (+ ``base.safetensors``); a folder without it declares no knowledge."""
        folder = Path(folder)
        path = folder / KNOWLEDGE_FILE
        if not path.is_file():
            return cls()
        data = read_json_object(path)
        base = None
        if data.get("base") is True:
            base = read_safetensors(folder / BASE_FILE, "θ0")
        elif data.get("base") not in (None, False):
            raise CheckpointError(f"{path}: field 'base' must be true or false, got {data.get('base')!r}")
        labels = data.get("labels")
        if labels is not None and not isinstance(labels, list):
            raise CheckpointError(f"{path}: field 'labels' must be a list of class indices, got {labels!r}")
        try:
            return cls(base=base, n_train=data.get("n_train"), n_forget=data.get("n_forget"),
                       unlearning=data.get("unlearning"), labels=None if labels is None else tuple(labels),
                       batch_size=data.get("batch_size"))
        except CheckpointError as exc:
            raise CheckpointError(f"{path}: {exc}") from None
