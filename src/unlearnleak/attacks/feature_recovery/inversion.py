"""Gradient inversion: find inputs whose gradient on the attacked model matches ∇* (PAPER.md §2.1–2.2).

The engine optimises R restarts × k samples at once. Each restart's cost is

    1 − cos(∇_θ ℓ(f_θ(x_r), y), ∇*)  +  λ_TV·TV(x_r)  +  λ_BN·R_BN(x_r)

(global cosine over all trainable parameters, or a per-parameter-tensor mean of cosines), where R_BN is
the DeepInversion feature-statistics prior against the attacked model's own batch-norm running statistics
(public to a white-box server). The gradient of every restart's cost with respect to its input is computed
in one call, ``vmap(grad(cost))`` over restarts with ``torch.func`` (double back-propagation inside);
``batched=False`` runs the same per-restart function in a Python loop (same numbers, for benchmarks).
Constants — θ, the buffers, the flattened ∇* and its norm — are prepared once; one step does one
concatenation of the parameter gradients and fused reductions, no per-tensor Python arithmetic.

Models take raw inputs (``Normalized`` wrappers, DEV_CONTRACT.md), so x is optimised in [0, 1] pixel
space and the model sees exactly the normalised input the optimisation used — also when restarts are
scored (the official code scores the raw input, a bug not copied here; PAPER.md §10.2).
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
from torch.func import functional_call, grad, vjp, vmap
from torch.nn import functional as F

from unlearnleak.attacks.feature_recovery.labels import output_layer
from unlearnleak.attacks.feature_recovery.target_gradient import TargetGradient
from unlearnleak.errors import ConfigError
from unlearnleak.registry import Registry


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
    signed: bool = False  # replace the input gradient by its sign before the optimiser step
    schedule: Literal["constant", "step", "cosine"] = "cosine"
    warmup: float = Field(0.0, ge=0, lt=1)  # fraction of the iterations with a linear lr warm-up
    init: Literal["randn", "rand", "gray"] = "randn"  # N(0,1) | U(0,1) | 0.5 + N(0, 0.1²)
    boxed: bool = True  # clamp x to [0, 1] before every step (images)
    cost: Literal["cosine", "layer_cosine"] = "cosine"
    total_variation: float = Field(0.0, ge=0)
    bn_prior: float = Field(0.0, ge=0)  # weight of the batch-norm statistics prior
    bn_first_multiplier: float = Field(1.0, ge=0)  # extra weight of the first batch-norm layer's term
    bn_layers: int | None = Field(None, ge=1)  # use only the first this many batch-norm layers (None: all)
    feature_match: float = Field(0.0, ge=0)  # weight of matching the penultimate features read off ∇* (k = 1)
    feature_phase: float = Field(0.0, ge=0, lt=1)  # share of the run matching only features + priors (cheap)
    coarse_to_fine: tuple[int, ...] = ()  # image sides of coarse phases, e.g. (8, 16): x = upsample(z_coarse)
    coarse_share: float = Field(0.5, gt=0, lt=1)  # share of the gradient phase spent at the coarse sides
    keep_best: bool = False  # return each restart's best iterate (by gradient cost), not its last
    prune_at: tuple[float, ...] = ()  # fractions of the run at which the worse half of the restarts stops

    @model_validator(mode="after")
    def _check(self) -> InversionConfig:
        if any(not 0 < f < 1 for f in self.prune_at) or list(self.prune_at) != sorted(self.prune_at):
            raise ValueError(f"prune_at must be increasing fractions in (0, 1), got {self.prune_at}")
        if list(self.coarse_to_fine) != sorted(set(self.coarse_to_fine)) or any(v < 1 for v in self.coarse_to_fine):
            raise ValueError(f"coarse_to_fine must be increasing image sides, got {self.coarse_to_fine}")
        if not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"betas must lie in [0, 1), got {self.betas}")
        return self

    def with_overrides(self, **overrides: Any) -> InversionConfig:
        """A validated copy with ``overrides`` applied (None values are ignored)."""
        data = self.model_dump()
        data.update({k: v for k, v in overrides.items() if v is not None})
        return InversionConfig.model_validate(data)


PRESETS: Registry[InversionConfig] = Registry("inversion preset")

PRESETS.register("paper")(InversionConfig(
    # The official recipe (PAPER.md §2.2): randn init, one global cosine, TV 1e-2, signed gradients,
    # AdamW (lr 0.04, PyTorch's default weight decay 0.01 on x), ×0.5 at 3/8, 5/8, 7/8, boxed, 5 restarts.
    iterations=10_000, restarts=5, lr=0.04, optimizer="adamw", weight_decay=0.01, signed=True,
    schedule="step", init="randn", boxed=True, cost="cosine", total_variation=1e-2,
))
PRESETS.register("best")(InversionConfig(
    # The project's default; every ingredient is measured in benchmarks/feature_recovery.py --ablation.
    # For k = 1 the first 30 % of the run matches the penultimate features read off ∇* in closed form
    # (forward + backward only, ~2× cheaper per step), then the gradient (cosine) with the features kept as a
    # term. A strong TV prior (0.3) and one long restart beat more, shorter restarts at the same time.
    iterations=2000, restarts=1, lr=0.1, optimizer="adam", signed=False, schedule="cosine", init="rand",
    boxed=True, cost="cosine", total_variation=0.3, feature_match=1.0, feature_phase=0.3, keep_best=True,
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


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Anisotropic, mean-based TV of an image batch (…, H, W), as the official code."""
    return (x[..., :, 1:] - x[..., :, :-1]).abs().mean() + (x[..., 1:, :] - x[..., :-1, :]).abs().mean()


def _trained(module: nn.modules.batchnorm._BatchNorm) -> bool:
    """False for a batch-norm layer still at its initial statistics (mean 0, var 1): no prior to use."""
    assert module.running_mean is not None and module.running_var is not None
    return not (bool((module.running_mean == 0).all()) and bool((module.running_var == 1).all()))


@contextmanager
def _bn_capture(model: nn.Module, sink: list[torch.Tensor], weight_first: float,
               layers: int | None = None) -> Iterator[int]:
    """Collect the DeepInversion term ‖μ(h) − μ_BN‖ + ‖σ²(h) − σ²_BN‖ of every batch-norm input h."""
    handles = []
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
             and m.running_mean is not None and m.running_var is not None and _trained(m)][:layers]

    def make_hook(module: nn.modules.batchnorm._BatchNorm, scale: float) -> Callable[..., None]:
        def hook(_: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
            h = inputs[0]
            dims = [0, *range(2, h.dim())]
            mean = h.mean(dim=dims)
            var = h.var(dim=dims, unbiased=False)
            assert module.running_mean is not None and module.running_var is not None
            sink.append(scale * ((mean - module.running_mean).norm() + (var - module.running_var).norm()))
        return hook

    for i, m in enumerate(norms):
        handles.append(m.register_forward_pre_hook(make_hook(m, weight_first if i == 0 else 1.0)))
    try:
        yield len(norms)
    finally:
        for handle in handles:
            handle.remove()


class GradientMatcher:
    """The per-restart cost and its input gradient, with every constant prepared once."""

    def __init__(self, model: nn.Module, target: TargetGradient, labels: torch.Tensor,
                 config: InversionConfig) -> None:
        self.model = model.eval()
        self.config = config
        named = dict(model.named_parameters())
        missing = [n for n in target.names if n not in named]
        if missing:
            raise ConfigError(f"the target gradient names parameters the model lacks: {missing[:5]}")
        self.names = target.names
        self.params = {n: named[n].detach() for n in self.names}
        self.buffers = {n: b.detach() for n, b in model.named_buffers()}
        first = next(iter(self.params.values()))
        device, dtype = first.device, first.dtype
        self.labels = labels.to(device)
        self.target = target.flat().to(device=device, dtype=dtype)  # (P,)
        self.target_norm = self.target.norm()
        sizes = torch.tensor([t.numel() for t in target.tensors], device=device)
        self.segments = torch.repeat_interleave(torch.arange(len(sizes), device=device), sizes)  # (P,)
        self.n_segments = len(sizes)
        target_sq = torch.zeros(self.n_segments, device=device, dtype=dtype)
        self.target_seg_norm = target_sq.index_add_(0, self.segments, self.target ** 2).sqrt()
        self._bn_terms: list[torch.Tensor] = []
        self._features: list[torch.Tensor] = []
        self.feature_layer: nn.Module | None = None
        self.feature_target: torch.Tensor | None = None  # (d,) penultimate features read off ∇*
        if config.feature_match and labels.numel() == 1:
            found = penultimate_features(model, target, _num_logits(model))
            if found is not None:
                self.feature_layer, features = found
                self.feature_target = features.to(device=device, dtype=dtype)

    def _gradient_cost(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(1 − cosine, batch-norm prior, feature mismatch) for one restart's inputs x (k, …)."""
        def loss(params: dict[str, torch.Tensor]) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
            self._bn_terms.clear()
            self._features.clear()
            logits = functional_call(self.model, (params, self.buffers), (x,))
            zero = logits.new_zeros(())
            bn = torch.stack(self._bn_terms).sum() if self._bn_terms else zero
            feat = zero
            if self._features and self.feature_target is not None:
                h = self._features[0].reshape(-1)
                feat = (h - self.feature_target).pow(2).sum() / self.feature_target.pow(2).sum()
            return F.cross_entropy(logits, self.labels), (bn, feat)

        grads, (bn, feat) = grad(loss, has_aux=True)(self.params)
        g = torch.cat([grads[n].reshape(-1) for n in self.names])  # (P,)
        if self.config.cost == "cosine":
            cos = (g @ self.target) / (g.norm() * self.target_norm).clamp_min(1e-30)
        else:
            dots = torch.zeros(self.n_segments, device=g.device, dtype=g.dtype).index_add(
                0, self.segments, g * self.target)
            sq = torch.zeros(self.n_segments, device=g.device, dtype=g.dtype).index_add(0, self.segments, g * g)
            cos = (dots / (sq.sqrt() * self.target_seg_norm).clamp_min(1e-30)).mean()
        return 1 - cos, bn, feat

    def cost(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(total cost, gradient cost) of one restart; the first is differentiated, the second reported."""
        grad_cost, bn, feat = self._gradient_cost(x)
        total = grad_cost
        if self.config.total_variation and x.dim() == 4:
            total = total + self.config.total_variation * total_variation(x)
        if self.config.bn_prior:
            total = total + self.config.bn_prior * bn
        if self.feature_target is not None:
            total = total + self.config.feature_match * feat
        return total, grad_cost.detach()

    def feature_cost(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(features + priors, feature mismatch) of one restart: one forward pass, no parameter gradient."""
        self._bn_terms.clear()
        self._features.clear()
        functional_call(self.model, (self.params, self.buffers), (x,))
        assert self.feature_target is not None and self._features
        h = self._features[0].reshape(-1)
        feat = (h - self.feature_target).pow(2).sum() / self.feature_target.pow(2).sum()
        total = self.config.feature_match * feat
        if self.config.total_variation and x.dim() == 4:
            total = total + self.config.total_variation * total_variation(x)
        if self._bn_terms:
            total = total + self.config.bn_prior * torch.stack(self._bn_terms).sum()
        return total, feat.detach()

    def score(self, x: torch.Tensor) -> torch.Tensor:
        """The gradient cost of every restart in x (R, k, …), without priors; shape (R,)."""
        return vmap(lambda xr: self._gradient_cost(xr)[0])(x).detach()

    @contextmanager
    def hooks(self) -> Iterator[None]:
        """Install the hooks that capture what the priors need (batch-norm inputs, penultimate features)."""
        with ExitStack() as stack:
            if self.config.bn_prior:
                stack.enter_context(_bn_capture(self.model, self._bn_terms, self.config.bn_first_multiplier,
                                                self.config.bn_layers))
            if self.feature_layer is not None:
                handle = self.feature_layer.register_forward_pre_hook(
                    lambda _, inputs: self._features.append(inputs[0]))
                stack.callback(handle.remove)
            yield


def _num_logits(model: nn.Module) -> int:
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return linears[-1].out_features if linears else 0


def penultimate_features(model: nn.Module, target: TargetGradient,
                         num_classes: int) -> tuple[nn.Module, torch.Tensor] | None:
    """The input of the output layer for k = 1, read off ∇* in closed form, and that layer.

    The output layer's gradient of one sample is ``∂W[c,:] = (p_c − y_c)·h`` and ``∂b[c] = p_c − y_c``, so
    ``h = Σ_c ∂b_c ∂W_c / Σ_c ∂b_c²`` exactly (as for a table row's first layer, ``tabular.py``). Matching
    these features is a strong, legitimate constraint for a white-box server. None without an output bias.
    """
    try:
        name, layer = output_layer(model, num_classes)
    except ConfigError:
        return None
    prefix = f"{name}." if name else ""
    if layer.bias is None or f"{prefix}bias" not in target.names or f"{prefix}weight" not in target.names:
        return None
    w, b = target[f"{prefix}weight"].double(), target[f"{prefix}bias"].double()
    denom = (b * b).sum()
    if float(denom) == 0.0:
        return None
    return layer, (b @ w) / denom


def initial_inputs(config: InversionConfig, shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    """Restart starting points, shape (R, k, …), drawn on the CPU (the same on every device)."""
    full = (config.restarts, *shape)
    if config.init == "randn":
        return torch.randn(full, generator=generator)
    if config.init == "rand":
        return torch.rand(full, generator=generator)
    return 0.5 + 0.1 * torch.randn(full, generator=generator)


@dataclass
class _Run:
    """The optimiser state of all restarts (mutated in place by the phases)."""

    x: torch.Tensor  # (R_alive, k, …)
    alive: torch.Tensor  # original indices of the running restarts
    best_x: torch.Tensor  # (R, k, …) best iterate per restart (keep_best)
    best_cost: torch.Tensor  # (R,)
    final_costs: torch.Tensor  # (R,)
    costs: torch.Tensor  # (R_alive,) gradient costs of the last step
    iterations: int = 0
    history: list[tuple[int, float]] = field(default_factory=list)


def _adam_phase(run: _Run, step_fn: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
                config: InversionConfig, iterations: int, deadline: float | None, *, gradient_phase: bool,
                log_every: int, to_input: Callable[[torch.Tensor], torch.Tensor] = lambda z: z,
                prune: bool = True) -> None:
    """``iterations`` Adam(W) steps on ``run.x`` (fitted to ``deadline`` when given), with a fresh schedule."""
    exp_avg, exp_avg_sq = torch.zeros_like(run.x), torch.zeros_like(run.x)
    beta1, beta2 = config.betas
    total = iterations
    prune_steps = [int(f * total) for f in config.prune_at] if gradient_phase and prune else []
    calibrate_from, refits = 2, {5}  # refit after 5, 10, 20, 40, … timed steps
    calib_start = time.perf_counter()
    t = 0
    while t < total:
        if config.boxed:
            run.x.clamp_(0, 1)
        g, costs = step_fn(run.x)
        if gradient_phase:
            run.costs = costs
            if config.keep_best:
                improved = costs < run.best_cost[run.alive]
                run.best_cost[run.alive] = torch.where(improved, costs, run.best_cost[run.alive])
                shape = (-1, *[1] * (run.x.dim() - 1))
                run.best_x[run.alive] = torch.where(improved.view(shape), to_input(run.x), run.best_x[run.alive])
        if config.signed:
            g = g.sign()
        lr = learning_rate(config, t, total)
        exp_avg.mul_(beta1).add_(g, alpha=1 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(g, g, value=1 - beta2)
        if config.optimizer == "adamw" and config.weight_decay:
            run.x.mul_(1 - lr * config.weight_decay)
        bias1, bias2 = 1 - beta1 ** (t + 1), 1 - beta2 ** (t + 1)
        denom = (exp_avg_sq.sqrt() / math.sqrt(bias2)).add_(config.eps)
        run.x.addcdiv_(exp_avg, denom, value=-lr / bias1)
        t += 1
        run.iterations += 1
        if log_every and (run.iterations % log_every == 0 or run.iterations == 1):
            run.history.append((run.iterations, float(costs.min())))
        if deadline is not None:
            now = time.perf_counter()
            if t == calibrate_from:
                calib_start = now
            elif t > calibrate_from and (t - calibrate_from) in refits:  # fit the iterations to the deadline
                per_step = (now - calib_start) / (t - calibrate_from)
                total = max(t + 1, min(iterations, t + int((deadline - now) / per_step)))
                pending = config.prune_at[len(config.prune_at) - len(prune_steps):]
                prune_steps = [max(int(f * total), t + 1) for f in pending]
                refits.update({2 * (t - calibrate_from)})
            if now >= deadline:
                break
        if prune_steps and t >= prune_steps[0]:
            prune_steps.pop(0)
            keep = run.costs.argsort()[:max(1, math.ceil(len(run.alive) / 2))].sort().values
            run.final_costs[run.alive] = run.costs
            run.alive, run.x, run.costs = run.alive[keep], run.x[keep].contiguous(), run.costs[keep]
            exp_avg, exp_avg_sq = exp_avg[keep].contiguous(), exp_avg_sq[keep].contiguous()


def _resize(z: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    """(R, k, C, h, w) → (R, k, C, *size): area-average down, bilinear up."""
    if tuple(z.shape[-2:]) == tuple(size):
        return z
    r, k = z.shape[:2]
    mode = "area" if size[0] < z.shape[-2] else "bilinear"
    flat = F.interpolate(z.flatten(0, 1), size=size, mode=mode)
    return flat.reshape(r, k, *flat.shape[1:]).contiguous()


def _upsampler(size: tuple[int, ...]) -> Callable[[torch.Tensor], torch.Tensor]:
    """z (…, C, h, w) → bilinear upsampling to ``size`` (the coarse parameterisation of an image)."""
    def up(z: torch.Tensor) -> torch.Tensor:
        lead = z.shape[:-3]
        out = F.interpolate(z.reshape(-1, *z.shape[-3:]), size=size, mode="bilinear", align_corners=False)
        return out.reshape(*lead, *out.shape[1:])
    return up


StepFn = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def _composed(step: StepFn, to_input: Callable[[torch.Tensor], torch.Tensor] | None) -> StepFn:
    """The gradient with respect to a parameter z of a cost on ``to_input(z)`` (chain rule via vjp)."""
    if to_input is None:
        return step

    def fn(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = vjp(to_input, z)
        gx, cost = step(out[0])
        return out[1](gx)[0], cost
    return fn


def invert(model: nn.Module, target: TargetGradient, labels: torch.Tensor, input_shape: tuple[int, ...],
           config: InversionConfig, *, seed: int = 0, time_budget: float | None = None,
           log_every: int = 100) -> InversionResult:
    """Run the inversion and return the best restart.

    With ``feature_phase`` > 0 (and penultimate features readable from ∇*, k = 1) the first share of the
    iterations (or of the time budget) matches only the features and the priors — one forward and one
    backward pass, no double back-propagation, about half the cost of a full step — and the rest matches
    the gradient, each phase with its own learning-rate schedule.

    Args:
        model: the attacked model (θ or θ0, see ``target.invert_on``) in eval mode, on the target device.
        target: ∇* (moved to the model's device here).
        labels: (k,) labels the dummy samples are optimised with.
        input_shape: one input's shape, (C, H, W) or (D,).
        config: the inversion configuration (``preset(...)``).
        seed: seeds the restarts' starting points.
        time_budget: seconds; if set, the iteration count is fitted to it after a short calibration (the
            schedule follows the fitted count) and the run stops at the budget at the latest.
        log_every: record the best cost every this many iterations in ``history``.
    """
    started = time.perf_counter()
    device = next(model.parameters()).device
    labels = labels.to(device=device, dtype=torch.long)
    k = int(labels.shape[0])
    matcher = GradientMatcher(model, target.to(device), labels, config)
    generator = torch.Generator().manual_seed(seed)
    x = initial_inputs(config, (k, *input_shape), generator).to(device)  # (R, k, …)
    restarts = config.restarts
    run = _Run(x=x, alive=torch.arange(restarts, device=device), best_x=x.clone(),
               best_cost=torch.full((restarts,), float("inf"), device=device),
               final_costs=torch.full((restarts,), float("nan"), device=device),
               costs=torch.zeros(restarts, device=device))
    step_grad = grad(matcher.cost, has_aux=True)
    feature_grad = grad(matcher.feature_cost, has_aux=True)

    def batched(fn: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
                ) -> Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
        if config.batched:
            return vmap(fn)

        def loop(xs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            pairs = [fn(xs[r]) for r in range(xs.shape[0])]
            return torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])
        return loop

    share = config.feature_phase if matcher.feature_target is not None else 0.0
    timings: dict[str, float] = {}
    full = tuple(input_shape[1:]) if len(input_shape) == 3 else ()
    sides = [v for v in config.coarse_to_fine if full and v < min(full)]
    phases: list[tuple[float, tuple[int, ...]]] = []  # (share of the run, image size of the parameter)
    rest = 1.0 - share
    for side in sides:
        phases.append((rest * config.coarse_share / len(sides), (side, side)))
    phases.append((rest * (1 - config.coarse_share) if sides else rest, full))
    with matcher.hooks():
        elapsed_share = 0.0
        if share > 0:
            elapsed_share = share
            deadline = started + share * time_budget if time_budget is not None else None
            _adam_phase(run, batched(feature_grad), config, max(1, round(share * config.iterations)), deadline,
                        gradient_phase=False, log_every=log_every)
            timings["feature_phase_iterations"] = run.iterations
            timings["feature_phase_seconds"] = time.perf_counter() - started
        for i, (part, size) in enumerate(phases):
            last = i == len(phases) - 1
            elapsed_share += part
            run.x = _resize(run.x, size) if size else run.x
            coarse = _upsampler(full) if size and size != full else None
            deadline = started + elapsed_share * time_budget if time_budget is not None else None
            iterations = config.iterations - run.iterations if last else round(part * config.iterations)
            _adam_phase(run, batched(_composed(step_grad, coarse)), config, max(1, iterations), deadline,
                        gradient_phase=True, log_every=log_every, to_input=coarse or (lambda z: z), prune=last)
    optimise_seconds = time.perf_counter() - started
    x = run.x  # at full resolution: the last phase always is
    if config.boxed:
        x.clamp_(0, 1)
    final = matcher.score(x)
    alive = run.alive
    run.final_costs[alive] = final
    if config.keep_best:
        better = run.best_cost[alive] < final
        x = torch.where(better.view(-1, *[1] * (x.dim() - 1)), run.best_x[alive], x)
        run.final_costs[alive] = torch.minimum(run.best_cost[alive], final)
    pick = int(run.final_costs[alive].argmin())
    best_restart = int(alive[pick])
    seconds = time.perf_counter() - started
    timings.update({"optimise_seconds": optimise_seconds, "sec_per_iter": optimise_seconds / max(run.iterations, 1)})
    return InversionResult(
        x=x[pick].detach().cpu(), restart_costs=run.final_costs.cpu(), best_restart=best_restart,
        iterations=run.iterations, seconds=seconds, history=run.history, timings=timings)
