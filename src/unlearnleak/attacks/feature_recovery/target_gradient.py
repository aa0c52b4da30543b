"""The target gradient ∇* the server inverts, estimated from a ModelPair (PAPER.md §2.1, §2.3).

Sign convention (derived, and tested in ``tests/attacks/test_feature_recovery_target.py``): ∇* is always a
*positive* multiple of the gradient of the mean cross-entropy of the forget set D_u, ``+∇_θ ℓ(D_u)``, so it
is matched by the dummy gradient ``∇_θ ℓ(x′, y′)`` of the same sign.

* **approximate** — gradient-ascent unlearning moves θ *up* the loss of D_u: ``θ_u = θ + τ·∇_θ ℓ(D_u; θ)``,
  so ``∇* = θ_u − θ`` (= τ·∇ℓ(D_u; θ) for one full-batch step; an estimate for several steps), inverted
  on θ. The paper writes ``θ − θ_u`` (its Eq. 2), which is the *negative* gradient; its code uses ``+∇``,
  as here. Knowledge assumed: θ and θ_u only. For exact unlearning without θ0 this is the "plain
  difference": one SGD step of lr η from θ0 gives ``θ_u − θ = (η/N)·(Σ_{D_u}∇ℓ − k·mean_{retain}∇ℓ)`` at θ0,
  the forget gradient plus a bias towards the retain-set mean.
* **exact** — θ and θ_u are both fine-tuned from θ0, on D_ft (N rows) and on D_ft \\ D_u (N − k rows).
  With one full-batch SGD step of lr η: ``N(θ − θ0) = −η Σ_{D_ft}∇ℓ(θ0)`` and
  ``(N − k)(θ_u − θ0) = −η Σ_{retain}∇ℓ(θ0)``, so
  ``∇* = (N − k)(θ_u − θ0) − N(θ − θ0) = η·Σ_{D_u}∇ℓ(x; θ0)`` exactly, inverted on θ0. This is the
  official code's ``exact_diff`` (PAPER.md §2.3). Knowledge assumed: θ0, N and k (the server must know the
  base model the provider fine-tuned from and the set sizes). Several epochs or mini-batches make it an
  estimate.

Only trainable parameters enter ∇*; buffers (batch-norm statistics, the input normaliser) do not.
Differences are taken in float64 so that no extra rounding is added to the stored float32 weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch

from unlearnleak.errors import CheckpointError, ConfigError
from unlearnleak.knowledge import ServerKnowledge
from unlearnleak.models import build_model
from unlearnleak.pair import ModelPair

TargetMode = Literal["auto", "approximate", "exact"]

KNOWLEDGE = {
    "approximate": "θ and θ_u (the plain difference θ_u − θ, inverted on θ)",
    "exact": "θ, θ_u, the base model θ0 and the set sizes N and k (inverted on θ0)",
}

@dataclass(frozen=True)
class TargetGradient:
    """∇* per trainable parameter, in ``model.named_parameters()`` order, and the model to invert it on."""

    names: tuple[str, ...]
    tensors: tuple[torch.Tensor, ...]  # float64, each shaped like its parameter
    mode: Literal["approximate", "exact"]
    invert_on: Literal["original", "base"]
    used: tuple[str, ...] = ()  # the ServerKnowledge parts this estimate used

    @property
    def knowledge(self) -> str:
        """What the server must know for this estimate (for reports)."""
        return KNOWLEDGE[self.mode]

    def flat(self) -> torch.Tensor:
        """All entries concatenated, shape (P,)."""
        return torch.cat([t.reshape(-1) for t in self.tensors])

    def __getitem__(self, name: str) -> torch.Tensor:
        return self.tensors[self.names.index(name)]

    def to(self, device: str | torch.device) -> TargetGradient:
        """The same target on ``device``."""
        return TargetGradient(self.names, tuple(t.to(device) for t in self.tensors), self.mode, self.invert_on,
                              self.used)

    def describe(self) -> dict[str, Any]:
        """A JSON-able summary (for result files)."""
        return {"mode": self.mode, "invert_on": self.invert_on, "knowledge": self.knowledge,
                "knowledge_used": list(self.used), "norm": float(self.flat().double().norm())}


def parameter_names(pair: ModelPair) -> tuple[str, ...]:
    """Names of the trainable parameters of the pair's architecture (buffers excluded)."""
    return tuple(name for name, p in build_model(pair.spec).named_parameters() if p.requires_grad)


def resolve_mode(knowledge: ServerKnowledge | None, mode: TargetMode = "auto") -> Literal["approximate", "exact"]:
    """Pick the estimator from the DECLARED knowledge: the requested one, or for ``auto`` the one matching the
    declared kind of unlearning (exact only when θ0, N and k are also known), else ``exact`` when θ0, N and k
    are all known, else ``approximate``. Nothing recorded about the run is consulted.

    Raises:
        ConfigError: ``exact`` was requested but θ0, N or k is unknown.
    """
    knowledge = knowledge or ServerKnowledge()
    knows_base = knowledge.knows_exact_setting()
    if mode == "exact":
        if not knows_base:
            raise ConfigError("the exact-unlearning target needs θ0, N and k, which the attacker's knowledge "
                              "lacks; declare them (audit --base/--train-size/--forget-size) or use "
                              "mode='approximate' (the plain difference θ_u − θ)")
        return "exact"
    if mode == "approximate":
        return "approximate"
    if mode != "auto":
        raise ConfigError(f"unknown target mode {mode!r}; choose auto, approximate or exact")
    if knowledge.unlearning == "approximate":
        return "approximate"
    return "exact" if knows_base else "approximate"


def _used(knowledge: ServerKnowledge | None, mode: TargetMode, chosen: str) -> tuple[str, ...]:
    used = ["base", "n_train", "n_forget"] if chosen == "exact" else []
    if mode == "auto" and knowledge is not None and knowledge.unlearning is not None:
        used.append("unlearning")
    return tuple(used)


def target_gradient(pair: ModelPair, knowledge: ServerKnowledge | None = None,
                    mode: TargetMode = "auto") -> TargetGradient:
    """∇* from the pair and the declared knowledge (see the module docstring for the formulas).

    Raises:
        ConfigError: ``exact`` without θ0, N, k, or k ≥ N.
        CheckpointError: a parameter is missing from a state dict, or θ_u equals θ (nothing to invert).
    """
    chosen = resolve_mode(knowledge, mode)
    names = parameter_names(pair)
    tensors = []
    for name in names:
        try:
            theta = pair.original[name].double()
            theta_u = pair.unlearned[name].double()
            if chosen == "exact":
                theta0 = pair.state("base", knowledge)[name].double()
        except KeyError:
            raise CheckpointError(f"parameter {name!r} is missing from the model pair's weights") from None
        if chosen == "approximate":
            diff = theta_u - theta
        else:
            assert knowledge is not None  # resolve_mode checked θ0, N and k
            n, k = int(knowledge.n_train or 0), int(knowledge.n_forget or 0)
            if not 0 < k < n:
                raise ConfigError(f"the exact target needs 0 < k < N, got N={n}, k={k}")
            diff = (n - k) * (theta_u - theta0) - n * (theta - theta0)
        tensors.append(diff)
    flat_norm = float(torch.cat([t.reshape(-1) for t in tensors]).double().norm()) if tensors else 0.0
    if flat_norm == 0.0 or flat_norm != flat_norm:
        raise CheckpointError("no difference — nothing to attack: θ_u equals θ in every trainable parameter "
                              "(or the weights are corrupt), so the target gradient is zero")
    return TargetGradient(names=names, tensors=tuple(tensors), mode=chosen,
                          invert_on="base" if chosen == "exact" else "original", used=_used(knowledge, mode, chosen))
