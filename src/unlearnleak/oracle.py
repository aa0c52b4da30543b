"""Black-box access to a model: ``predict_proba(x)`` and nothing else, every input counted (docs/paper.md §1, §4).

The label-inference adversary is an end user of an ML service: it may send inputs and read the returned
class probabilities, before the deletion (θ) and after it (θ_u). An :class:`Oracle` is exactly that view.
It counts every input row it is asked about (not calls: a batch of 2,048 images costs 2,048 queries) and
enforces an optional query budget. The budget is checked *before* answering: a request that would go over
it raises :class:`~unlearnleak.errors.QueryBudgetExceeded` and nothing of it is answered or counted.

Adapters:
- :class:`ModelOracle` wraps an in-process model (a :class:`~unlearnleak.models.Normalized` module that
  takes raw inputs, e.g. images in [0, 1]); the audit work adds an HTTP adapter on the same base.
- :class:`FunctionOracle` wraps any ``x -> probabilities`` function (constructed oracles in tests).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from torch import nn

from unlearnleak.errors import ConfigError, QueryBudgetExceeded

if TYPE_CHECKING:
    from unlearnleak.pair import ModelPair, Which


class Oracle(ABC):
    """A prediction API: answers ``predict_proba(x)`` for a batch of raw inputs and counts every row.

    Args:
        num_classes: K, the length of each returned probability vector.
        input_shape: the shape of one input, e.g. (3, 32, 32).
        budget: the most input rows this oracle will ever answer; None for no limit.
    """

    def __init__(self, *, num_classes: int, input_shape: tuple[int, ...], budget: int | None = None) -> None:
        if num_classes < 2:
            raise ConfigError(f"an oracle needs at least 2 classes, got num_classes={num_classes}")
        if budget is not None and budget < 0:
            raise ConfigError(f"a query budget must be >= 0 (or None for no limit), got {budget}")
        self._num_classes = int(num_classes)
        self._input_shape = tuple(int(s) for s in input_shape)
        self._budget = budget
        self._queries = 0

    @property
    def num_classes(self) -> int:
        """K, the number of classes in every answer."""
        return self._num_classes

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The shape of one input row, without the batch dimension."""
        return self._input_shape

    @property
    def queries(self) -> int:
        """Input rows answered so far."""
        return self._queries

    @property
    def budget(self) -> int | None:
        """The most rows this oracle answers in total (None: unlimited)."""
        return self._budget

    @property
    def remaining(self) -> int | None:
        """Rows left in the budget (None: unlimited)."""
        return None if self._budget is None else self._budget - self._queries

    def predict_proba(self, x: torch.Tensor) -> torch.Tensor:
        """Class probabilities for a batch ``x`` of shape (n, *input_shape); returns (n, K) on the CPU.

        Raises:
            QueryBudgetExceeded: if answering would exceed the budget (then nothing is answered).
            ConfigError: if ``x`` does not have the oracle's input shape.
        """
        if tuple(x.shape[1:]) != self._input_shape or x.dim() != len(self._input_shape) + 1:
            raise ConfigError(f"oracle inputs must have shape (n, {', '.join(map(str, self._input_shape))}), "
                              f"got {tuple(x.shape)}")
        n = int(x.shape[0])
        if self._budget is not None and self._queries + n > self._budget:
            raise QueryBudgetExceeded(
                f"query budget exhausted: budget {self._budget}, used {self._queries}, requested {n} more "
                f"({self._queries + n - self._budget} over); nothing was answered")
        if n == 0:
            return torch.empty(0, self._num_classes, dtype=torch.float64)
        self._queries += n  # a query sent is a query spent, even if answering it fails
        proba = self._answer(x)
        if tuple(proba.shape) != (n, self._num_classes):
            raise ConfigError(f"oracle answered shape {tuple(proba.shape)} for {n} inputs; "
                              f"expected ({n}, {self._num_classes})")
        return proba

    @abstractmethod
    def _answer(self, x: torch.Tensor) -> torch.Tensor:
        """The probabilities (n, K) for ``x``; called only after the budget check."""

    def __repr__(self) -> str:
        budget = "unlimited" if self._budget is None else str(self._budget)
        return (f"{type(self).__name__}(num_classes={self._num_classes}, input_shape={self._input_shape}, "
                f"queries={self._queries}, budget={budget})")


class ModelOracle(Oracle):
    """In-process oracle: a model that takes raw inputs (normalisation inside), answered without gradients.

    Probabilities are the softmax of the model's logits computed in float64, so that 1 − p is resolved for
    highly confident probes (float32 rounds p = 0.99995 + 5e-8 to the same value); a deployed API would return
    whatever precision it returns, which the decision rule then has to live with.

    Args:
        model: a module mapping raw inputs (n, *input_shape) to logits (n, K), e.g. ``pair.model("original")``.
            It is put in eval mode; it is never trained or modified.
        device: where the forward passes run.
        batch_size: rows per forward pass (answers do not depend on it beyond float rounding).
        channels_last: run image models in channels-last memory format (faster convolutions on CPU).
    """

    def __init__(self, model: nn.Module, *, num_classes: int, input_shape: tuple[int, ...],
                 budget: int | None = None, device: str | torch.device = "cpu", batch_size: int = 512,
                 channels_last: bool = True) -> None:
        super().__init__(num_classes=num_classes, input_shape=input_shape, budget=budget)
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        self._device = torch.device(device)
        self._batch_size = int(batch_size)
        self._channels_last = channels_last and len(self.input_shape) == 3
        model = model.to(self._device).eval()
        if self._channels_last:
            model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        self._model = model

    @classmethod
    def from_pair(cls, pair: ModelPair, which: Which = "original", *, budget: int | None = None,
                  device: str | torch.device = "cpu", batch_size: int = 512) -> ModelOracle:
        """The oracle serving one model of a :class:`~unlearnleak.pair.ModelPair`."""
        return cls(pair.model(which, device), num_classes=pair.spec.num_classes,
                   input_shape=tuple(pair.spec.input_shape), budget=budget, device=device,
                   batch_size=batch_size)

    @torch.inference_mode()
    def _answer(self, x: torch.Tensor) -> torch.Tensor:
        outs = []
        for start in range(0, x.shape[0], self._batch_size):
            xb = x[start:start + self._batch_size].to(self._device, torch.float32)
            if self._channels_last:
                xb = xb.contiguous(memory_format=torch.channels_last)
            logits = self._model(xb)
            outs.append(torch.softmax(logits.double(), dim=1).cpu())
        return torch.cat(outs)


class FunctionOracle(Oracle):
    """An oracle answering with ``fn(x) -> (n, K)`` probabilities (for constructed oracles and adapters)."""

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor], *, num_classes: int,
                 input_shape: tuple[int, ...], budget: int | None = None) -> None:
        super().__init__(num_classes=num_classes, input_shape=input_shape, budget=budget)
        self._fn = fn

    def _answer(self, x: torch.Tensor) -> torch.Tensor:
        return torch.as_tensor(self._fn(x)).to("cpu", torch.float64)
