"""Image priors of the inversion: small registered classes, each a penalty on a restart's inputs x (k, …).

A prior is built once per run from the configuration (``Prior.build``; None when it does not apply, e.g. TV
on table rows), may install forward hooks on the attacked model to see activations (``hooks``), and
returns its *unweighted* penalty after each forward pass (``penalty``); the engine weighs it — per restart,
so that the adaptive preset can race several weights in one batch. Adding a prior is one class here (or
anywhere, registered in ``PRIORS``) and its test; it is switched on with ``InversionConfig.priors``.
A prior that needs data the configuration cannot name (e.g. a decoded image) is passed as a built instance
instead (``run_inversion(..., priors=[...])``, ``adaptive.Candidate(priors=...)``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn
from torch.nn import functional as F

from unlearnleak.attacks.closed_forms import num_logits, penultimate_features
from unlearnleak.attacks.feature_recovery.target_gradient import TargetGradient
from unlearnleak.models import Normalized
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
    white-box server holds.
    """

    name = "bn_prior"

    def __init__(self, weight: float) -> None:
        super().__init__(weight)
        self._terms: list[torch.Tensor] = []

    @contextmanager
    def hooks(self, model: nn.Module) -> Iterator[None]:
        norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
                 and m.running_mean is not None and m.running_var is not None and _trained(m)]

        def make_hook(module: nn.modules.batchnorm._BatchNorm) -> Callable[..., None]:
            def hook(_: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
                h = inputs[0]
                dims = [0, *range(2, h.dim())]
                mean = h.mean(dim=dims)
                var = h.var(dim=dims, unbiased=False)
                assert module.running_mean is not None and module.running_var is not None
                self._terms.append((mean - module.running_mean).norm() + (var - module.running_var).norm())
            return hook

        handles = [m.register_forward_pre_hook(make_hook(m)) for m in norms]
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


@PRIORS.register("feature_mse")
class FeatureMeanSquare(FeatureMatching):
    """The penultimate features as in ``feature_match``, scored by their mean squared error (breaching's
    ``features`` regulariser, Geiping et al.): mean((h − h*)²), in the units of the features themselves."""

    name = "feature_mse"

    def __repr__(self) -> str:
        return f"FeatureMeanSquare(weight={self.weight:g}, d={self.features.numel()})"

    def penalty(self, x: torch.Tensor) -> torch.Tensor:
        if not self._captured:
            return x.new_zeros(())
        return (self._captured[0].reshape(-1) - self.features).pow(2).mean()


def input_normalisation(model: nn.Module) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(mean, std) of the model's input normaliser (``models.Normalized``), shaped to broadcast on (…, C, H, W)
    or (…, D); None for a model that takes its inputs unnormalised."""
    for module in model.modules():
        if isinstance(module, Normalized):
            return module.mean.detach(), module.std.detach()
    return None


@PRIORS.register("colour_tv")
class ColourTotalVariation(Prior):
    """Isotropic colour TV with double opponents, on the normalised image (as breaching's ``modern`` recipe).

    z = (x − mean)/std; the channels R, G, B and the opponent pairs R−G, R−B, G−B; per pixel the forward
    differences dx, dy (the image zero-padded past its right and bottom edges, so the border is pulled towards
    the dataset mean), and mean over channels and pixels of sqrt((|dx| + ε)² + (|dy| + ε)²). Differences
    between colour channels penalise colour noise, which plain TV on each channel does not see as such.
    """

    name = "colour_tv"
    images_only = True
    eps = 1e-8

    def __init__(self, weight: float, mean: torch.Tensor | None = None, std: torch.Tensor | None = None) -> None:
        super().__init__(weight)
        self.mean, self.std = mean, std

    @classmethod
    def build(cls, weight: float, *, config: InversionConfig, model: nn.Module, target: TargetGradient,
              labels: torch.Tensor, input_shape: tuple[int, ...] | None) -> Prior | None:
        if input_shape is not None and (len(input_shape) != 3 or input_shape[0] != 3):
            return None  # colour opponents need three channels
        norm = input_normalisation(model)
        return cls(weight, *(norm if norm is not None else (None, None)))

    def penalty(self, x: torch.Tensor) -> torch.Tensor:
        z = x if self.mean is None or self.std is None else (x - self.mean) / self.std  # (k, 3, H, W)
        z = torch.cat([z, z[:, 0:1] - z[:, 1:2], z[:, 0:1] - z[:, 2:3], z[:, 1:2] - z[:, 2:3]], dim=1)
        padded = F.pad(z, (0, 1, 0, 1))
        dx = padded[..., :-1, 1:] - z
        dy = padded[..., 1:, :-1] - z
        return ((dx.abs() + self.eps).pow(2) + (dy.abs() + self.eps).pow(2)).sqrt().mean()


def configured_weights(config: InversionConfig) -> dict[str, float]:
    """Prior name → weight from the configuration (dedicated fields, then ``config.priors``); zeros dropped."""
    weights: dict[str, Any] = {"total_variation": config.total_variation, "bn_prior": config.bn_prior,
                               "feature_match": config.feature_match, **config.priors}
    return {name: float(w) for name, w in weights.items() if w}


def build_priors(config: InversionConfig, model: nn.Module, target: TargetGradient, labels: torch.Tensor,
                 input_shape: tuple[int, ...] | None, extra: tuple[str, ...] = (),
                 instances: tuple[Prior, ...] = ()) -> list[Prior]:
    """The priors of a run, in a fixed order; ``extra`` names priors to build even at weight 0 (races);
    ``instances`` are priors built by the caller (appended as they are, names must be new)."""
    weights = configured_weights(config)
    for name in extra:
        if name not in {p.name for p in instances}:
            weights.setdefault(name, 0.0)
    priors = []
    for name, weight in weights.items():
        prior = PRIORS.get(name).build(weight, config=config, model=model, target=target, labels=labels,
                                       input_shape=input_shape)
        if prior is not None:
            priors.append(prior)
    clash = {p.name for p in priors} & {p.name for p in instances}
    if clash:
        raise ValueError(f"priors {sorted(clash)} are both configured and passed as instances")
    return [*priors, *instances]


class DecodedImage(Prior):
    """The learned prior: stay near the image a decoder trained on the server's own data produced from the
    features read off ∇* (``learned_prior.py``). Penalty: the mean squared pixel distance ‖x − x_dec‖²/n.

    Built around its tensor by the caller and passed as an instance (``adaptive.Candidate(priors=...)``); its
    weight is raced by name (``decoded``) like a configured prior's."""

    name = "decoded"
    images_only = True

    def __init__(self, weight: float, reference: torch.Tensor) -> None:
        super().__init__(weight)
        self.reference = reference.detach()  # (k, C, H, W)

    def __repr__(self) -> str:
        return f"DecodedImage(weight={self.weight:g}, shape={tuple(self.reference.shape)})"

    @contextmanager
    def hooks(self, model: nn.Module) -> Iterator[None]:
        """Move the reference to the model's device and dtype (the run may be on a GPU)."""
        first = next(model.parameters())
        self.reference = self.reference.to(device=first.device, dtype=first.dtype)
        yield

    def penalty(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.reference).pow(2).mean()
