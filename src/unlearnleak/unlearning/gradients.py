"""Loss gradients, Hessian-vector products and the two inverse-HVP solvers the closed-form methods share.

Warnecke et al. (NDSS 2023) update θ with ∇ℓ and H⁻¹∇ℓ instead of retraining. The Hessian is never formed:
``hvp`` differentiates the gradient twice (Pearlmutter's trick), and ``solve`` finds x with (H + λI)x = b by
conjugate gradient or by LiSSA (the Neumann series x ← b + (I − (H + λI)/s)x, scaled by 1/s at the end).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn
from torch.nn import functional as F

from unlearnleak.unlearning.base import CostMeter, trainable

Vector = list[torch.Tensor]


def loss_gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, reduction: str = "sum",
                  batch_size: int = 256, meter: CostMeter | None = None) -> Vector:
    """∇_θ of the cross-entropy of (x, y), summed or averaged over the rows; model in eval mode."""
    params = trainable(model)
    device = params[0].device
    total = [torch.zeros_like(p) for p in params]
    for i in range(0, x.shape[0], batch_size):
        xb, yb = x[i:i + batch_size].to(device), y[i:i + batch_size].to(device)
        loss = F.cross_entropy(model(xb), yb, reduction="sum")
        for t, g in zip(total, torch.autograd.grad(loss, params), strict=True):
            t.add_(g)
        if meter is not None:
            meter.add(xb.shape[0])
    if reduction == "mean" and x.shape[0]:
        total = [t / x.shape[0] for t in total]
    return total


def hvp_operator(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, damping: float = 0.0,
                 batch_size: int = 256, meter: CostMeter | None = None) -> Callable[[Vector], Vector]:
    """v ↦ (H + λI)v with H the Hessian of the MEAN cross-entropy over (x, y), computed batch by batch."""
    params = trainable(model)
    device = params[0].device
    n = x.shape[0]

    def apply(v: Vector) -> Vector:
        out = [torch.zeros_like(p) for p in params]
        for i in range(0, n, batch_size):
            xb, yb = x[i:i + batch_size].to(device), y[i:i + batch_size].to(device)
            loss = F.cross_entropy(model(xb), yb, reduction="sum") / n
            grads = torch.autograd.grad(loss, params, create_graph=True)
            inner = torch.stack([(g * vi).sum() for g, vi in zip(grads, v, strict=True)]).sum()
            for o, h in zip(out, torch.autograd.grad(inner, params), strict=True):
                o.add_(h)
            if meter is not None:
                meter.add(xb.shape[0], passes=2)  # the gradient and its differentiation
        return [o + damping * vi for o, vi in zip(out, v, strict=True)]

    return apply


def dot(a: Sequence[torch.Tensor], b: Sequence[torch.Tensor]) -> torch.Tensor:
    """⟨a, b⟩ over all tensors."""
    return sum(((u * w).sum() for u, w in zip(a, b, strict=True)), torch.zeros(()))


def norm(a: Sequence[torch.Tensor]) -> float:
    """‖a‖₂ over all tensors."""
    return float(torch.sqrt(sum(((u.double() ** 2).sum() for u in a), torch.zeros((), dtype=torch.float64))))


@dataclass(frozen=True)
class Solution:
    """x ≈ (H + λI)⁻¹ b and the relative residual ‖(H + λI)x − b‖ / ‖b‖ of the returned x."""

    x: Vector
    residual: float
    iterations: int


def conjugate_gradient(apply: Callable[[Vector], Vector], b: Vector, iterations: int, tol: float = 1e-6) -> Vector:
    """Conjugate gradient for (H + λI)x = b (needs H + λI positive definite along the iterates)."""
    x = [torch.zeros_like(t) for t in b]
    r = [t.clone() for t in b]
    p = [t.clone() for t in b]
    rs = dot(r, r)
    b_norm = norm(b)
    for _ in range(iterations):
        ap = apply(p)
        curvature = dot(p, ap)
        if float(curvature) <= 0:  # negative curvature: the damping is too small; stop at the last good x
            break
        alpha = rs / curvature
        x = [xi + alpha * pi for xi, pi in zip(x, p, strict=True)]
        r = [ri - alpha * api for ri, api in zip(r, ap, strict=True)]
        rs_new = dot(r, r)
        if float(rs_new) ** 0.5 <= tol * b_norm:
            break
        p = [ri + (rs_new / rs) * pi for ri, pi in zip(r, p, strict=True)]
        rs = rs_new
    return x


def lissa(apply: Callable[[Vector], Vector], b: Vector, iterations: int, scale: float) -> Vector:
    """LiSSA (Agarwal et al. 2017): x_{j+1} = b + x_j − (H + λI)x_j / s; returns x / s (needs s > ‖H + λI‖)."""
    x = [t.clone() for t in b]
    for _ in range(iterations):
        hx = apply(x)
        x = [bi + xi - hi / scale for bi, xi, hi in zip(b, x, hx, strict=True)]
    return [xi / scale for xi in x]


def solve(apply: Callable[[Vector], Vector], b: Vector, *, solver: Literal["cg", "lissa"], iterations: int,
          scale: float = 1.0) -> Solution:
    """x ≈ (H + λI)⁻¹ b by ``solver``, with the residual measured by one more product."""
    x = conjugate_gradient(apply, b, iterations) if solver == "cg" else lissa(apply, b, iterations, scale)
    ax = apply(x)
    residual = norm([a - bi for a, bi in zip(ax, b, strict=True)]) / max(norm(b), 1e-300)
    return Solution(x=x, residual=residual, iterations=iterations)
