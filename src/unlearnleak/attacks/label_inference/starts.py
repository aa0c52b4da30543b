"""Class-conditional probe starts and per-class budgets: every class gets probes, also on a collapsed model.

A trained batch-norm network can send almost every input, noise included, to one or two classes (its
running statistics were measured on natural images; noise lands far from them). A generator that starts
every probe from noise then makes probes for those classes only and spends its whole budget trying (issue
18). Here a probe for class c starts where θ already leans towards c:

- **a start pool** (:class:`StartPool`): ``pool`` candidate inputs, each sent to θ once. With public data
  (the ``public`` argument of the generators) the candidates are real samples; without, synthetic images of
  several kinds — the paper's clipped noise, smooth random colour fields at three scales (natural images are
  smooth), and flat colours with a little noise — so that a model that maps noise to one class still sees
  inputs it maps elsewhere. For class c the candidates are ranked by θ's logit margin
  log p_c − max_{j≠c} log p_j (computed from the answers), and attempt j of class c starts from the
  j-th best (``start="noise"`` keeps the paper's start).
- **a per-class schedule** (:class:`ClassSchedule`): attempts are started round-robin over the classes
  that still lack probes, at most ``running_per_class`` of a class at a time; a class whose attempt fails gets
  another attempt (from its next start), up to ``max_attempts`` per probe asked for and ``class_budget``
  queries, so a hard class is retried and an easy class cannot eat the budget. Once a class has a probe, its
  later attempts start from that probe plus a little noise (``reuse_sigma``): a hard class costs one search,
  not one per probe. A class that ends with no probe is named in the probe set's notes with why.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch.nn import functional as F

from unlearnleak.oracle import Oracle

Start = Literal["class", "noise"]


class StartSettings(BaseModel):
    """Where probes start (shared by the iterative generators)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    start: Start = "class"  # "class": the best pool candidates for the class; "noise": the paper's noise
    pool: int = Field(200, ge=1)  # candidate starts, one query each, shared by all classes


class ScheduleSettings(BaseModel):
    """How many tries each class gets (generators that schedule attempts per class)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_attempts: int = Field(3, ge=1)  # attempts per probe asked for (failed attempts are retried)
    class_budget: int | None = Field(5_000, ge=1)  # queries per class (None: only the per-probe limits)
    running_per_class: int = Field(2, ge=1)  # a class's attempts that run side by side
    reuse_sigma: float = Field(0.03, ge=0)  # later attempts start at a found probe + N(0, σ²) noise (0: off)


class PublicData(Protocol):
    """Anything with real inputs ``x`` (n, *input_shape) and labels ``y`` (n,), e.g. a data.Dataset."""

    @property
    def x(self) -> torch.Tensor: ...

    @property
    def y(self) -> torch.Tensor: ...


def synthetic_candidates(shape: tuple[int, ...], n: int, generator: torch.Generator) -> torch.Tensor:
    """``n`` synthetic inputs in [0, 1], (n, *shape): a quarter clipped N(0, 1) noise (the paper's start), half
    smooth random colour fields (uniform values on a 2×2, 4×4 or 8×8 grid, bilinearly upsampled), a quarter
    flat colours plus N(0, 0.1) noise. Non-image shapes get clipped noise only."""
    if len(shape) != 3:
        return torch.randn((n, *shape), generator=generator).clamp_(0.0, 1.0)
    c, h, w = shape
    kinds = torch.arange(n) % 4  # 0 noise, 1–2 smooth fields, 3 flat colour
    out = torch.empty((n, *shape))
    for i in range(n):
        kind = int(kinds[i])
        if kind == 0:
            out[i] = torch.randn(shape, generator=generator).clamp_(0.0, 1.0)
        elif kind == 3:
            colour = torch.rand((c, 1, 1), generator=generator)
            out[i] = (colour + 0.1 * torch.randn(shape, generator=generator)).clamp_(0.0, 1.0)
        else:
            grid = (2, 4, 8)[int(torch.randint(3, (1,), generator=generator))]
            low = torch.rand((1, c, min(grid, h), min(grid, w)), generator=generator)
            out[i] = F.interpolate(low, size=(h, w), mode="bilinear", align_corners=False)[0].clamp_(0.0, 1.0)
    return out


def class_margins(proba: torch.Tensor) -> torch.Tensor:
    """(n, K) log p_c − max_{j≠c} log p_j for every row and class: θ's logit margin towards each class."""
    logp = proba.double().clamp_min(1e-300).log()
    top2 = logp.topk(2, dim=1).values  # (n, 2)
    best_other = torch.where(logp >= top2[:, :1], top2[:, 1:2], top2[:, :1])  # the max over j ≠ c
    return logp - best_other


@dataclass
class StartPool:
    """Candidate starts with θ's answers; ``start(c, j)`` is the j-th best candidate for class c."""

    x: torch.Tensor  # (n, *shape)
    proba: torch.Tensor  # (n, K) θ's answers
    source: str  # "public" or "synthetic"
    _orders: dict[int, torch.Tensor] = field(default_factory=dict)

    @classmethod
    def build(cls, oracle: Oracle, size: int, seed: int, public: PublicData | None = None,
              batch: int = 500) -> StartPool:
        """Draw ``size`` candidates (public samples when given, else synthetic) and ask θ about each once."""
        g = torch.Generator().manual_seed(int(seed) * 7919 + 104729)
        shape = oracle.input_shape
        if public is not None and public.x.shape[0] > 0:
            rows = torch.randperm(public.x.shape[0], generator=g)[:size]
            x, source = public.x[rows].float(), "public"
        else:
            x, source = synthetic_candidates(shape, size, g), "synthetic"
        proba = torch.cat([oracle.predict_proba(x[i:i + batch]) for i in range(0, x.shape[0], batch)])
        return cls(x, proba.double(), source)

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def order(self, c: int) -> torch.Tensor:
        """Candidate indices by θ's margin towards class ``c``, best first."""
        if c not in self._orders:
            self._orders[c] = class_margins(self.proba)[:, c].argsort(descending=True, stable=True)
        return self._orders[c]

    def start(self, c: int, attempt: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The start of attempt ``attempt`` for class ``c`` (1, *shape) and θ's answer for it (1, K)."""
        i = int(self.order(c)[attempt % len(self)])
        return self.x[i:i + 1].clone(), self.proba[i:i + 1]

    def predicted_counts(self) -> list[int]:
        """How many candidates θ predicts as each class (how collapsed the model is)."""
        return torch.bincount(self.proba.argmax(dim=1), minlength=self.proba.shape[1]).tolist()


@dataclass
class ClassSchedule:
    """Which attempt to start next: round-robin over the classes that still lack probes and have budget.

    Attempt j of class c is job (c, j) with its own seed, so a class's attempts do not depend on the others.
    """

    classes: list[int]
    per_class: int
    max_attempts: int
    class_budget: int | None
    running_per_class: int = 1_000_000
    accepted: dict[int, int] = field(default_factory=dict)
    running: dict[int, int] = field(default_factory=dict)
    attempts: dict[int, int] = field(default_factory=dict)
    spent: dict[int, int] = field(default_factory=dict)  # queries of finished attempts
    _turn: int = 0

    def __post_init__(self) -> None:
        for c in self.classes:
            self.accepted[c] = self.running[c] = self.attempts[c] = self.spent[c] = 0

    def wants(self, c: int, live: int = 0) -> bool:
        """Whether class ``c`` may start another attempt (``live``: queries its running attempts spent)."""
        return (self.accepted[c] + self.running[c] < self.per_class
                and self.running[c] < self.running_per_class
                and self.attempts[c] < self.per_class * self.max_attempts
                and not self.over_budget(c, live))

    def over_budget(self, c: int, live: int = 0) -> bool:
        return self.class_budget is not None and self.spent[c] + live >= self.class_budget

    def next_class(self, live: dict[int, int] | None = None) -> int | None:
        """The next class to start an attempt for (round-robin), or None when no class wants one."""
        live = live or {}
        n = len(self.classes)
        for step in range(n):
            c = self.classes[(self._turn + step) % n]
            if self.wants(c, live.get(c, 0)):
                self._turn = (self._turn + step + 1) % n
                self.attempts[c] += 1
                self.running[c] += 1
                return c
        return None

    def finished(self, c: int, accepted: bool, queries: int) -> None:
        self.running[c] -= 1
        self.accepted[c] += int(accepted)
        self.spent[c] += int(queries)

    def report(self) -> dict[str, Any]:
        """Per class: attempts, accepted probes and queries spent (for the probe set's params)."""
        return {"class_attempts": [self.attempts[c] for c in self.classes],
                "class_accepted": [self.accepted[c] for c in self.classes],
                "class_queries": [self.spent[c] for c in self.classes]}


def keep_per_class(made: Sequence[tuple[Any, Any]], per_class: int) -> list[tuple[Any, Any]]:
    """Per class, the accepted attempts (at most ``per_class``), topped up with the failed attempts θ is most
    confident about; the rest are dropped (their queries stay in the run's total)."""
    by_class: dict[int, list[tuple[Any, Any]]] = {}
    for job, m in made:
        by_class.setdefault(job.target, []).append((job, m))
    kept: list[tuple[Any, Any]] = []
    for c, items in by_class.items():
        ok = [jm for jm in items if jm[1].accepted][:per_class]
        failed = [jm for jm in items if not jm[1].accepted]
        failed.sort(key=lambda jm: -_confidence(jm[1], c))
        kept += ok + failed[:max(0, per_class - len(ok))]
    return kept


def _confidence(m: Any, c: int) -> float:
    return float(m.proba[0, c]) if m.proba is not None else -math.inf
