"""Seeded SGD training, fine-tuning and evaluation; bit-identical on CPU for the same seed (docs/paper.md §5)."""

from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn
from torch.nn import functional as F

from unlearnleak.progress import Task, task


class TrainConfig(BaseModel):
    """SGD hyperparameters. Defaults are the paper's fine-tuning stage: 1 epoch, lr 1e-3, no momentum."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    epochs: int = Field(1, ge=0)
    lr: float = Field(1e-3, gt=0)
    momentum: float = Field(0.0, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    batch_size: int = Field(128, ge=1)
    augment: bool = False  # random crop (pad 4) + horizontal flip, images only
    freeze_bn: bool = False  # train in eval() mode: batch-norm statistics frozen (the paper's fine-tune)
    milestones: tuple[int, ...] = ()  # epochs at which lr is multiplied by gamma
    gamma: float = Field(0.1, gt=0)
    drop_last: bool = False

    @model_validator(mode="after")
    def _check_milestones(self) -> TrainConfig:
        if list(self.milestones) != sorted(self.milestones):
            raise ValueError(f"milestones must be increasing, got {self.milestones}")
        return self


def augment_batch(x: torch.Tensor, generator: torch.Generator, pad: int = 4) -> torch.Tensor:
    """Random crop with zero padding ``pad`` and random horizontal flip, per sample, on a batch (N,C,H,W)."""
    n, c, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    oy = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    ox = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    flip = torch.rand(n, generator=generator) < 0.5
    rows = (oy[:, None] + torch.arange(h))[:, None, :, None]  # (n,1,h,1)
    cols = (ox[:, None] + torch.arange(w))[:, None, None, :]  # (n,1,1,w)
    out = padded[torch.arange(n)[:, None, None, None], torch.arange(c)[None, :, None, None], rows, cols]
    return torch.where(flip[:, None, None, None], out.flip(-1), out)


def epoch_order(n: int, generator: torch.Generator, keep: torch.Tensor | None) -> torch.Tensor:
    """One epoch's shuffle over all ``n`` rows, then filtered by ``keep`` (same order without the removed rows)."""
    perm = torch.randperm(n, generator=generator)
    return perm if keep is None else perm[keep[perm]]


def train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, config: TrainConfig, *, seed: int,
          device: str | torch.device = "cpu", keep: torch.Tensor | None = None,
          desc: str = "training") -> nn.Module:
    """Train ``model`` in place with mini-batch SGD on (x, y) and return it (in eval mode).

    Args:
        keep: optional bool mask over rows; the shuffle is drawn over all rows with ``seed`` and then
            filtered, so exact unlearning repeats the original data order without the forget set.
    """
    if keep is not None and keep.shape != (x.shape[0],):
        raise ValueError(f"keep mask has shape {tuple(keep.shape)}, expected ({x.shape[0]},)")
    generator = torch.Generator().manual_seed(seed)
    model.to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=list(config.milestones), gamma=config.gamma)
    image = x.dim() == 4
    rows = x.shape[0] if keep is None else int(keep.sum())
    size = min(config.batch_size, rows) if rows else 1
    per_epoch = rows // size if config.drop_last else -(-rows // size)
    with task(f"{desc} ({config.epochs} epochs of {per_epoch} batches)", config.epochs * per_epoch) as step:
        for _ in range(config.epochs):
            _epoch(model, x, y, config, opt, generator, keep, image, device, step)
            sched.step()
    return model.eval()


def _epoch(model: nn.Module, x: torch.Tensor, y: torch.Tensor, config: TrainConfig, opt: torch.optim.Optimizer,
           generator: torch.Generator, keep: torch.Tensor | None, image: bool, device: str | torch.device,
           step: Task) -> None:
    """One pass over the (kept) rows in a fresh seeded order, one progress step per batch."""
    order = epoch_order(x.shape[0], generator, keep)
    n = order.numel()
    bs = min(config.batch_size, n) if n else 1
    n_batches = n // bs if config.drop_last else -(-n // bs)
    model.eval() if config.freeze_bn else model.train()
    for b in range(n_batches):
        idx = order[b * bs:(b + 1) * bs]
        xb = x[idx]
        if config.augment and image:
            xb = augment_batch(xb, generator)
        xb, yb = xb.to(device), y[idx].to(device)
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(xb), yb)
        loss.backward()
        opt.step()
        step.advance()


@torch.no_grad()
def predict_proba(model: nn.Module, x: torch.Tensor, *, device: str | torch.device = "cpu",
                  batch_size: int = 512) -> torch.Tensor:
    """Softmax probabilities (N, K) of ``model`` in eval mode, on CPU."""
    model.eval()
    outs = [F.softmax(model(x[i:i + batch_size].to(device)), dim=1).cpu() for i in range(0, x.shape[0], batch_size)]
    return torch.cat(outs) if outs else torch.empty(0)


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, device: str | torch.device = "cpu") -> float:
    """Top-1 accuracy of ``model`` on (x, y); NaN for an empty set."""
    if x.shape[0] == 0:
        return float("nan")
    pred = predict_proba(model, x, device=device).argmax(1)
    return float((pred == y.cpu()).float().mean())
