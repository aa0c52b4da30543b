"""Gradient-matching objectives: how far a dummy gradient g (P,) is from the target ∇* (P,).

Each objective is a small registered class (``OBJECTIVES``) prepared once per run with the flattened
target and the parameter segments, then called on every restart's gradient (inside ``vmap``). An optional
coordinate ``mask`` (P,) of 0/1 restricts the match to some coordinates: the adaptive preset fits on one
random half of ∇* and scores the other half (gradient cross-validation, ``adaptive.py``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import torch

from unlearnleak.registry import Registry


class Objective(ABC):
    """1 − similarity of a dummy gradient with ∇*; 0 when they point the same way."""

    name: ClassVar[str]

    def __init__(self, target: torch.Tensor, segments: torch.Tensor, n_segments: int,
                 mask: torch.Tensor | None = None) -> None:
        self.mask = mask
        self.target = target if mask is None else target * mask  # (P,)
        self.segments = segments  # (P,) index of the parameter tensor of each coordinate
        self.n_segments = n_segments

    def __repr__(self) -> str:
        share = "" if self.mask is None else f", mask={float(self.mask.mean()):.2f}"
        return f"{type(self).__name__}(P={self.target.numel()}{share})"

    def masked(self, g: torch.Tensor) -> torch.Tensor:
        """g restricted to the objective's coordinates (zero elsewhere)."""
        return g if self.mask is None else g * self.mask

    @abstractmethod
    def __call__(self, g: torch.Tensor) -> torch.Tensor:
        """The cost of one dummy gradient g (P,); a scalar."""


OBJECTIVES: Registry[type[Objective]] = Registry("inversion objective")


@OBJECTIVES.register("cosine")
class Cosine(Objective):
    """One cosine over all parameters (the paper's cost, docs/paper.md §2.2)."""

    name = "cosine"

    def __init__(self, target: torch.Tensor, segments: torch.Tensor, n_segments: int,
                 mask: torch.Tensor | None = None) -> None:
        super().__init__(target, segments, n_segments, mask)
        self.target_norm = self.target.norm()

    def __call__(self, g: torch.Tensor) -> torch.Tensor:
        g = self.masked(g)
        return 1 - (g @ self.target) / (g.norm() * self.target_norm).clamp_min(1e-30)


@OBJECTIVES.register("layer_cosine")
class LayerCosine(Objective):
    """The mean of per-parameter-tensor cosines: every layer counts the same, whatever its size."""

    name = "layer_cosine"

    def __init__(self, target: torch.Tensor, segments: torch.Tensor, n_segments: int,
                 mask: torch.Tensor | None = None) -> None:
        super().__init__(target, segments, n_segments, mask)
        sq = torch.zeros(n_segments, device=target.device, dtype=target.dtype)
        self.target_seg_norm = sq.index_add_(0, segments, self.target ** 2).sqrt()

    def __call__(self, g: torch.Tensor) -> torch.Tensor:
        g = self.masked(g)
        zeros = torch.zeros(self.n_segments, device=g.device, dtype=g.dtype)
        dots = zeros.index_add(0, self.segments, g * self.target)
        sq = zeros.index_add(0, self.segments, g * g)
        return 1 - (dots / (sq.sqrt() * self.target_seg_norm).clamp_min(1e-30)).mean()
