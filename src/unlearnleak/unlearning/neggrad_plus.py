"""NegGrad+ (Kurmanji et al., NeurIPS 2023): descend on the retain set while ascending on D_u.

Each step takes one retain batch and one forget batch (the forget set is cycled) and minimises
α·ℓ(retain batch) − (1 − α)·ℓ(forget batch). An epoch is one pass over the retain set.
"""

from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch.nn import functional as F

from unlearnleak.errors import ConfigError
from unlearnleak.progress import track
from unlearnleak.unlearning.base import (
    StateDict,
    UnlearningContext,
    parse_params,
    register_unlearning,
    state_of,
    trainable,
)


class NegGradPlusParams(BaseModel):
    """α weighs retain descent against forget ascent; SGD settings; model in eval mode (BN frozen)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    alpha: float = Field(0.9, ge=0, le=1)
    epochs: int = Field(2, ge=1)
    lr: float = Field(0.01, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    batch_size: int = Field(64, ge=1)
    forget_batch_size: int | None = Field(None, ge=1)  # None: min(batch_size, |D_u|)


@register_unlearning("neggrad_plus", NegGradPlusParams)
def neggrad_plus(ctx: UnlearningContext) -> StateDict:
    """θ_u from ``epochs`` passes of α·CE(retain) − (1 − α)·CE(forget) SGD steps from θ."""
    params = parse_params(NegGradPlusParams, ctx.params, "neggrad_plus")
    xf, yf, xr, yr = ctx.forget_x, ctx.forget_y, ctx.retain_x, ctx.retain_y
    if xf.shape[0] == 0 or xr.shape[0] == 0:
        raise ConfigError("NegGrad+ needs both a non-empty forget set and a non-empty retain set")
    model = ctx.fresh_model(ctx.original).eval()
    opt = torch.optim.SGD(trainable(model), lr=params.lr, momentum=params.momentum)
    generator = torch.Generator().manual_seed(ctx.seed)
    bs = min(params.batch_size, xr.shape[0])
    fbs = min(params.forget_batch_size or params.batch_size, xf.shape[0])
    forget_order = torch.randperm(xf.shape[0], generator=generator)
    cursor = 0
    for epoch in range(params.epochs):
        order = torch.randperm(xr.shape[0], generator=generator)
        for b in track(range(-(-xr.shape[0] // bs)), f"NegGrad+ epoch {epoch + 1}/{params.epochs}"):
            idx = order[b * bs:(b + 1) * bs]
            if cursor + fbs > xf.shape[0]:
                forget_order, cursor = torch.randperm(xf.shape[0], generator=generator), 0
            fidx = forget_order[cursor:cursor + fbs]
            cursor += fbs
            opt.zero_grad(set_to_none=True)
            retain_loss = F.cross_entropy(model(xr[idx].to(ctx.device)), yr[idx].to(ctx.device))
            forget_loss = F.cross_entropy(model(xf[fidx].to(ctx.device)), yf[fidx].to(ctx.device))
            (params.alpha * retain_loss - (1 - params.alpha) * forget_loss).backward()
            ctx.meter.add(idx.numel() + fidx.numel())
            opt.step()
    return state_of(model)
