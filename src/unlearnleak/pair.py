"""ModelPair: the architecture, the original model θ and the unlearned model θ_u — nothing else.

This is the part of the server attack's view that every attacker has (DESIGN.md, "threat models in the
types"). What it may also know (θ0, N, k, the kind of unlearning, labels) is a separate, declared
:class:`~unlearnleak.knowledge.ServerKnowledge`; provenance and ground truth live in a
:class:`~unlearnleak.record.RunRecord` that attacks never receive.

A pair folder is data: loading it never runs code (a manifest naming model code is refused unless the
user names the same definition) and never unpickles (safetensors only). Both models are checked against
the architecture, and non-finite weights are refused, before anything is computed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from unlearnleak.errors import CheckpointError
from unlearnleak.knowledge import ServerKnowledge
from unlearnleak.models import ModelSpec, Normalized, build_model, check_state, load_weights
from unlearnleak.storage import check_finite, read_json_object, read_safetensors, save_tensors_atomic, write_json_atomic

StateDict = dict[str, torch.Tensor]
Which = Literal["original", "unlearned", "base"]

WEIGHTS_FILE = "weights.safetensors"
MANIFEST_FILE = "manifest.json"
FORMAT = "unlearnleak.ModelPair/2"
_LEGACY_FORMAT = "unlearnleak.ModelPair/1"  # θ0, N, k and the run's metadata inside the pair
_PREFIX: dict[str, str] = {"original": "original.", "unlearned": "unlearned.", "base": "base."}
_SYMBOL = {"original": "θ", "unlearned": "θ_u", "base": "θ0"}


@dataclass(frozen=True)
class ModelPair:
    """θ (``original``) and θ_u (``unlearned``) of one architecture (``spec``)."""

    spec: ModelSpec
    original: StateDict
    unlearned: StateDict

    def model(self, which: Which = "original", device: str | torch.device = "cpu",
              knowledge: ServerKnowledge | None = None) -> Normalized:
        """A fresh module holding the chosen weights, in eval mode, on ``device`` (``base`` needs knowledge)."""
        state = self.state(which, knowledge)
        net = build_model(self.spec)
        load_weights(net, state, what=f"{_SYMBOL[which]} ({which} weights)")
        return net.to(device).eval()

    def state(self, which: Which, knowledge: ServerKnowledge | None = None) -> StateDict:
        """The state dict of the chosen model; ``base`` comes from ``knowledge`` and raises if θ0 is unknown."""
        if which == "base":
            if knowledge is None or knowledge.base is None:
                raise CheckpointError("θ0 (the base model) is not known to the attacker; declare it "
                                      "(ServerKnowledge(base=...), `audit --base FILE`) or use the plain "
                                      "difference (mode='approximate')")
            return knowledge.base
        return self.original if which == "original" else self.unlearned

    def check(self, knowledge: ServerKnowledge | None = None) -> None:
        """Both models (and a declared θ0) fit the architecture and hold finite values.

        Raises:
            CheckpointError: naming the first mismatched key and both shapes, or the first non-finite key.
        """
        net = build_model(self.spec)
        states: list[tuple[Which, StateDict]] = [("original", self.original), ("unlearned", self.unlearned)]
        if knowledge is not None and knowledge.base is not None:
            states.append(("base", knowledge.base))
        for which, state in states:
            check_state(net, state, f"{_SYMBOL[which]} ({which} weights)")
            check_finite(state, _SYMBOL[which])

    def save(self, folder: str | Path) -> Path:
        """Write ``weights.safetensors`` and ``manifest.json`` into ``folder`` (atomically, each)."""
        folder = Path(folder)
        tensors = {_PREFIX["original"] + k: v for k, v in self.original.items()}
        tensors.update({_PREFIX["unlearned"] + k: v for k, v in self.unlearned.items()})
        save_tensors_atomic(folder / WEIGHTS_FILE, tensors)
        write_json_atomic(folder / MANIFEST_FILE, {"format": FORMAT, "model": self.spec.to_dict()})
        return folder

    @classmethod
    def load(cls, folder: str | Path, *, model_def: str | None = None,
             trust_model_code: bool = False) -> ModelPair:
        """Read a pair written by :meth:`save`, checked before anything is computed.

        Args:
            folder: the pair folder.
            model_def: the model definition the user names (``--model-def``); a manifest naming code is
                accepted only when it names this same definition.
            trust_model_code: accept whatever code the manifest names (Python API only).
        """
        folder = Path(folder)
        manifest, tensors = _read(folder)
        try:
            spec = ModelSpec.from_dict(manifest["model"], model_def=model_def, trust_model_code=trust_model_code)
        except CheckpointError as exc:
            raise CheckpointError(f"{folder / MANIFEST_FILE}: {exc}") from None
        parts = _split(tensors)
        if not parts["original"] or not parts["unlearned"]:
            raise CheckpointError(f"{folder / WEIGHTS_FILE} lacks the original or the unlearned weights "
                                  f"(keys must start with 'original.' and 'unlearned.')")
        pair = cls(spec=spec, original=parts["original"], unlearned=parts["unlearned"])
        try:
            pair.check()
        except CheckpointError as exc:  # name the file the user must fix
            raise CheckpointError(f"{folder / WEIGHTS_FILE}: {exc}") from None
        return pair


def load_pair_folder(folder: str | Path, *, model_def: str | None = None,
                     trust_model_code: bool = False) -> tuple[ModelPair, ServerKnowledge]:
    """The pair and the knowledge declared beside it, θ0 checked against the architecture too."""
    pair = ModelPair.load(folder, model_def=model_def, trust_model_code=trust_model_code)
    knowledge = load_knowledge(folder)
    pair.check(knowledge)
    return pair, knowledge


def load_knowledge(folder: str | Path) -> ServerKnowledge:
    """The knowledge declared beside a pair (``knowledge.json``); for a legacy folder, its manifest's θ0, N, k."""
    folder = Path(folder)
    manifest, tensors = _read(folder)
    if manifest.get("format") != _LEGACY_FORMAT:
        return ServerKnowledge.load(folder)
    base = _split(tensors)["base"] or None
    n_train, n_forget = manifest.get("n_train"), manifest.get("n_forget")
    try:
        return ServerKnowledge(base=base, n_train=n_train, n_forget=n_forget)
    except CheckpointError as exc:
        raise CheckpointError(f"{folder / MANIFEST_FILE}: {exc}") from None


def _read(folder: Path) -> tuple[dict[str, Any], StateDict]:
    manifest_path, weights_path = folder / MANIFEST_FILE, folder / WEIGHTS_FILE
    for p in (manifest_path, weights_path):
        if not p.is_file():
            raise CheckpointError(f"{p} is missing; a model-pair folder holds {MANIFEST_FILE} and "
                                  f"{WEIGHTS_FILE} (create one with `unlearnleak scenario`)")
    manifest = read_json_object(manifest_path)
    if manifest.get("format") not in (FORMAT, _LEGACY_FORMAT):
        raise CheckpointError(f"{manifest_path}: unknown format {manifest.get('format')!r:.60}; expected "
                              f"{FORMAT!r} (write the folder with `unlearnleak scenario` or ModelPair.save)")
    if "model" not in manifest:
        raise CheckpointError(f"{manifest_path} lacks the 'model' spec")
    try:
        ModelSpec.from_dict(manifest["model"], trust_model_code=True)  # types only; nothing is imported
    except CheckpointError as exc:
        raise CheckpointError(f"{manifest_path}: {exc}") from None
    return manifest, read_safetensors(weights_path, "the pair's weights")


def _split(tensors: StateDict) -> dict[str, StateDict]:
    parts: dict[str, StateDict] = {w: {} for w in _PREFIX}
    for key, value in tensors.items():
        for which, prefix in _PREFIX.items():
            if key.startswith(prefix):
                parts[which][key[len(prefix):]] = value
                break
    return parts
