"""ModelPair: the original model θ, the unlearned model θ_u and what an attacker may know beside them.

This is the server attack's whole view of the world (DESIGN.md, "threat models in the types"): weights,
the architecture, the normalisation, optionally the pre-unlearning base θ0 and the set sizes N and k.
It never carries data; the forget set travels separately as ground truth for evaluation.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from unlearnleak.errors import CheckpointError
from unlearnleak.models import ModelSpec, Normalized, build_model, load_weights
from unlearnleak.storage import save_tensors_atomic, write_json_atomic

StateDict = dict[str, torch.Tensor]
Which = Literal["original", "unlearned", "base"]

WEIGHTS_FILE = "weights.safetensors"
MANIFEST_FILE = "manifest.json"
_PREFIX: dict[str, str] = {"original": "original.", "unlearned": "unlearned.", "base": "base."}


@dataclass(frozen=True)
class ModelPair:
    """θ (``original``), θ_u (``unlearned``), optional θ0 (``base``), N, k, and a JSON-able manifest."""

    spec: ModelSpec
    original: StateDict
    unlearned: StateDict
    base: StateDict | None = None
    n_train: int | None = None  # N = |D_ft|, the size of the set θ was fine-tuned on
    n_forget: int | None = None  # k = |D_u|
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def model(self, which: Which = "original", device: str | torch.device = "cpu") -> Normalized:
        """A fresh module holding the chosen weights, in eval mode, on ``device``."""
        state = self.state(which)
        net = build_model(self.spec)
        load_weights(net, state, what=f"{which} weights")
        return net.to(device).eval()

    def state(self, which: Which) -> StateDict:
        """The state dict of the chosen model; ``base`` raises if θ0 is not known."""
        if which == "base":
            if self.base is None:
                raise CheckpointError("this model pair has no base model θ0 (the attacker does not know it)")
            return self.base
        return self.original if which == "original" else self.unlearned

    def without_base(self) -> ModelPair:
        """The same pair as seen by an attacker who knows neither θ0 nor N, k."""
        return replace(self, base=None, n_train=None, n_forget=None)

    def save(self, folder: str | Path) -> Path:
        """Write ``weights.safetensors`` and ``manifest.json`` into ``folder`` (atomically, each)."""
        folder = Path(folder)
        tensors: dict[str, torch.Tensor] = {}
        for which in ("original", "unlearned", "base"):
            state = self.original if which == "original" else self.unlearned if which == "unlearned" else self.base
            if state is not None:
                tensors.update({_PREFIX[which] + k: v for k, v in state.items()})
        save_tensors_atomic(folder / WEIGHTS_FILE, tensors)
        manifest = {
            "format": "unlearnleak.ModelPair/1",
            "model": self.spec.to_dict(),
            "has_base": self.base is not None,
            "n_train": self.n_train,
            "n_forget": self.n_forget,
            "metadata": dict(self.metadata),
        }
        write_json_atomic(folder / MANIFEST_FILE, manifest)
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> ModelPair:
        """Read a pair written by :meth:`save` (safetensors only: nothing is unpickled)."""
        folder = Path(folder)
        manifest_path, weights_path = folder / MANIFEST_FILE, folder / WEIGHTS_FILE
        for p in (manifest_path, weights_path):
            if not p.is_file():
                raise CheckpointError(f"{p} is missing; a model-pair folder holds {MANIFEST_FILE} and "
                                      f"{WEIGHTS_FILE} (create one with `unlearnleak scenario`)")
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise CheckpointError(f"{manifest_path} is not valid JSON: {exc}") from exc
        try:
            tensors = load_file(str(weights_path))
        except (SafetensorError, OSError) as exc:
            raise CheckpointError(f"{weights_path} is not a readable safetensors file: {exc}") from exc
        parts: dict[str, StateDict] = {w: {} for w in _PREFIX}
        for key, value in tensors.items():
            for which, prefix in _PREFIX.items():
                if key.startswith(prefix):
                    parts[which][key[len(prefix):]] = value
                    break
        if not parts["original"] or not parts["unlearned"]:
            raise CheckpointError(f"{weights_path} lacks the original or the unlearned weights")
        spec = ModelSpec.from_dict(manifest.get("model", {}))
        pair = cls(spec=spec, original=parts["original"], unlearned=parts["unlearned"],
                   base=parts["base"] or None, n_train=manifest.get("n_train"),
                   n_forget=manifest.get("n_forget"), metadata=manifest.get("metadata", {}))
        pair.model("original")  # validates that the weights fit the architecture
        return pair
