"""The target gradient ∇* the server inverts, estimated from a ModelPair (docs/paper.md §2.1, §2.3).

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
  official code's ``exact_diff`` (docs/paper.md §2.3). Knowledge assumed: θ0, N and k (the server must know the
  base model the provider fine-tuned from and the set sizes). Several epochs or mini-batches make it an
  estimate.
* **exact, batch schedule known** (``batch_size`` given, optionally ``epochs``, ``drop_last``) — with
  N > batch size B, retraining re-chunks every batch after the first deleted row, and the N,k formula above
  leaves a bias from the retained rows (its cosine to the true D_u gradient falls from ~1 to 0.6–0.7;
  docs/exact_unlearning.md). To first order in η (all gradients g_i taken at θ0),
  ``θ − θ0 = −η Σ_i w_i g_i`` and ``θ_u − θ0 = −η Σ_{i∉D_u} w′_i g_i``, where w_i (w′_i) sums
  1/|batch| over the epochs of row i's batches in the original (retrained) schedule. The server does not
  know where D_u sat in the data order, so :func:`schedule_coefficients` draws D_u's positions uniformly
  (seeded), and picks ``∇* ∝ b·(θ_u − θ0) − (θ − θ0)`` with ``b = E[Σ_ret w_i w′_i] / E[Σ_ret w′_i²]``,
  the b that minimises the expected squared weight left on retained rows (their gradients treated as
  uncorrelated). For one batch (N ≤ B, one epoch) this is exactly the N,k formula; for N > B it is close to
  the plain difference θ_u − θ, because all full batches keep their 1/B weights. Scaled by ``k / E[Σ_U w_i]``
  so that ∇* ≈ η·Σ_{D_u}∇ℓ as above. Knowledge assumed: θ0, N, k and the fine-tune's batch size (and epochs,
  drop_last).

Only trainable parameters enter ∇*; buffers (batch-norm statistics, the input normaliser) do not.
Differences are taken in float64 so that no extra rounding is added to the stored float32 weights.
"""

from __future__ import annotations

import warnings as _warnings
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
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
SCHEDULE_KNOWLEDGE = "θ, θ_u, θ0, N, k and the fine-tune's batch schedule (batch size, epochs; inverted on θ0)"


class BatchScheduleWarning(UserWarning):
    """The exact-unlearning target is only an estimate: N exceeds the fine-tune batch size."""

@dataclass(frozen=True)
class TargetGradient:
    """∇* per trainable parameter, in ``model.named_parameters()`` order, and the model to invert it on."""

    names: tuple[str, ...]
    tensors: tuple[torch.Tensor, ...]  # float64, each shaped like its parameter
    mode: Literal["approximate", "exact"]
    invert_on: Literal["original", "base"]
    used: tuple[str, ...] = ()  # the ServerKnowledge parts this estimate used
    warnings: tuple[str, ...] = ()  # why this ∇* may be far from the true D_u gradient (also warned)
    schedule: Mapping[str, Any] | None = None  # the batch schedule the exact estimate used, if any

    @property
    def knowledge(self) -> str:
        """What the server must know for this estimate (for reports)."""
        return SCHEDULE_KNOWLEDGE if self.schedule is not None else KNOWLEDGE[self.mode]

    def flat(self) -> torch.Tensor:
        """All entries concatenated, shape (P,)."""
        return torch.cat([t.reshape(-1) for t in self.tensors])

    def __getitem__(self, name: str) -> torch.Tensor:
        return self.tensors[self.names.index(name)]

    def to(self, device: str | torch.device) -> TargetGradient:
        """The same target on ``device``."""
        return TargetGradient(self.names, tuple(t.to(device) for t in self.tensors), self.mode, self.invert_on,
                              self.used, self.warnings, self.schedule)

    def describe(self) -> dict[str, Any]:
        """A JSON-able summary (for result files)."""
        return {"mode": self.mode, "invert_on": self.invert_on, "knowledge": self.knowledge,
                "knowledge_used": list(self.used), "norm": float(self.flat().double().norm()),
                "warnings": list(self.warnings), "schedule": None if self.schedule is None else dict(self.schedule)}


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


def _schedule_weights(n: int, forget: torch.Tensor, batch_size: int, epochs: int, drop_last: bool,
                      generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row SGD weights Σ_epochs 1/|batch| of the original run (w) and of the retrain without ``forget`` (w′),
    drawing each epoch's order as ``unlearnleak.training.epoch_order`` does (shuffle all rows, then filter)."""
    w, w_u = torch.zeros(n, dtype=torch.float64), torch.zeros(n, dtype=torch.float64)
    for _ in range(epochs):
        perm = torch.randperm(n, generator=generator)
        for order, out in ((perm, w), (perm[~forget[perm]], w_u)):
            m = order.numel()
            bs = min(batch_size, m)
            n_batches = m // bs if drop_last else -(-m // bs)
            for b in range(n_batches):
                rows = order[b * bs:(b + 1) * bs]
                out[rows] += 1.0 / rows.numel()
    return w, w_u


@lru_cache(maxsize=256)
def schedule_coefficients(n: int, k: int, batch_size: int, epochs: int = 1, drop_last: bool = False,
                          draws: int = 256, seed: int = 0) -> tuple[float, float]:
    """``(c_u, c)`` with ``∇* = c_u·(θ_u − θ0) − c·(θ − θ0)`` ≈ η·Σ_{D_u}∇ℓ(θ0) for a known batch schedule
    (module docstring): D_u's positions drawn ``draws`` times (seeded), b = E[Σ_ret w w′] / E[Σ_ret w′²].

    For N ≤ batch size and one epoch this returns ``(N − k, N)``, the one-batch formula.
    """
    if not 0 < k < n:
        raise ConfigError(f"the exact target needs 0 < k < N, got N={n}, k={k}")
    if batch_size < 1 or epochs < 1:
        raise ConfigError(f"batch_size and epochs must be ≥ 1, got {batch_size} and {epochs}")
    generator = torch.Generator().manual_seed(seed)
    cross = square = signal = 0.0
    one_batch = n <= batch_size and epochs == 1 and not drop_last
    for _ in range(1 if one_batch else draws):
        forget = torch.zeros(n, dtype=torch.bool)
        forget[torch.randperm(n, generator=generator)[:k]] = True
        w, w_u = _schedule_weights(n, forget, batch_size, epochs, drop_last, generator)
        cross += float((w * w_u)[~forget].sum())
        square += float(w_u[~forget].pow(2).sum())
        signal += float(w[forget].sum())
    if square == 0.0 or signal == 0.0:
        raise ConfigError(f"with batch size {batch_size} and drop_last={drop_last}, N={n} rows give no "
                          "complete batch, so θ carries no gradient of D_u")
    b = cross / square
    scale = k * (1 if one_batch else draws) / signal  # ∇* ≈ η Σ_U g: undo the mean weight of a D_u row
    return b * scale, scale


def target_gradient(pair: ModelPair, knowledge: ServerKnowledge | None = None, mode: TargetMode = "auto", *,
                    batch_size: int | None = None, epochs: int = 1, drop_last: bool = False,
                    use_schedule: bool = True) -> TargetGradient:
    """∇* from the pair and the declared knowledge (see the module docstring for the formulas and what each
    assumes).

    Args:
        batch_size: the fine-tune's batch size, if the server knows it (e.g. from its own training code).
            For exact unlearning with N > batch_size the N,k formula is only an estimate: a warning is
            recorded in ``TargetGradient.warnings`` and issued as a ``BatchScheduleWarning``, and
            (``use_schedule``) the batch-schedule estimator is used instead.
        epochs, drop_last: the rest of the fine-tune's schedule (``unlearnleak.training.TrainConfig``).
        use_schedule: False keeps the N,k formula even when the batch size is known (for comparisons).

    Raises:
        ConfigError: ``exact`` without θ0, N, k, or k ≥ N.
        CheckpointError: a parameter is missing from a state dict, or θ_u equals θ (nothing to invert).
    """
    chosen = resolve_mode(knowledge, mode)
    names = parameter_names(pair)
    notes: list[str] = []
    schedule: dict[str, Any] | None = None
    knowledge = knowledge or ServerKnowledge()
    if batch_size is None:
        batch_size = knowledge.batch_size  # the server's own fine-tune batch size, when declared
    n, k = int(knowledge.n_train or 0), int(knowledge.n_forget or 0)
    c_u, c = float(n - k), float(n)
    if chosen == "exact":
        if not 0 < k < n:
            raise ConfigError(f"the exact target needs 0 < k < N, got N={n}, k={k}")
        if batch_size is not None and (n > batch_size or epochs > 1):
            if use_schedule:
                c_u, c = schedule_coefficients(n, k, int(batch_size), int(epochs), bool(drop_last))
                schedule = {"batch_size": int(batch_size), "epochs": int(epochs), "drop_last": bool(drop_last),
                            "coefficients": [c_u, c]}
            notes.append(
                f"N = {n} exceeds the fine-tune batch size {batch_size} (or several epochs ran): retraining "
                "re-chunks every batch after the deleted rows, so the exact target is only an estimate "
                + ("(the batch-schedule estimator is used; see docs/exact_unlearning.md)" if use_schedule else
                   "(the N,k formula's cosine to the true gradient fell to 0.6–0.7 in docs/exact_unlearning.md; "
                   "give the batch schedule to use the schedule estimator)"))
    tensors = []
    for name in names:
        try:
            theta = pair.original[name].double()
            theta_u = pair.unlearned[name].double()
            if chosen == "exact":
                theta0 = pair.state("base", knowledge)[name].double()
        except KeyError:
            raise CheckpointError(f"parameter {name!r} is missing from the model pair's weights") from None
        diff = theta_u - theta if chosen == "approximate" else c_u * (theta_u - theta0) - c * (theta - theta0)
        tensors.append(diff)
    flat_norm = float(torch.cat([t.reshape(-1) for t in tensors]).double().norm()) if tensors else 0.0
    if flat_norm == 0.0 or flat_norm != flat_norm:
        raise CheckpointError("no difference — nothing to attack: θ_u equals θ in every trainable parameter "
                              "(or the weights are corrupt), so the target gradient is zero")
    for note in notes:
        _warnings.warn(note, BatchScheduleWarning, stacklevel=2)
    used = _used(knowledge, mode, chosen) + (("batch_size",) if chosen == "exact" and batch_size is not None else ())
    return TargetGradient(names=names, tensors=tuple(tensors), mode=chosen,
                          invert_on="base" if chosen == "exact" else "original", used=used,
                          warnings=tuple(notes), schedule=schedule)
