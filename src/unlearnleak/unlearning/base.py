"""The unlearning-method registry and the context every method receives (DESIGN.md: one file per method).

Each method is ``method(context) -> θ_u state dict`` registered with its pydantic parameter model, so a
configuration's ``unlearning.params`` is validated when the config is loaded (:func:`check_params`), long
before pretraining. Methods count their gradient work on ``context.meter``; :func:`unlearn_measured` adds
the wall-clock seconds and the forgetting (accuracy on D_u, on the retain set and on a test set).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch
from pydantic import BaseModel, ConfigDict, ValidationError

from unlearnleak.errors import ConfigError
from unlearnleak.models import ModelSpec, Normalized, build_model, load_weights
from unlearnleak.registry import Registry
from unlearnleak.training import TrainConfig, evaluate

StateDict = dict[str, torch.Tensor]
P = TypeVar("P", bound=BaseModel)


class NoParams(BaseModel):
    """For methods without parameters: any key is a typo."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass
class CostMeter:
    """Gradient work of one unlearning run: backward passes and per-sample gradients they covered.

    A Hessian-vector product counts as one backward pass over its batch (it is a second backward).
    """

    backward_passes: int = 0
    sample_gradients: int = 0
    notes: dict[str, float] = field(default_factory=dict)  # method-specific diagnostics, e.g. an HVP residual

    def add(self, batch_size: int, passes: int = 1) -> None:
        """Record ``passes`` backward passes over a batch of ``batch_size`` samples."""
        self.backward_passes += passes
        self.sample_gradients += passes * batch_size

    def add_training(self, n_rows: int, config: TrainConfig) -> None:
        """Record what :func:`unlearnleak.training.train` spends on ``n_rows`` rows with ``config``."""
        if n_rows == 0:
            return
        bs = min(config.batch_size, n_rows)
        batches = n_rows // bs if config.drop_last else -(-n_rows // bs)
        used = batches * bs if config.drop_last else n_rows
        self.backward_passes += config.epochs * batches
        self.sample_gradients += config.epochs * used


@dataclass(frozen=True)
class UnlearningContext:
    """What the model provider holds when a deletion request arrives.

    ``x_train``/``y_train`` is the fine-tuning set D_ft; ``forget_mask`` marks D_u within it.
    ``finetune`` is the configuration θ was fine-tuned with (exact unlearning repeats it).
    ``meter`` collects the method's gradient work.
    """

    spec: ModelSpec
    original: StateDict  # θ
    base: StateDict | None  # θ0, the model θ was fine-tuned from
    x_train: torch.Tensor
    y_train: torch.Tensor
    forget_mask: torch.Tensor  # (N,) bool
    finetune: TrainConfig
    params: Mapping[str, Any] = field(default_factory=dict)
    seed: int = 0
    device: str = "cpu"
    meter: CostMeter = field(default_factory=CostMeter, compare=False)

    @property
    def forget_x(self) -> torch.Tensor:
        return self.x_train[self.forget_mask]

    @property
    def forget_y(self) -> torch.Tensor:
        return self.y_train[self.forget_mask]

    @property
    def retain_x(self) -> torch.Tensor:
        return self.x_train[~self.forget_mask]

    @property
    def retain_y(self) -> torch.Tensor:
        return self.y_train[~self.forget_mask]

    def fresh_model(self, state: StateDict) -> Normalized:
        """A new module of this architecture holding a copy of ``state``."""
        model = build_model(self.spec)
        load_weights(model, {k: v.clone() for k, v in state.items()})
        return model.to(self.device)


UnlearningMethod = Callable[[UnlearningContext], StateDict]
UNLEARNING: Registry[UnlearningMethod] = Registry("unlearning method")
PARAMS: dict[str, type[BaseModel]] = {}


@dataclass(frozen=True)
class OriginalTrainer:
    """How a method that serves a θ of its own (SISA's shard ensemble) trains it from θ0 on D_ft.

    ``architecture(spec, θ0, params) -> (θ's spec, θ0 in that architecture)``;
    ``train(spec, θ0, x, y, params, *, seed, device) -> θ`` (``params`` validated, as JSON).
    """

    architecture: Callable[[ModelSpec, StateDict, Mapping[str, Any]], tuple[ModelSpec, StateDict]]
    train: Callable[..., StateDict]


# Methods whose θ is their own output, not the scenario's fine-tune of θ0 (the scenario calls the trainer instead).
ORIGINAL_TRAINERS: dict[str, OriginalTrainer] = {}


def register_unlearning(name: str, params: type[BaseModel] = NoParams, *,
                        trains_original: OriginalTrainer | None = None) -> Callable[[UnlearningMethod],
                                                                                    UnlearningMethod]:
    """Register an unlearning method ``method(context) -> unlearned state dict`` with its parameter model;
    ``trains_original``: the method also trains the θ it unlearns from (its θ is part of its output)."""
    PARAMS[name] = params
    if trains_original is not None:
        ORIGINAL_TRAINERS[name] = trains_original
    return UNLEARNING.register(name)


def parse_params(model: type[P], params: Mapping[str, Any], method: str) -> P:
    """``params`` validated by ``model``; errors name the method and the offending key."""
    try:
        return model(**dict(params))
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '(params)'}: {e['msg']}"
                             for e in exc.errors())
        known = ", ".join(model.model_fields) or "none"
        raise ConfigError(f"invalid unlearning.params for method {method!r}: {problems} "
                          f"(its parameters: {known})") from None


def check_params(method: str, params: Mapping[str, Any]) -> BaseModel:
    """Validate ``params`` for the registered ``method`` (called when a config is loaded)."""
    UNLEARNING.get(method)  # unknown method → ConfigError listing the known ones
    return parse_params(PARAMS.get(method, NoParams), params, method)


def unlearn(method: str, context: UnlearningContext) -> StateDict:
    """Run the registered ``method`` and return θ_u as a CPU state dict."""
    state = UNLEARNING.get(method)(context)
    return {k: v.detach().cpu().clone() for k, v in state.items()}


@dataclass(frozen=True)
class UnlearningOutcome:
    """θ_u with what it cost and how much it forgot (accuracies of θ and θ_u on D_u, retain and test)."""

    method: str
    state: StateDict
    seconds: float
    backward_passes: int
    sample_gradients: int
    accuracy: Mapping[str, float]  # {"original_forget", "unlearned_forget", "…_retain", "…_test"}
    notes: Mapping[str, float] = field(default_factory=dict)

    def record(self) -> dict[str, Any]:
        """A JSON-able summary (without the weights)."""
        return {"method": self.method, "seconds": self.seconds, "backward_passes": self.backward_passes,
                "sample_gradients": self.sample_gradients, "accuracy": dict(self.accuracy),
                "notes": dict(self.notes)}


def forgetting(spec: ModelSpec, original: StateDict, unlearned: StateDict, ctx: UnlearningContext,
               test: tuple[torch.Tensor, torch.Tensor] | None) -> dict[str, float]:
    """Accuracy of θ and θ_u on D_u, on the retain set and (when given) on the test set."""
    out: dict[str, float] = {}
    sets = {"forget": (ctx.forget_x, ctx.forget_y), "retain": (ctx.retain_x, ctx.retain_y)}
    if test is not None:
        sets["test"] = test
    for which, state in (("original", original), ("unlearned", unlearned)):
        with torch.random.fork_rng(devices=[]):  # initialising the (overwritten) weights must not move the RNG
            model = build_model(spec)
        load_weights(model, state, what=f"{which} weights")
        model.to(ctx.device).eval()
        for name, (x, y) in sets.items():
            out[f"{which}_{name}"] = evaluate(model, x, y, device=ctx.device)
    return out


def unlearn_measured(method: str, context: UnlearningContext,
                     test: tuple[torch.Tensor, torch.Tensor] | None = None) -> UnlearningOutcome:
    """:func:`unlearn` plus its cost (seconds, gradient work) and its forgetting."""
    started = time.perf_counter()
    state = unlearn(method, context)
    seconds = time.perf_counter() - started
    accuracy = forgetting(context.spec, context.original, state, context, test)
    return UnlearningOutcome(method=method, state=state, seconds=seconds,
                             backward_passes=context.meter.backward_passes,
                             sample_gradients=context.meter.sample_gradients, accuracy=accuracy,
                             notes=dict(context.meter.notes))


def state_of(model: torch.nn.Module) -> StateDict:
    """A detached CPU copy of ``model``'s state dict."""
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def trainable(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    """The parameters an unlearning step may change."""
    return [p for p in model.parameters() if p.requires_grad]
