"""Model registry, the input-normalisation wrapper, and the serialisable ModelSpec that rebuilds a model."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from unlearnleak.errors import CheckpointError, ConfigError
from unlearnleak.models.custom import ModelFactory, import_model_class
from unlearnleak.registry import Registry

MODELS: Registry[ModelFactory] = Registry("model")


def register_model(name: str) -> Callable[[ModelFactory], ModelFactory]:
    """Register a model factory under ``name``."""
    return MODELS.register(name)


class Normalized(nn.Module):
    """Applies per-channel (or per-feature) standardisation before ``net``, so callers work in raw units.

    Every model in unlearnleak is wrapped like this: training, attacks and oracles all feed [0, 1]
    images (or preprocessed rows), and the normalisation travels with the checkpoint as buffers.
    The constants are buffers, not parameters, so they never enter a gradient.
    """

    def __init__(self, net: nn.Module, mean: tuple[float, ...], std: tuple[float, ...], image: bool,
                 input_shape: tuple[int, ...] | None = None) -> None:
        super().__init__()
        self.net = net
        self.input_shape = input_shape  # one input's shape, when known: attacks probe forward with it
        shape = (1, -1, 1, 1) if image else (1, -1)
        self.mean: torch.Tensor
        self.std: torch.Tensor
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).reshape(shape))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).reshape(shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.std)


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild a model's architecture (weights travel separately)."""

    name: str
    input_shape: tuple[int, ...]
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    kwargs: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["input_shape"] = list(self.input_shape)
        d["mean"] = list(self.mean)
        d["std"] = list(self.std)
        d["kwargs"] = dict(self.kwargs)
        return d

    @property
    def names_code(self) -> bool:
        """True when ``name`` is an import path (``pkg.mod:Class`` or ``file.py:Class``), not a registry name."""
        return names_code(self.name)

    @classmethod
    def from_dict(cls, d: Any, *, model_def: str | None = None, trust_model_code: bool = False) -> ModelSpec:
        """Parse a spec read from a file, checking every field's type; nothing is imported here.

        A name that points at code is refused unless the user named the same definition (``model_def``,
        i.e. ``--model-def``) or passed ``trust_model_code=True``: a file is data and never runs code.
        """
        if not isinstance(d, Mapping):
            raise CheckpointError(f"the model spec must be a JSON object with name, input_shape, num_classes, "
                                  f"mean, std; got a {type(d).__name__}: {d!r:.80}")
        missing = [k for k in ("name", "input_shape", "num_classes", "mean", "std") if k not in d]
        if missing:
            raise CheckpointError(f"the model spec lacks {', '.join(missing)}")
        name = d["name"]
        if not isinstance(name, str) or not name:
            raise CheckpointError(f"the model spec's name must be a non-empty string, got {name!r:.80}")
        if names_code(name) and not trust_model_code and not same_definition(name, model_def):
            raise CheckpointError(
                f"the model spec names code ({name!r:.120}); loading a file never runs code. If you trust that "
                f"definition, name it yourself: --model-def {name:.120} (Python: model_def=..., or "
                f"trust_model_code=True)")
        shape = _int_list(d["input_shape"], "input_shape", low=1)
        if len(shape) not in (1, 3):
            raise CheckpointError(f"the model spec's input_shape must be (C, H, W) or (D,), got {list(shape)}")
        num_classes = _int_list([d["num_classes"]], "num_classes", low=2)[0]
        kwargs = d.get("kwargs", {})
        if not isinstance(kwargs, Mapping) or not all(isinstance(k, str) for k in kwargs):
            raise CheckpointError(f"the model spec's kwargs must be a JSON object, got {kwargs!r:.80}")
        return cls(name=name, input_shape=shape, num_classes=num_classes,
                   mean=_float_list(d["mean"], "mean"), std=_float_list(d["std"], "std"), kwargs=dict(kwargs))


def names_code(name: str) -> bool:
    """True for ``package.module:Class`` / ``path/file.py:Class`` (code), False for a registry name."""
    return name not in MODELS and ":" in name


def same_definition(name: str, model_def: str | None) -> bool:
    """Whether the user's ``model_def`` names the same code as ``name`` (same module or same file)."""
    if model_def is None:
        return False
    if model_def == name:
        return True
    a_mod, _, a_attr = name.rpartition(":")
    b_mod, _, b_attr = model_def.rpartition(":")
    if a_attr != b_attr or not a_mod.endswith(".py") or not b_mod.endswith(".py"):
        return False
    try:
        return Path(a_mod).expanduser().resolve() == Path(b_mod).expanduser().resolve()
    except (OSError, RuntimeError):
        return False


def _int_list(value: Any, what: str, *, low: int) -> tuple[int, ...]:
    if not isinstance(value, list | tuple) or not value or len(value) > 8:
        raise CheckpointError(f"the model spec's {what} must be a non-empty list of integers, got {value!r:.80}")
    if any(isinstance(v, bool) or not isinstance(v, int) or v < low or v > 1_000_000 for v in value):
        raise CheckpointError(f"the model spec's {what} must hold integers in [{low}, 1000000], got {value!r:.80}")
    return tuple(int(v) for v in value)


def _float_list(value: Any, what: str) -> tuple[float, ...]:
    if not isinstance(value, list | tuple) or not value or len(value) > 4096:
        raise CheckpointError(f"the model spec's {what} must be a non-empty list of numbers, got {value!r:.80}")
    if any(isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) for v in value):
        raise CheckpointError(f"the model spec's {what} must hold finite numbers, got {value!r:.80}")
    return tuple(float(v) for v in value)


def build_model(spec: ModelSpec) -> Normalized:
    """Instantiate the architecture of ``spec`` (random weights), wrapped with its normalisation."""
    if len(spec.mean) != len(spec.std):
        raise ConfigError(f"mean has {len(spec.mean)} entries but std has {len(spec.std)}")
    if any(s <= 0 for s in spec.std):
        raise ConfigError(f"std must be positive, got {spec.std}")
    image = len(spec.input_shape) == 3
    channels = spec.input_shape[0]
    if len(spec.mean) not in (1, channels):
        raise ConfigError(f"{len(spec.mean)} normalisation constants for input shape {spec.input_shape}; "
                          f"give 1 or {channels}")
    if spec.name in MODELS:
        factory = MODELS.get(spec.name)
    elif ":" in spec.name:
        factory = import_model_class(spec.name)
    else:
        MODELS.get(spec.name)  # raises the ConfigError listing known names
        raise AssertionError("unreachable")
    try:
        net = factory(input_shape=tuple(spec.input_shape), num_classes=spec.num_classes, **dict(spec.kwargs))
    except TypeError as exc:
        raise ConfigError(f"model {spec.name!r} rejected its arguments {dict(spec.kwargs)!r}: {exc}") from exc
    except ConfigError:
        raise
    except Exception as exc:  # user code may raise anything while building the model
        raise ConfigError(f"model {spec.name!r} raised {type(exc).__name__} while being built with "
                          f"input_shape={tuple(spec.input_shape)}, num_classes={spec.num_classes}, "
                          f"kwargs={dict(spec.kwargs)!r}: {str(exc).splitlines()[0] if str(exc) else ''}; "
                          f"fix the model definition or its arguments") from exc
    _materialize_lazy(net, tuple(spec.input_shape))
    return Normalized(net, spec.mean, spec.std, image=image, input_shape=tuple(spec.input_shape))


def _materialize_lazy(net: nn.Module, input_shape: tuple[int, ...]) -> None:
    """Give lazy layers (``nn.LazyLinear``…) their shapes with one eval-mode pass on zeros, as the first batch of
    training did: their parameters have none until then, so no checkpoint could be checked or loaded."""
    from torch.nn.parameter import is_lazy

    if not any(is_lazy(t) for t in (*net.parameters(), *net.buffers())):
        return
    was_training = net.training
    try:
        with torch.no_grad():
            net.eval()(torch.zeros(1, *input_shape))
    finally:
        net.train(was_training)


def load_weights(model: nn.Module, state: Mapping[str, torch.Tensor], what: str = "checkpoint") -> None:
    """Load ``state`` strictly, turning shape/key mismatches into a readable CheckpointError."""
    check_state(model, state, what)
    try:
        model.load_state_dict(dict(state), strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[:6]
        raise CheckpointError(f"{what} does not fit the model architecture: " + " ".join(first)) from exc


def check_state(model: nn.Module, state: Mapping[str, torch.Tensor], what: str = "checkpoint") -> None:
    """Refuse a state dict whose keys or shapes differ from ``model``'s, naming the first mismatch."""
    expected = model.state_dict()
    for key, value in expected.items():
        if key not in state:
            raise CheckpointError(f"{what} does not fit the model architecture: it lacks {key} "
                                  f"(shape {tuple(value.shape)}); {len(state)} keys given, "
                                  f"{len(expected)} expected — check the model definition and its kwargs")
        got = state[key]
        if not isinstance(got, torch.Tensor):
            raise CheckpointError(f"{what}: {key} is a {type(got).__name__}, not a tensor")
        if tuple(got.shape) != tuple(value.shape):
            raise CheckpointError(f"{what} does not fit the model architecture: {key} has shape "
                                  f"{tuple(got.shape)} in the checkpoint but {tuple(value.shape)} in the model")
    extra = [k for k in state if k not in expected]
    if extra:
        raise CheckpointError(f"{what} does not fit the model architecture: unexpected key {extra[0]} "
                              f"({len(extra)} unexpected in all) — check the model definition and its kwargs")
