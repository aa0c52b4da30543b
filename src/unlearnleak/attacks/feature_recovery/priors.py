"""Image priors of the inversion: small registered classes, each a penalty on a restart's inputs x (k, …).

A prior is built once per run from the configuration (``Prior.build``; None when it does not apply, e.g. TV
on table rows), may install forward hooks on the attacked model to see activations (``hooks``), and
returns its *unweighted* penalty after each forward pass (``penalty``); the engine weighs it — per restart,
so that the adaptive preset can race several weights in one batch. Adding a prior is one class here (or
anywhere, registered in ``PRIORS``) and its test; it is switched on with ``InversionConfig.priors``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from unlearnleak.attacks.closed_forms import num_logits, penultimate_features
from unlearnleak.attacks.feature_recovery.target_gradient import TargetGradient
from unlearnleak.registry import Registry

if TYPE_CHECKING:
    from unlearnleak.attacks.feature_recovery.inversion import InversionConfig


class Prior(ABC):
    """A penalty on candidate inputs that encodes what real data look like (or what ∇* says about them)."""

    name: ClassVar[str]
    images_only: ClassVar[bool] = False  # does not apply to table rows

    def __init__(self, weight: float) -> None:
        self.weight = float(weight)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(weight={self.weight:g})"

    @classmethod
    def build(cls, weight: float, *, config: InversionConfig, model: nn.Module, target: TargetGradient,
              labels: torch.Tensor, input_shape: tuple[int, ...] | None) -> Prior | None:
        """The prior for this run, or None when it does not apply (e.g. an image prior on table rows)."""
        if cls.images_only and input_shape is not None and len(input_shape) != 3:
            return None
        return cls(weight)

    @contextmanager
    def hooks(self, model: nn.Module) -> Iterator[None]:
        """Install what the penalty needs to see during the forward pass (nothing by default)."""
        yield

    def clear(self) -> None:
        """Forget what the hooks captured in the previous forward pass."""
        return None

    @abstractmethod
    def penalty(self, x: torch.Tensor) -> torch.Tensor:
        """The unweighted penalty (scalar) of one restart's inputs x (k, …), after its forward pass."""


PRIORS: Registry[type[Prior]] = Registry("inversion prior")


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Anisotropic, mean-based TV of an image batch (…, H, W), as the official code."""
    return (x[..., :, 1:] - x[..., :, :-1]).abs().mean() + (x[..., 1:, :] - x[..., :-1, :]).abs().mean()


@PRIORS.register("total_variation")
class TotalVariation(Prior):
    """Neighbouring pixels are alike (the paper's prior, weight 1e-2 there)."""

    name = "total_variation"
    images_only = True

    def penalty(self, x: torch.Tensor) -> torch.Tensor:
        return total_variation(x) if x.dim() == 4 else x.new_zeros(())


def _trained(module: nn.modules.batchnorm._BatchNorm) -> bool:
    """False for a batch-norm layer still at its initial statistics (mean 0, var 1): no prior to use."""
    assert module.running_mean is not None and module.running_var is not None
    return not (bool((module.running_mean == 0).all()) and bool((module.running_var == 1).all()))


@PRIORS.register("bn_prior")
class BatchNormStatistics(Prior):
    """DeepInversion: the inputs' batch-norm statistics match the attacked model's running statistics.

    Σ_layers ‖μ(h) − μ_BN‖ + ‖σ²(h) − σ²_BN‖ over the inputs h of the (trained) batch-norm layers, which a
    white-box server holds; the first layer's term can be weighted up (``bn_first_multiplier``).
    """

    name = "bn_prior"

    def __init__(self, weight: float, first_multiplier: float = 1.0, layers: int | None = None) -> None:
        super().__init__(weight)
        self.first_multiplier = first_multiplier
        self.layers = layers
        self._terms: list[torch.Tensor] = []

    def __repr__(self) -> str:
        return (f"BatchNormStatistics(weight={self.weight:g}, first_multiplier={self.first_multiplier:g}, "
                f"layers={self.layers})")

    @classmethod
    def build(cls, weight: float, *, config: InversionConfig, model: nn.Module, target: TargetGradient,
              labels: torch.Tensor, input_shape: tuple[int, ...] | None) -> Prior | None:
        return cls(weight, config.bn_first_multiplier, config.bn_layers)

    @contextmanager
    def hooks(self, model: nn.Module) -> Iterator[None]:
        norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
                 and m.running_mean is not None and m.running_var is not None and _trained(m)][:self.layers]

        def make_hook(module: nn.modules.batchnorm._BatchNorm, scale: float) -> Callable[..., None]:
            def hook(_: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
                h = inputs[0]
                dims = [0, *range(2, h.dim())]
                mean = h.mean(dim=dims)
                var = h.var(dim=dims, unbiased=False)
                assert module.running_mean is not None and module.running_var is not None
                self._terms.append(scale * ((mean - module.running_mean).norm()
                                            + (var - module.running_var).norm()))
            return hook

        handles = [m.register_forward_pre_hook(make_hook(m, self.first_multiplier if i == 0 else 1.0))
                   for i, m in enumerate(norms)]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()

    def clear(self) -> None:
        self._terms.clear()

    def penalty(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack(self._terms).sum() if self._terms else x.new_zeros(())


@PRIORS.register("feature_match")
class FeatureMatching(Prior):
    """The output layer's input matches the penultimate features read off ∇* in closed form (k = 1 only).

    Relative squared error ‖h − h*‖² / ‖h*‖² (``closed_forms.penultimate_features``).
    """

    name = "feature_match"

    def __init__(self, weight: float, layer: nn.Module, features: torch.Tensor) -> None:
        super().__init__(weight)
        self.layer = layer
        self.features = features  # (d,)
        self.scale = features.pow(2).sum()
        self._captured: list[torch.Tensor] = []

    def __repr__(self) -> str:
        return f"FeatureMatching(weight={self.weight:g}, d={self.features.numel()})"

    @classmethod
    def build(cls, weight: float, *, config: InversionConfig, model: nn.Module, target: TargetGradient,
              labels: torch.Tensor, input_shape: tuple[int, ...] | None) -> Prior | None:
        if labels.numel() != 1:
            return None
        found = penultimate_features(model, dict(zip(target.names, target.tensors, strict=True)),
                                     num_logits(model))
        if found is None:
            return None
        first = next(model.parameters())
        return cls(weight, found[0], found[1].to(device=first.device, dtype=first.dtype))

    @contextmanager
    def hooks(self, model: nn.Module) -> Iterator[None]:
        handle = self.layer.register_forward_pre_hook(lambda _, inputs: self._captured.append(inputs[0]))
        try:
            yield
        finally:
            handle.remove()

    def clear(self) -> None:
        self._captured.clear()

    def penalty(self, x: torch.Tensor) -> torch.Tensor:
        if not self._captured:
            return x.new_zeros(())
        h = self._captured[0].reshape(-1)
        return (h - self.features).pow(2).sum() / self.scale


def configured_weights(config: InversionConfig) -> dict[str, float]:
    """Prior name → weight from the configuration (dedicated fields, then ``config.priors``); zeros dropped."""
    weights: dict[str, Any] = {"total_variation": config.total_variation, "bn_prior": config.bn_prior,
                               "feature_match": config.feature_match, **config.priors}
    return {name: float(w) for name, w in weights.items() if w}


def build_priors(config: InversionConfig, model: nn.Module, target: TargetGradient, labels: torch.Tensor,
                 input_shape: tuple[int, ...] | None, extra: tuple[str, ...] = ()) -> list[Prior]:
    """The priors of a run, in a fixed order; ``extra`` names priors to build even at weight 0 (races)."""
    weights = configured_weights(config)
    for name in extra:
        weights.setdefault(name, 0.0)
    priors = []
    for name, weight in weights.items():
        prior = PRIORS.get(name).build(weight, config=config, model=model, target=target, labels=labels,
                                       input_shape=input_shape)
        if prior is not None:
            priors.append(prior)
    return priors


_DECODED_REFERENCE: ContextVar[torch.Tensor | None] = ContextVar("decoded_reference", default=None)


@PRIORS.register("decoded")
class DecodedImage(Prior):
    """The learned prior: stay near the image a decoder trained on the server's own data produced from the
    features read off ∇* (``learned_prior.py``). Penalty: the mean squared pixel distance ‖x − x_dec‖²/n.

    The decoded images (k, …) are supplied for the span of a run by ``with DecodedImage.reference(x_dec):``
    (the engine builds priors from their configuration only); outside such a block, or for inputs of another
    shape, the prior does not apply.
    """

    name = "decoded"
    images_only = True

    def __init__(self, weight: float, reference: torch.Tensor) -> None:
        super().__init__(weight)
        self.reference = reference  # (k, C, H, W)

    def __repr__(self) -> str:
        return f"DecodedImage(weight={self.weight:g}, shape={tuple(self.reference.shape)})"

    @staticmethod
    @contextmanager
    def reference_images(x: torch.Tensor) -> Iterator[None]:
        """Make ``x`` (k, C, H, W) the decoded images of the runs started inside this block."""
        token = _DECODED_REFERENCE.set(x.detach())
        try:
            yield
        finally:
            _DECODED_REFERENCE.reset(token)

    @classmethod
    def build(cls, weight: float, *, config: InversionConfig, model: nn.Module, target: TargetGradient,
              labels: torch.Tensor, input_shape: tuple[int, ...] | None) -> Prior | None:
        reference = _DECODED_REFERENCE.get()
        if reference is None or input_shape is None or len(input_shape) != 3 \
                or tuple(reference.shape) != (labels.numel(), *input_shape):
            return None
        first = next(model.parameters())
        return cls(weight, reference.to(device=first.device, dtype=first.dtype))

    def penalty(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.reference).pow(2).mean()
