"""Gradient inversion: find inputs whose gradient on the attacked model matches ∇* (docs/paper.md §2.1–2.2).

The engine optimises R restarts × k samples at once. Each restart's cost is

    objective(∇_θ ℓ(f_θ(x_r), y), ∇*)  +  Σ_priors w_{r,p}·penalty_p(x_r)

with the objective (``objectives.py``: global cosine, or the mean of per-parameter-tensor cosines) and the
priors (``priors.py``: total variation, batch-norm statistics, penultimate-feature matching) small
registered classes; the prior weights may differ per restart (the adaptive preset races them, ``adaptive.py``).
Which recipes exist (``PRESETS``): ``paper`` (the official code's), ``modern`` (breaching's ``modern`` recipe
re-implemented from its definitions: Adam with a soft sign, warm-up and cosine decay, a patterned start in the
model's normalised input space, colour TV with double opponents, a penultimate-feature term), ``smooth`` (a
strong TV prior with feature matching) and ``best``, the adaptive default that races them (``adaptive.py``).
With R > 1 the input gradient of every restart's cost comes from one ``vmap(grad(cost))`` call (``torch.func``,
double back-propagation inside); a single restart (or ``batched=False``) uses plain autograd, which is
cheaper for one — the numbers are the same. The optimiser is ``torch.optim`` (Adam or AdamW; the paper's
"signed" gradient replaces ``.grad`` by its sign before the step, the "soft" sign by tanh(s·g)/s with s falling
linearly from 1 towards 0 over the run), the schedule ``torch.optim.lr_scheduler``.

Models take raw inputs (``Normalized`` wrappers, DEV_CONTRACT.md), so x lives in [0, 1] pixel space and the
model sees exactly the normalised input the optimisation used — also when restarts are scored (the official
code scores the raw input, a bug not copied here; docs/paper.md §10.2). ``space="normalised"`` optimises
z = (x − mean)/std instead (x = mean + std·z): the step sizes, the start and the sign act on z, as in breaching.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn
from torch.func import functional_call, grad, vmap
from torch.nn import functional as F

from unlearnleak.attacks.closed_forms import penultimate_features as _penultimate_features
from unlearnleak.attacks.feature_recovery.objectives import OBJECTIVES
from unlearnleak.attacks.feature_recovery.priors import (
    PRIORS,
    Prior,
    build_priors,
    input_normalisation,
    total_variation,
)
from unlearnleak.attacks.feature_recovery.target_gradient import TargetGradient
from unlearnleak.errors import ConfigError
from unlearnleak.registry import Registry

__all__ = ["PRESETS", "GradientMatcher", "InversionConfig", "InversionResult", "RaceEntry", "learning_rate",
           "penultimate_features", "preset", "run_inversion", "second_order_attention", "total_variation"]

PATTERN = 4  # side of the tile of the "patterned" start (breaching's ``patterned-4``)


@contextmanager
def second_order_attention() -> Iterator[None]:
    """Attention on PyTorch's math kernel: the fused ones (flash, memory-efficient) have no second derivative,
    and matching gradients differentiates the model's gradient (a ViT's ``scaled_dot_product_attention``)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel(SDPBackend.MATH):
        yield


class RaceEntry(BaseModel):
    """One recipe in the adaptive race: a preset (optimiser, start, space, priors) and the weights of one of its
    priors to try, one restart each (``()``: the preset's own weight, one restart)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    recipe: str
    prior: str = "total_variation"
    weights: tuple[float, ...] = ()

    @model_validator(mode="after")
    def _check(self) -> RaceEntry:
        if self.recipe not in PRESETS:
            raise ValueError(f"unknown race recipe {self.recipe!r}; choose one of {PRESETS.names()}")
        if PRESETS.get(self.recipe).race:
            raise ValueError(f"race recipe {self.recipe!r} races itself; name a plain recipe")
        if self.prior not in PRIORS:
            raise ValueError(f"unknown race prior {self.prior!r}; choose one of {PRIORS.names()}")
        if any(w < 0 for w in self.weights) or len(set(self.weights)) != len(self.weights):
            raise ValueError(f"race weights must be distinct and >= 0, got {self.weights}")
        return self

    @property
    def restarts(self) -> int:
        """Restarts this entry runs in the race (one per weight)."""
        return max(1, len(self.weights))


class InversionConfig(BaseModel):
    """Every knob of the inversion; presets (``PRESETS``) are named instances of it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    iterations: int = Field(2000, ge=1)
    restarts: int = Field(1, ge=1)
    batched: bool = True  # restarts as one vmapped batch; False: a Python loop over restarts per step
    lr: float = Field(0.1, gt=0)
    optimizer: Literal["adam", "adamw"] = "adam"
    weight_decay: float = Field(0.0, ge=0)  # AdamW's decoupled decay (PyTorch's AdamW default is 0.01)
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = Field(1e-8, gt=0)
    # The input gradient before the optimiser step: as it is (False), its sign (True), or the "soft" sign
    # tanh(s·g)/s with s = 1 − t/T (close to the sign early, to the raw gradient late; breaching's ``modern``).
    signed: bool | Literal["soft"] = False
    schedule: Literal["constant", "step", "cosine"] = "cosine"
    warmup: float = Field(0.0, ge=0, lt=1)  # fraction of each phase's steps with a linear lr warm-up from 0
    # N(0,1) | U(0,1) | 0.5 + N(0, 0.1²) | a 4×4 tile of N(0,1) repeated over the image — drawn in ``space``
    init: Literal["randn", "rand", "gray", "patterned"] = "randn"
    space: Literal["pixel", "normalised"] = "pixel"  # optimise x in [0, 1] or z = (x − mean)/std
    boxed: bool = True  # clamp x to [0, 1] before every step (images)
    cost: str = "cosine"  # an OBJECTIVES name: "cosine" | "layer_cosine"
    total_variation: float = Field(0.0, ge=0)
    bn_prior: float = Field(0.0, ge=0)  # weight of the batch-norm statistics prior
    feature_match: float = Field(0.0, ge=0)  # weight of matching the penultimate features read off ∇* (k = 1)
    priors: dict[str, float] = Field(default_factory=dict)  # further registered priors (PRIORS) → weight
    feature_phase: float = Field(0.0, ge=0, lt=1)  # share of the run matching only features + priors (cheap)
    keep_best: bool = False  # return each restart's best iterate (by ``best_by``), not its last
    # The cost that picks the kept iterate: the gradient objective alone, or the total with the weighted priors (as
    # breaching keeps its best). With strong priors the objective's minimum comes early, on a noisier image.
    best_by: Literal["objective", "total"] = "objective"
    prune_at: tuple[float, ...] = ()  # fractions of the run at which the worse half of the restarts stops
    # The adaptive race (adaptive.py): these recipes run for race_share of the budget on a random half of ∇*'s
    # coordinates, are scored on the held-out half, and the winner continues on all of ∇*. () = off.
    race: tuple[RaceEntry, ...] = ()
    race_share: float = Field(0.75, gt=0, lt=1)
    race_holdout: float = Field(0.5, gt=0, lt=1)  # share of ∇*'s coordinates held out to score the race
    race_min_steps: int = Field(0, ge=0)  # race only if each candidate gets this many steps (else one trajectory)
    race_continue_lr: float = Field(1.0, gt=0)  # factor on the winner's learning rate when it continues
    # How a race leg relates to the recipe's schedule: "compressed" — each leg runs the recipe's whole schedule
    # (warm-up, decay to 0) in its share, and the winner restarts a fresh one; "truncated" — each leg is the first
    # steps of the recipe's own schedule for the winner's whole run, and the winner continues that schedule (and
    # its optimiser state) from where its leg stopped.
    race_schedule: Literal["compressed", "truncated"] = "compressed"
    # "truncated" only: each leg's iterate is scored after a cool-down probe of race_cooldown × its leg's steps
    # (its learning rate decayed from where the leg stopped to 0, on a copy; the winner continues the un-cooled
    # leg): an undecayed iterate carries its step noise, which hides how well the recipe explains ∇*.
    race_cooldown: float = Field(0.0, ge=0, le=2)
    # "truncated" only, instead of a cool-down: score the mean of the leg's last race_average × L iterates (pixel
    # space; a tail average damps the step noise as a cool-down does, without its extra steps).
    race_average: float = Field(0.0, ge=0, lt=1)
    # The pick: among the candidates whose held-out cost is within (1 + race_tolerance) × the lowest, the one whose
    # image has the lowest total variation (0: the lowest held-out cost alone).
    race_tolerance: float = Field(0.0, ge=0)
    # What breaks that tie: "tv", the lowest total variation; "agreement", the image that agrees most (mean PSNR)
    # with the other candidates' scored images — the answer the recipes share, a measure no single prior shapes.
    race_pick: Literal["tv", "agreement"] = "tv"
    # Before that pick, the agreement gate (0 = off): the first race entry is the data-faithful recipe (the weakest
    # prior). If its scored image agrees with another recipe's to >= race_agreement dB PSNR, ∇* pins the image down
    # and it wins outright; otherwise the pick above decides.
    race_agreement: float = Field(0.0, ge=0)
    # The consensus (0 = off): when the gate above does not fire (∇* does not pin the image down), the returned image
    # is (1 - race_consensus) × the winner's final image + race_consensus × the mean of the other candidates' scored
    # images (aligned per label), on the hypothesis that under that uncertainty a blend of the recipes' answers has a
    # lower expected error than one of them. No extra steps. Off in best: worse on the held-out half (measured in
    # docs/feature_recovery.md, "The consensus").
    race_consensus: float = Field(0.0, ge=0, lt=1)
    short_recipe: str | None = None  # the preset run alone when the race is unaffordable (None: the first entry)

    @model_validator(mode="after")
    def _check(self) -> InversionConfig:
        if any(not 0 < f < 1 for f in self.prune_at) or list(self.prune_at) != sorted(self.prune_at):
            raise ValueError(f"prune_at must be increasing fractions in (0, 1), got {self.prune_at}")
        if not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"betas must lie in [0, 1), got {self.betas}")
        if self.cost not in OBJECTIVES:
            raise ValueError(f"unknown cost {self.cost!r}; choose one of {OBJECTIVES.names()}")
        unknown = [n for n in self.priors if n not in PRIORS]
        if unknown or any(w < 0 for w in self.priors.values()):
            raise ValueError(f"priors must map registered priors {PRIORS.names()} to weights >= 0, got {self.priors}")
        if self.short_recipe is not None and (self.short_recipe not in PRESETS or PRESETS.get(self.short_recipe).race):
            raise ValueError(f"short_recipe must name a preset that does not race, got {self.short_recipe!r}")
        if self.race_average and self.race_cooldown:
            raise ValueError("race_average and race_cooldown both smooth the scored leg; set one of them to 0")
        return self

    def with_overrides(self, **overrides: Any) -> InversionConfig:
        """A validated copy with ``overrides`` applied (None values are ignored)."""
        data = self.model_dump()
        data.update({k: v for k, v in overrides.items() if v is not None})
        return InversionConfig.model_validate(data)


PRESETS: Registry[InversionConfig] = Registry("inversion preset")

PRESETS.register("paper")(InversionConfig(
    # The official recipe (docs/paper.md §2.2): randn init, one global cosine, TV 1e-2, signed gradients,
    # AdamW (lr 0.04, PyTorch's default weight decay 0.01 on x), ×0.5 at 3/8, 5/8, 7/8, boxed, 5 restarts.
    iterations=10_000, restarts=5, lr=0.04, optimizer="adamw", weight_decay=0.01, signed=True,
    schedule="step", init="randn", boxed=True, cost="cosine", total_variation=1e-2,
))
PRESETS.register("modern")(InversionConfig(
    # breaching's ``modern`` attack (JonasGeiping/breaching, config/attack/modern.yaml), re-implemented from its
    # definitions: in the normalised input space, a patterned 4×4 start, Adam lr 0.1 with the soft sign, a
    # linear warm-up then cosine decay, boxed, one global cosine, colour TV with double opponents 0.1 and the
    # penultimate features' mean squared error 0.1, the best iterate kept by the total objective (cosine + priors),
    # as breaching (measured against breaching from the same start: benchmarks/modern_bisect.py, benchmarks/README.md).
    # Still different: the warm-up is 5 % of the run from lr/W (breaching: 50 steps from 0; the same length at 1,000
    # iterations) and the cosine reaches 0 over the steps after it (breaching: a cosine of the whole run's length
    # begun after the warm-up, ending near 0.007·lr; its shape measured no better on the tuning cases and 0.8 dB
    # worse on the end-to-end test's exact cell); the box is applied before each step (breaching: after, so its first
    # gradient is taken at the unclamped start); the kept iterate is the one whose cost was measured (breaching keeps
    # the one after that step); the features are read off all output rows (breaching: the label's; same for k = 1).
    iterations=2000, restarts=1, lr=0.1, optimizer="adam", signed="soft", schedule="cosine", warmup=0.05,
    init="patterned", space="normalised", boxed=True, cost="cosine", priors={"colour_tv": 0.1, "feature_mse": 0.1},
    keep_best=True, best_by="total",
))
PRESETS.register("smooth")(InversionConfig(
    # The default of issue 3: a fixed strong TV prior (0.3) with feature matching, tuned on the pretrained
    # ConvNet-16. Strong where ∇* says little (trained BN nets), too smooth where ∇* is informative.
    iterations=2000, restarts=1, lr=0.1, optimizer="adam", signed=False, schedule="cosine", init="rand",
    boxed=True, cost="cosine", total_variation=0.3, feature_match=1.0, feature_phase=0.3, keep_best=True,
))
PRESETS.register("best")(InversionConfig(
    # The project's default, adaptive (adaptive.py, docs/feature_recovery.md): three complete recipes race on
    # half of ∇*'s coordinates, each for the first 10 % of the budget (race_share 0.3 / 3) of its OWN schedule
    # (truncated, not compressed), scored on the other half after a cool-down probe of half a leg; the winner is
    # `paper` if its image agrees with another recipe's to ≥ 22 dB PSNR (∇* pins the image down), else the
    # smoothest image (lowest TV) among those whose held-out cost is within 1.25× the lowest; it continues
    # its schedule and optimiser state on all of ∇* (its schedule spans T − 2·L − 3·C = 0.65·T steps: 650 at
    # 1,000 iterations). Only when each leg gets ≥ 100 steps (≥ 1,000 iterations); below, the whole budget goes
    # to `modern`. Measured on the suite's tuning cases: benchmarks/tune_race.py.
    iterations=2000, restarts=1, keep_best=True,
    race=(RaceEntry(recipe="paper", prior="total_variation", weights=(0.01,)),
          RaceEntry(recipe="modern", prior="colour_tv", weights=(0.1,)),
          RaceEntry(recipe="smooth", prior="total_variation", weights=(0.3,))),
    race_schedule="truncated", race_share=0.3, race_cooldown=0.5, race_min_steps=100, race_tolerance=0.25,
    race_agreement=22.0, short_recipe="modern",
))
PRESETS.register("tabular")(InversionConfig(
    # Rows: no image priors, no box; used when the analytic recovery does not apply (k > 1, no bias).
    iterations=2000, restarts=4, lr=0.05, optimizer="adam", schedule="cosine", init="randn", boxed=False,
    cost="cosine", total_variation=0.0, keep_best=True,
))


def preset(name: str, **overrides: Any) -> InversionConfig:
    """The named preset with ``overrides`` (e.g. ``iterations=500``) applied and validated."""
    return PRESETS.get(name).with_overrides(**overrides)


@dataclass(frozen=True)
class InversionResult:
    """The chosen restart's inputs and the bookkeeping of the run."""

    x: torch.Tensor  # (k, *input_shape)
    restart_costs: torch.Tensor  # (R,) final gradient cost of each restart (last cost if stopped early)
    best_restart: int
    iterations: int  # iterations actually run
    seconds: float
    timings: dict[str, float] = field(default_factory=dict)
    history: list[tuple[int, float]] = field(default_factory=list)  # (iteration, best cost so far)
    race: dict[str, Any] | None = None  # the adaptive preset's choice (candidates, held-out scores, winner)
    candidates: torch.Tensor | None = None  # (R_alive, k, …) every surviving restart's result, on the device
    alive: torch.Tensor | None = None  # (R_alive,) their restart indices
    optimizer_state: dict[str, Any] | None = None  # the gradient phase's optimiser state at the end (to continue)
    average: torch.Tensor | None = None  # (R_alive, k, …) mean of the last ``average_last`` iterates (pixel space)


def learning_rate(config: InversionConfig, step: int, total: int) -> float:
    """The learning rate of iteration ``step`` (0-based) of ``total``."""
    lr = config.lr
    warm = int(config.warmup * total)
    if warm and step < warm:
        return lr * (step + 1) / warm
    if config.schedule == "step":  # MultiStepLR(γ=0.5) at the official milestones (3/8, 5/8, 7/8)
        milestones = (int(total // 2.667), int(total // 1.6), int(total // 1.142))  # as the official code
        return lr * 0.5 ** sum(step >= m for m in milestones)
    if config.schedule == "cosine":
        span = max(total - warm, 1)
        return lr * 0.5 * (1 + math.cos(math.pi * (step - warm) / span))
    return lr


def penultimate_features(model: nn.Module, target: TargetGradient,
                         num_classes: int) -> tuple[nn.Module, torch.Tensor] | None:
    """The output layer's input for k = 1 read off ∇* (``closed_forms.penultimate_features``)."""
    return _penultimate_features(model, dict(zip(target.names, target.tensors, strict=True)), num_classes)


FEATURE_PRIORS = ("feature_match", "feature_mse")  # priors that enable the cheap feature-only phase


class GradientMatcher:
    """The per-restart cost and its input gradient, with every constant prepared once.

    ``mask`` (P,) restricts the objective to some coordinates of ∇* (gradient cross-validation);
    ``extra_priors`` names priors to build even at weight 0, so that their weight can be raced per restart;
    ``prior_instances`` are priors the caller built (e.g. around a decoded image).
    """

    def __init__(self, model: nn.Module, target: TargetGradient, labels: torch.Tensor, config: InversionConfig,
                 *, mask: torch.Tensor | None = None, extra_priors: tuple[str, ...] = (),
                 input_shape: tuple[int, ...] | None = None, prior_instances: tuple[Prior, ...] = ()) -> None:
        self.model = model.eval()
        self.config = config
        named = dict(model.named_parameters())
        missing = [n for n in target.names if n not in named]
        if missing:
            raise ConfigError(f"the target gradient names parameters the model lacks: {missing[:5]}")
        self.names = target.names
        self.params = {n: named[n].detach() for n in self.names}  # for torch.func (no outer graph)
        # For plain autograd (one restart): the model's own parameters when they require grad — no
        # functional_call overhead, exactly what a hand-written loop does — else leaf copies.
        self._direct = all(named[n].requires_grad for n in self.names)
        self.leaves = {n: named[n] if self._direct else named[n].detach().clone().requires_grad_(True)
                       for n in self.names}
        self.buffers = {n: b.detach() for n, b in model.named_buffers()}
        first = next(iter(self.params.values()))
        device, dtype = first.device, first.dtype
        self.labels = labels.to(device)
        self.target = target.flat().to(device=device, dtype=dtype)  # (P,)
        sizes = torch.tensor([t.numel() for t in target.tensors], device=device)
        self.segments = torch.repeat_interleave(torch.arange(len(sizes), device=device), sizes)  # (P,)
        self.n_segments = len(sizes)
        objective = OBJECTIVES.get(config.cost)
        self.objective = objective(self.target, self.segments, self.n_segments,
                                   None if mask is None else mask.to(device=device, dtype=dtype))
        self.full_objective = objective(self.target, self.segments, self.n_segments) if mask is not None \
            else self.objective
        self.priors: list[Prior] = build_priors(config, model, target, self.labels, input_shape, extra_priors,
                                                prior_instances)
        self.prior_names = [p.name for p in self.priors]
        self.default_weights = torch.tensor([p.weight for p in self.priors], device=device, dtype=dtype)
        self.feature_prior = next((p for p in self.priors if p.name in FEATURE_PRIORS), None)

    def __repr__(self) -> str:
        return f"GradientMatcher(objective={self.objective!r}, priors={self.priors!r})"

    @property
    def feature_target(self) -> torch.Tensor | None:
        """The penultimate features read off ∇* (k = 1), or None when feature matching is off or impossible."""
        prior = self.feature_prior
        return None if prior is None else prior.features  # type: ignore[attr-defined]

    def _weights(self, weights: torch.Tensor | None) -> torch.Tensor:
        return self.default_weights if weights is None else weights

    def _penalties(self, x: torch.Tensor) -> torch.Tensor:
        """(n_priors,) unweighted penalties of the forward pass just run."""
        if not self.priors:
            return x.new_zeros(0)
        return torch.stack([p.penalty(x) for p in self.priors])

    def _forward(self, params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        for prior in self.priors:
            prior.clear()
        return functional_call(self.model, (params, self.buffers), (x,))

    def _gradient_cost(self, x: torch.Tensor, autograd: bool = False,
                       objective: Callable[[torch.Tensor], torch.Tensor] | None = None
                       ) -> tuple[torch.Tensor, torch.Tensor]:
        """(objective cost, unweighted penalties) of one restart's inputs x (k, …)."""
        if autograd:
            if self._direct:
                for prior in self.priors:
                    prior.clear()
                logits = self.model(x)
            else:
                logits = self._forward(self.leaves, x)
            loss = F.cross_entropy(logits, self.labels)
            penalties = self._penalties(x)
            grads = torch.autograd.grad(loss, list(self.leaves.values()), create_graph=True,
                                        materialize_grads=True)  # a parameter forward never uses: 0
            g = torch.cat([t.reshape(-1) for t in grads])
        else:
            def loss_fn(params: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
                return F.cross_entropy(self._forward(params, x), self.labels), self._penalties(x)

            named, penalties = grad(loss_fn, has_aux=True)(self.params)
            g = torch.cat([named[n].reshape(-1) for n in self.names])  # (P,)
        return (objective or self.objective)(g), penalties

    def cost(self, x: torch.Tensor, weights: torch.Tensor | None = None, *,
             autograd: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """(total cost, objective cost) of one restart; the first is differentiated, the second reported."""
        grad_cost, penalties = self._gradient_cost(x, autograd)
        total = grad_cost + (self._weights(weights) * penalties).sum() if self.priors else grad_cost
        return total, grad_cost.detach()

    def feature_cost(self, x: torch.Tensor, weights: torch.Tensor | None = None, *,
                     autograd: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """(features + priors, feature mismatch) of one restart: one forward pass, no parameter gradient."""
        assert self.feature_prior is not None
        self._forward(self.params, x)
        penalties = self._penalties(x)
        total = (self._weights(weights) * penalties).sum()
        return total, penalties[self.priors.index(self.feature_prior)].detach()

    def score(self, x: torch.Tensor, *, full: bool = True, weights: torch.Tensor | None = None) -> torch.Tensor:
        """The objective cost of every restart in x (R, k, …), without priors; shape (R,).

        ``full``: over all of ∇* (else only the matcher's masked coordinates); ``weights`` (R, n_priors): the
        total cost instead, with the priors so weighted (inside ``hooks()``)."""
        objective = self.full_objective if full else self.objective
        if weights is None:
            return vmap(lambda xr: self._gradient_cost(xr, objective=objective)[0])(x).detach()

        def total(xr: torch.Tensor, wr: torch.Tensor) -> torch.Tensor:
            grad_cost, penalties = self._gradient_cost(xr, objective=objective)
            return grad_cost + (wr * penalties).sum() if self.priors else grad_cost
        return vmap(total)(x, weights).detach()

    @contextmanager
    def hooks(self) -> Iterator[None]:
        """Install the hooks that capture what the priors need (batch-norm inputs, penultimate features)."""
        with ExitStack() as stack:
            for prior in self.priors:
                stack.enter_context(prior.hooks(self.model))
            yield


@dataclass(frozen=True)
class Space:
    """Where the optimiser lives: x = shift + scale·p (pixel space: p = x; normalised: p = (x − mean)/std)."""

    shift: torch.Tensor | None = None  # broadcasts on (…, C, H, W); None: the identity
    scale: torch.Tensor | None = None

    @staticmethod
    def of(model: nn.Module, config: InversionConfig) -> Space:
        """The configured space for ``model`` (its ``Normalized`` constants; none: pixel space)."""
        norm = input_normalisation(model) if config.space == "normalised" else None
        return Space() if norm is None else Space(norm[0], norm[1])

    def to_x(self, p: torch.Tensor) -> torch.Tensor:
        return p if self.shift is None or self.scale is None else self.shift + self.scale * p

    def to_p(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.shift is None or self.scale is None else (x - self.shift) / self.scale

    def grad_p(self, gx: torch.Tensor) -> torch.Tensor:
        """∂/∂p from ∂/∂x (chain rule of the affine map)."""
        return gx if self.scale is None else gx * self.scale

    def clamp_(self, p: torch.Tensor) -> None:
        """Project p onto the box x ∈ [0, 1], in place."""
        if self.shift is None or self.scale is None:
            p.clamp_(0, 1)
        else:
            p.clamp_(min=(-self.shift / self.scale).to(p), max=((1 - self.shift) / self.scale).to(p))

    def to(self, device: torch.device | str) -> Space:
        if self.shift is None or self.scale is None:
            return self
        return Space(self.shift.to(device), self.scale.to(device))


def initial_inputs(config: InversionConfig, shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    """Restart starting points in the optimiser's space, shape (R, k, …), drawn on the CPU (the same on every
    device). randn and patterned are drawn in ``config.space``; rand and gray are pixel values."""
    full = (config.restarts, *shape)
    if config.init == "randn":
        return torch.randn(full, generator=generator)
    if config.init == "rand":
        return torch.rand(full, generator=generator)
    if config.init == "patterned" and len(shape) == 4:  # (k, C, H, W): tile a PATTERN × PATTERN draw
        h, w = shape[-2:]
        tile = torch.randn((config.restarts, *shape[:-2], PATTERN, PATTERN), generator=generator)
        return tile.repeat(1, 1, 1, math.ceil(h / PATTERN), math.ceil(w / PATTERN))[..., :h, :w].contiguous()
    if config.init == "patterned":
        return torch.randn(full, generator=generator)  # rows have no pattern to tile
    return 0.5 + 0.1 * torch.randn(full, generator=generator)


def _start(config: InversionConfig, shape: tuple[int, ...], generator: torch.Generator, space: Space) -> torch.Tensor:
    """Starting points in the optimiser's space (rand and gray are pixel values, mapped into it)."""
    drawn = initial_inputs(config, shape, generator)
    return space.to_p(drawn) if config.init in ("rand", "gray") else drawn


OPTIMIZERS: Registry[Callable[[list[torch.Tensor], InversionConfig], torch.optim.Optimizer]] = Registry(
    "inversion optimiser")
OPTIMIZERS.register("adam")(lambda params, c: torch.optim.Adam(params, lr=c.lr, betas=c.betas, eps=c.eps))
OPTIMIZERS.register("adamw")(lambda params, c: torch.optim.AdamW(
    params, lr=c.lr, betas=c.betas, eps=c.eps, weight_decay=c.weight_decay))

StepFn = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


@dataclass
class _Run:
    """The optimiser state of all restarts (mutated in place by the phases)."""

    x: torch.Tensor  # (R_alive, k, …)
    alive: torch.Tensor  # original indices of the running restarts
    weights: torch.Tensor  # (R, n_priors) prior weights per restart
    best_x: torch.Tensor  # (R, k, …) best iterate per restart (keep_best)
    best_cost: torch.Tensor  # (R,) its objective cost
    best_key: torch.Tensor  # (R,) the cost it was kept by (config.best_by)
    final_costs: torch.Tensor  # (R,)
    costs: torch.Tensor  # (R_alive,) gradient costs of the last step
    iterations: int = 0
    tail_sum: torch.Tensor | None = None  # sum of the averaged tail's pixel-space iterates (average_last)
    tail_count: int = 0
    history: list[tuple[int, float]] = field(default_factory=list)


def _prune(run: _Run, optimizer: torch.optim.Optimizer, keep: torch.Tensor) -> None:
    """Stop all restarts but ``keep``: the parameter and the optimiser's per-element state shrink with them."""
    old = run.x
    state = optimizer.state.pop(old, {})
    new = old[keep].contiguous()
    optimizer.param_groups[0]["params"] = [new]
    optimizer.state[new] = {k: v[keep].contiguous() if torch.is_tensor(v) and v.shape == old.shape else v
                            for k, v in state.items()}
    run.final_costs[run.alive] = run.costs
    run.alive, run.x, run.costs = run.alive[keep], new, run.costs[keep]


def _optimise(run: _Run, step_fn: StepFn, config: InversionConfig, iterations: int, deadline: float | None, *,
              gradient_phase: bool, log_every: int, space: Space, prune: bool = True, start: int = 0,
              stop: int | None = None, state: dict[str, Any] | None = None, average_last: int = 0) -> dict[str, Any]:
    """``iterations`` optimiser steps on ``run.x`` (fitted to ``deadline`` when given), with a fresh schedule —
    or steps ``start`` … ``stop`` of that schedule, the optimiser's ``state`` restored (a run continued where an
    earlier call stopped). Returns the optimiser's state (per-element tensors cloned). With ``average_last`` the
    pixel-space iterates after each of the last that many steps are summed into ``run.tail_sum``.

    ``run.x`` holds the optimiser's variable p (``space``); ``step_fn`` takes and returns pixel-space values."""
    optimizer = OPTIMIZERS.get(config.optimizer)([run.x], config)
    if state is not None:
        optimizer.state[run.x] = {k: v.clone() if torch.is_tensor(v) else v for k, v in state.items()}
    horizon = [iterations]  # the schedule's length; refitted to the deadline below
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda t: learning_rate(config, start + t, horizon[0]) / config.lr)
    prune_steps = [int(f * iterations) for f in config.prune_at] if gradient_phase and prune else []
    calibrate_from, refits = start + 2, {5}  # refit after 5, 10, 20, 40, … timed steps
    calib_start = time.perf_counter()
    t = start
    end = iterations if stop is None else min(stop, iterations)
    while t < min(horizon[0], end):
        if config.boxed:
            space.clamp_(run.x)
        x = space.to_x(run.x)
        g, reported = step_fn(x, run.weights[run.alive])  # reported: (R, 2) objective and total costs
        costs = reported[:, 0]
        if gradient_phase:
            run.costs = costs
            if config.keep_best:
                key = reported[:, 1] if config.best_by == "total" else costs
                improved = key < run.best_key[run.alive]
                run.best_key[run.alive] = torch.where(improved, key, run.best_key[run.alive])
                run.best_cost[run.alive] = torch.where(improved, costs, run.best_cost[run.alive])
                shape = (-1, *[1] * (run.x.dim() - 1))
                run.best_x[run.alive] = torch.where(improved.view(shape), x, run.best_x[run.alive])
        g = space.grad_p(g)
        if config.signed == "soft":  # tanh(s·g)/s, s falling linearly from 1 (breaching's soft sign)
            s = 1.0 - t / horizon[0]
            g = torch.tanh(g * s) / s
        elif config.signed:
            g = g.sign()
        run.x.grad = g
        optimizer.step()
        scheduler.step()
        t += 1
        run.iterations += 1
        if average_last and t > min(horizon[0], end) - average_last:
            tail = space.to_x(run.x.detach())
            tail = tail.clamp(0, 1) if config.boxed else tail
            run.tail_sum = tail.clone() if run.tail_sum is None else run.tail_sum + tail
            run.tail_count += 1
        if log_every and (run.iterations % log_every == 0 or run.iterations == 1):
            run.history.append((run.iterations, float(costs.min())))
        if deadline is not None:
            now = time.perf_counter()
            if t == calibrate_from:
                calib_start = now
            elif t > calibrate_from and (t - calibrate_from) in refits:  # fit the iterations to the deadline
                per_step = (now - calib_start) / (t - calibrate_from)
                horizon[0] = max(t + 1, min(iterations, t + int((deadline - now) / per_step)))
                pending = config.prune_at[len(config.prune_at) - len(prune_steps):]
                prune_steps = [max(int(f * horizon[0]), t + 1) for f in pending]
                refits.update({2 * (t - calibrate_from)})
            if now >= deadline:
                break
        if prune_steps and t >= prune_steps[0]:
            prune_steps.pop(0)
            keep = run.costs.argsort()[:max(1, math.ceil(len(run.alive) / 2))].sort().values
            _prune(run, optimizer, keep)
    run.x.grad = None
    return {k: v.clone() if torch.is_tensor(v) else v for k, v in optimizer.state.get(run.x, {}).items()}


def _stepper(cost: Callable[..., tuple[torch.Tensor, torch.Tensor]], batched: bool) -> StepFn:
    """(x (R, k, …), weights (R, n)) → (input gradients, reported costs (R, 2): objective and total).

    vmap over the restarts when ``batched`` and R > 1; otherwise plain autograd per restart (cheaper for
    one restart, the same numbers)."""
    def reporting(xr: torch.Tensor, wr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        total, objective = cost(xr, wr)
        return total, torch.stack([objective, total.detach()])

    vmapped = vmap(grad(reporting, has_aux=True))

    def one(xr: torch.Tensor, wr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        leaf = xr.detach().requires_grad_(True)
        total, objective = cost(leaf, wr, autograd=True)
        (gx,) = torch.autograd.grad(total, leaf)
        return gx, torch.stack([objective, total.detach()])

    def step(x: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if batched and x.shape[0] > 1:
            return vmapped(x, w)
        pairs = [one(x[r], w[r]) for r in range(x.shape[0])]
        return torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])
    return step


def run_inversion(model: nn.Module, target: TargetGradient, labels: torch.Tensor, input_shape: tuple[int, ...],
                  config: InversionConfig, *, seed: int = 0, time_budget: float | None = None,
                  log_every: int = 100, init: torch.Tensor | None = None,
                  prior_weights: dict[str, torch.Tensor] | None = None, mask: torch.Tensor | None = None,
                  feature_phase: bool = True, priors: tuple[Prior, ...] = (), start_step: int = 0,
                  stop_step: int | None = None, optimizer_state: dict[str, Any] | None = None,
                  average_last: int = 0) -> InversionResult:
    """One inversion with a fixed recipe (the engine under ``adaptive.invert``).

    With ``feature_phase`` > 0 (and penultimate features readable from ∇*, k = 1) the first share of the
    iterations (or of the time budget) matches only the features and the priors — one forward and one
    backward pass, no double back-propagation, about half the cost of a full step — and the rest matches
    the gradient, each phase with its own learning-rate schedule.

    Args (beyond ``invert``'s):
        init: starting points (R, k, …) in pixel space instead of the configured initialisation.
        prior_weights: prior name → (R,) weights per restart (others keep the configured weight).
        mask: (P,) 0/1 coordinates of ∇* the objective sees (gradient cross-validation).
        feature_phase: False skips the feature-only phase (a run continued from a raced start).
        priors: priors built by the caller, added to the configured ones (their weights as built, or raced
            by name through ``prior_weights``).
        start_step, stop_step, optimizer_state: run only steps ``start_step`` … ``stop_step`` of the gradient
            phase's schedule (its length stays ``config.iterations``), the optimiser's state restored from an
            earlier call's ``InversionResult.optimizer_state`` — a run stopped part-way and continued later (the
            adaptive race). Only with ``feature_phase=False``.
        average_last: also return, as ``average``, the mean of the gradient phase's last that many iterates
            (not with ``prune_at``: the restarts averaged must stay the same).
    """
    if average_last and config.prune_at:
        raise ConfigError("average_last keeps one running mean per restart; it cannot be combined with prune_at")
    started = time.perf_counter()
    device = next(model.parameters()).device
    labels = labels.to(device=device, dtype=torch.long)
    k = int(labels.shape[0])
    prior_weights = prior_weights or {}
    matcher = GradientMatcher(model, target.to(device), labels, config, mask=mask,
                              extra_priors=tuple(prior_weights), input_shape=input_shape, prior_instances=priors)
    space = Space.of(model, config).to(device) if len(input_shape) == 3 else Space()
    if init is None:
        x = _start(config, (k, *input_shape), torch.Generator().manual_seed(seed), space.to("cpu")).to(device)
    else:
        x = space.to_p(init.detach().clone().to(device))  # (R, k, …) in the optimiser's space
    restarts = x.shape[0]
    weights = matcher.default_weights.expand(restarts, -1).clone()  # (R, n_priors)
    for name, values in prior_weights.items():
        if name in matcher.prior_names:
            weights[:, matcher.prior_names.index(name)] = values.to(weights)
    run = _Run(x=x, alive=torch.arange(restarts, device=device), weights=weights, best_x=space.to_x(x).clone(),
               best_cost=torch.full((restarts,), float("inf"), device=device),
               best_key=torch.full((restarts,), float("inf"), device=device),
               final_costs=torch.full((restarts,), float("nan"), device=device),
               costs=torch.zeros(restarts, device=device))
    share = config.feature_phase if matcher.feature_prior is not None and feature_phase else 0.0
    timings: dict[str, float] = {}
    with matcher.hooks():
        if share > 0:
            deadline = started + share * time_budget if time_budget is not None else None
            _optimise(run, _stepper(matcher.feature_cost, config.batched), config,
                      max(1, round(share * config.iterations)), deadline, gradient_phase=False, log_every=log_every,
                      space=space)
            timings["feature_phase_iterations"] = run.iterations
            timings["feature_phase_seconds"] = time.perf_counter() - started
        deadline = started + time_budget if time_budget is not None else None
        state = _optimise(run, _stepper(matcher.cost, config.batched), config,
                          max(1, config.iterations - run.iterations), deadline, gradient_phase=True,
                          log_every=log_every, space=space, start=start_step, stop=stop_step, state=optimizer_state,
                          average_last=average_last)
        optimise_seconds = time.perf_counter() - started
        x = space.to_x(run.x.detach())
        if config.boxed:
            x = x.clamp(0, 1)
        final = matcher.score(x, full=False)
        final_key = matcher.score(x, full=False, weights=run.weights[run.alive]) \
            if config.keep_best and config.best_by == "total" else final
    alive = run.alive
    run.final_costs[alive] = final
    if config.keep_best:
        better = run.best_key[alive] < final_key
        x = torch.where(better.view(-1, *[1] * (x.dim() - 1)), run.best_x[alive], x)
        run.final_costs[alive] = torch.where(better, run.best_cost[alive], final)
    pick = int(run.final_costs[alive].argmin())
    best_restart = int(alive[pick])
    seconds = time.perf_counter() - started
    timings.update({"optimise_seconds": optimise_seconds, "sec_per_iter": optimise_seconds / max(run.iterations, 1)})
    return InversionResult(
        x=x[pick].detach().cpu(), restart_costs=run.final_costs.cpu(), best_restart=best_restart,
        iterations=run.iterations, seconds=seconds, history=run.history, timings=timings,
        candidates=x.detach(), alive=alive.detach(), optimizer_state=state,
        average=None if run.tail_sum is None else run.tail_sum / run.tail_count)
