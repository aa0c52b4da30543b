"""SISA exact unlearning (Bourtoule et al., S&P 2021): shards, slices, and an ensemble served by vote.

D_ft is split at random into ``shards`` disjoint shards, each into ``slices`` slices. Shard s has its own
model, fine-tuned from θ0 incrementally: after slice r it has seen slices 0..r and a checkpoint is kept.
The served model θ is the ensemble (``sisa_ensemble``: soft vote = mean of the members' softmax, or hard
vote = share of the members' argmax). Unlearning D_u retrains only the shards that hold a deleted row, each
from its last checkpoint before the first slice that held one, on the remaining slices without D_u.

What an attacker sees: the served ensemble before and after. Its weights differ only in the affected
shard's member — so the white-box server can attack that member's pair (θ_s, θ_s,u) directly
(:func:`shard_pair`) — and its outputs are the vote, which the black-box user probes.

The ensemble is the method's output twice over: SISA trains θ itself (registered as its ``trains_original``, so
the scenario caches the ensemble as θ's stage instead of fine-tuning one model) and unlearns it into θ_u. The
registered method receives the ensemble as θ (``spec`` of ``sisa_ensemble``, ``original`` and ``base``
ensemble-shaped: ``base`` holds θ0 in every member). Training is seeded per (shard, slice), so replaying a
shard up to its clean slice reproduces the stored checkpoint bit for bit on CPU; only the work after the
checkpoint is counted as the method's gradient cost.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn
from torch.nn import functional as F

from unlearnleak.errors import ConfigError
from unlearnleak.models import MODELS, ModelSpec, build_model, load_weights, register_model
from unlearnleak.training import TrainConfig, train
from unlearnleak.unlearning.base import (
    CostMeter,
    OriginalTrainer,
    StateDict,
    UnlearningContext,
    parse_params,
    register_unlearning,
    state_of,
)

ENSEMBLE = "sisa_ensemble"


class SisaParams(BaseModel):
    """Shards, slices, the per-slice fine-tune of each member, and the vote."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    shards: int = Field(4, ge=1)
    slices: int = Field(2, ge=1)
    epochs_per_slice: int = Field(1, ge=1)
    lr: float = Field(0.01, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    batch_size: int = Field(32, ge=1)
    freeze_bn: bool = True
    vote: Literal["soft", "hard"] = "soft"

    def train_config(self) -> TrainConfig:
        return TrainConfig(epochs=self.epochs_per_slice, lr=self.lr, momentum=self.momentum,
                           batch_size=self.batch_size, freeze_bn=self.freeze_bn)


class SisaEnsemble(nn.Module):
    """The served ensemble: members on the same (already normalised) input, aggregated by vote.

    ``forward`` returns log-probabilities, so softmax(forward(x)) is the vote distribution.
    """

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, member: str, shards: int,
                 member_kwargs: dict[str, Any] | None = None, vote: str = "soft") -> None:
        super().__init__()
        factory = MODELS.get(member)
        self.members = nn.ModuleList(factory(input_shape=input_shape, num_classes=num_classes,
                                             **dict(member_kwargs or {})) for _ in range(int(shards)))
        self.vote = vote
        self.num_classes = num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs = torch.stack([m(x) for m in self.members])  # (S, B, K)
        if self.vote == "soft":
            return torch.logsumexp(F.log_softmax(outputs, dim=-1), dim=0) - torch.log(
                torch.tensor(float(len(self.members))))
        votes = F.one_hot(outputs.argmax(-1), self.num_classes).float().mean(0)  # (B, K)
        return votes.clamp_min(1e-6).log()


@register_model(ENSEMBLE)
def sisa_ensemble(input_shape: tuple[int, ...], num_classes: int, member: str, shards: int,
                  member_kwargs: dict[str, Any] | None = None, vote: str = "soft") -> nn.Module:
    """The SISA ensemble of ``shards`` ``member`` networks (rebuildable from a saved pair's spec)."""
    return SisaEnsemble(input_shape, num_classes, member, shards, member_kwargs, vote)


def ensemble_spec(member: ModelSpec, params: SisaParams) -> ModelSpec:
    """The spec of the served ensemble whose members have the architecture ``member``."""
    return ModelSpec(name=ENSEMBLE, input_shape=member.input_shape, num_classes=member.num_classes,
                     mean=member.mean, std=member.std,
                     kwargs={"member": member.name, "shards": params.shards,
                             "member_kwargs": dict(member.kwargs), "vote": params.vote})


def member_spec(spec: ModelSpec) -> ModelSpec:
    """The spec of one member of the ensemble ``spec``."""
    if spec.name != ENSEMBLE:
        raise ConfigError(f"SISA works on a {ENSEMBLE!r} model, got {spec.name!r}; build θ with sisa.train_sisa")
    return ModelSpec(name=str(spec.kwargs["member"]), input_shape=spec.input_shape, num_classes=spec.num_classes,
                     mean=spec.mean, std=spec.std, kwargs=dict(spec.kwargs.get("member_kwargs") or {}))


def member_state(state: StateDict, shard: int) -> StateDict:
    """Member ``shard``'s state dict (normaliser buffers included) out of the ensemble's."""
    prefix = f"net.members.{shard}."
    out = {"net." + k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    out.update({k: v for k, v in state.items() if not k.startswith("net.")})
    return out


def ensemble_state(members: list[StateDict]) -> StateDict:
    """The ensemble's state dict from its members' (which share the normaliser buffers)."""
    out: StateDict = {}
    for s, member in enumerate(members):
        for k, v in member.items():
            if k.startswith("net."):
                out[f"net.members.{s}.{k[4:]}"] = v
            else:
                out[k] = v
    return out


@dataclass(frozen=True)
class Layout:
    """Which rows of D_ft belong to which shard and slice."""

    shard_of: torch.Tensor  # (N,) long
    slice_of: torch.Tensor  # (N,) long


def layout(n: int, params: SisaParams, seed: int) -> Layout:
    """A seeded random partition into shards, each split into contiguous slices."""
    if n < params.shards * params.slices:
        raise ConfigError(f"SISA needs at least shards × slices = {params.shards * params.slices} rows, "
                          f"D_ft has {n}; lower unlearning.params.shards or slices")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed + 7))
    shard_of = torch.empty(n, dtype=torch.long)
    slice_of = torch.empty(n, dtype=torch.long)
    for s, rows in enumerate(torch.tensor_split(perm, params.shards)):
        shard_of[rows] = s
        for r, part in enumerate(torch.tensor_split(rows, params.slices)):
            slice_of[part] = r
    return Layout(shard_of, slice_of)


def _slice_seed(seed: int, shard: int, r: int) -> int:
    return seed * 1_000_003 + shard * 1009 + r


def train_shard(spec: ModelSpec, start: StateDict, x: torch.Tensor, y: torch.Tensor, lay: Layout, shard: int,
                params: SisaParams, *, seed: int, device: str, from_slice: int = 0,
                exclude: torch.Tensor | None = None, meter: CostMeter | None = None) -> list[StateDict]:
    """Train member ``shard`` from ``start`` over slices ``from_slice``.. ; returns the checkpoint after each."""
    model = build_model(spec)
    load_weights(model, {k: v.clone() for k, v in start.items()})
    config = params.train_config()
    checkpoints = []
    for r in range(from_slice, params.slices):
        keep = (lay.shard_of == shard) & (lay.slice_of <= r)
        if exclude is not None:
            keep &= ~exclude
        if int(keep.sum()):
            train(model, x, y, config, seed=_slice_seed(seed, shard, r), device=device, keep=keep,
                  desc=f"SISA shard {shard} slice {r}")
            if meter is not None:
                meter.add_training(int(keep.sum()), config)
        checkpoints.append(state_of(model))
    return checkpoints


def train_sisa(member: ModelSpec, base: StateDict, x: torch.Tensor, y: torch.Tensor, params: SisaParams, *,
               seed: int, device: str = "cpu") -> tuple[ModelSpec, StateDict, StateDict]:
    """Train the SISA ensemble on D_ft from θ0: returns (ensemble spec, θ, θ0 in every member)."""
    lay = layout(x.shape[0], params, seed)
    members = [train_shard(member, base, x, y, lay, s, params, seed=seed, device=device)[-1]
               for s in range(params.shards)]
    return ensemble_spec(member, params), ensemble_state(members), ensemble_state([base] * params.shards)


def affected_shards(ctx: UnlearningContext, params: SisaParams) -> list[int]:
    """The shards holding at least one deleted row."""
    lay = layout(ctx.x_train.shape[0], params, ctx.seed)
    return sorted({int(s) for s in lay.shard_of[ctx.forget_mask]})


def shard_pair(spec: ModelSpec, original: StateDict, unlearned: StateDict, shard: int
               ) -> tuple[ModelSpec, StateDict, StateDict]:
    """What the white-box server can attack: the affected member's spec and its weights before and after."""
    return member_spec(spec), member_state(original, shard), member_state(unlearned, shard)


def changed_member(spec: ModelSpec, original: StateDict, unlearned: StateDict) -> int:
    """The member whose weights moved most from θ to θ_u (L2 over its tensors): what a white-box server that
    holds both ensembles attacks — only the shards holding a deleted row are retrained."""
    shards = int(spec.kwargs["shards"])
    moved = []
    for s in range(shards):
        before, after = member_state(original, s), member_state(unlearned, s)
        moved.append(sum(float((after[k].double() - before[k].double()).square().sum())
                         for k in before if before[k].is_floating_point()))
    return max(range(shards), key=lambda s: moved[s])


def _architecture(member: ModelSpec, base: StateDict, params: Mapping[str, Any]) -> tuple[ModelSpec, StateDict]:
    parsed = parse_params(SisaParams, params, "sisa")
    return ensemble_spec(member, parsed), ensemble_state([base] * parsed.shards)


def _train_original(member: ModelSpec, base: StateDict, x: torch.Tensor, y: torch.Tensor, params: Mapping[str, Any],
                    *, seed: int, device: str = "cpu") -> StateDict:
    return train_sisa(member, base, x, y, parse_params(SisaParams, params, "sisa"), seed=seed, device=device)[1]


@register_unlearning("sisa", SisaParams, trains_original=OriginalTrainer(_architecture, _train_original))
def sisa(ctx: UnlearningContext) -> StateDict:
    """Retrain each affected shard from its last clean checkpoint without D_u; copy every other shard."""
    params = parse_params(SisaParams, ctx.params, "sisa")
    member = member_spec(ctx.spec)
    if int(ctx.spec.kwargs.get("shards", -1)) != params.shards:
        raise ConfigError(f"the ensemble has {ctx.spec.kwargs.get('shards')} shards but unlearning.params.shards "
                          f"is {params.shards}; use the parameters θ was trained with")
    if ctx.base is None:
        raise ConfigError("SISA retrains shards from θ0 checkpoints; the context lacks the base model")
    lay = layout(ctx.x_train.shape[0], params, ctx.seed)
    members = [member_state(ctx.original, s) for s in range(params.shards)]
    for s in affected_shards(ctx, params):
        first_dirty = int(lay.slice_of[ctx.forget_mask & (lay.shard_of == s)].min())
        start = member_state(ctx.base, s)
        if first_dirty > 0:  # the stored checkpoint after the last clean slice (replayed, bit-identical)
            start = train_shard(member, start, ctx.x_train, ctx.y_train, lay, s, params, seed=ctx.seed,
                                device=ctx.device)[first_dirty - 1]
        members[s] = train_shard(member, start, ctx.x_train, ctx.y_train, lay, s, params, seed=ctx.seed,
                                 device=ctx.device, from_slice=first_dirty, exclude=ctx.forget_mask,
                                 meter=ctx.meter)[-1]
    return ensemble_state(members)
