"""Approximate unlearning by gradient ascent on D_u from θ (the paper's approximate method, docs/paper.md §3)."""

from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch.nn import functional as F

from unlearnleak.errors import ConfigError
from unlearnleak.progress import track
from unlearnleak.unlearning.base import StateDict, UnlearningContext, parse_params, register_unlearning, state_of


class GradientAscentParams(BaseModel):
    """τ (``lr``), epochs and batch size (default min(128, |D_u|)); paper: τ = 1e-3, one epoch."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    lr: float = Field(1e-3, gt=0)
    epochs: int = Field(1, ge=1)
    batch_size: int | None = Field(None, ge=1)


@register_unlearning("gradient_ascent", GradientAscentParams)
def gradient_ascent(ctx: UnlearningContext) -> StateDict:
    """θ_u = θ + τ·∇ mean CE(B; θ) for each mini-batch B of D_u, model in eval mode (BN frozen).

    With |D_u| ≤ batch size this is one full-batch step: θ_u − θ = τ·∇ℓ(D_u; θ).
    """
    params = parse_params(GradientAscentParams, ctx.params, "gradient_ascent")
    x, y = ctx.forget_x, ctx.forget_y
    if x.shape[0] == 0:
        raise ConfigError("gradient ascent needs a non-empty forget set")
    model = ctx.fresh_model(ctx.original).eval()
    bs = min(params.batch_size or 128, x.shape[0])
    generator = torch.Generator().manual_seed(ctx.seed)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=params.lr)
    for epoch in range(params.epochs):
        order = torch.randperm(x.shape[0], generator=generator)
        n_batches = x.shape[0] // bs  # full batches only, as the official loss_steps (epochs·n_u // bs steps)
        for b in track(range(n_batches), f"gradient ascent epoch {epoch + 1}/{params.epochs}"):
            idx = order[b * bs:(b + 1) * bs]
            opt.zero_grad(set_to_none=True)
            loss = -F.cross_entropy(model(x[idx].to(ctx.device)), y[idx].to(ctx.device))
            loss.backward()
            ctx.meter.add(idx.numel())
            opt.step()
    return state_of(model)
