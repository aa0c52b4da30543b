"""A small problem where forgetting is measurable: 4 Gaussian clusters, D_u = points whose labels were flipped.

θ0 is trained on public cluster data; θ is fine-tuned from θ0 on D_ft long enough to memorise the flipped
points (accuracy on D_u → 1). A method that forgets them predicts their cluster again (accuracy on D_u,
measured against the flipped labels, drops); test accuracy on clean cluster data stays high.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from unlearnleak.models import ModelSpec, build_model
from unlearnleak.training import TrainConfig, evaluate, train
from unlearnleak.unlearning import StateDict, UnlearningContext, state_of

SPEC = ModelSpec("mlp", (8,), 4, (0.0,), (1.0,), {"hidden": [64]})
FINETUNE = TrainConfig(epochs=150, lr=0.05, momentum=0.9, batch_size=64, freeze_bn=True)
CENTERS = 2.0 * torch.eye(4, 8)


def clusters(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 4, (n,), generator=g)
    return CENTERS[y] + 0.7 * torch.randn(n, 8, generator=g), y


@dataclass(frozen=True)
class Toy:
    base: StateDict
    original: StateDict
    x: torch.Tensor
    y: torch.Tensor
    mask: torch.Tensor
    test: tuple[torch.Tensor, torch.Tensor]

    def context(self, params: dict | None = None, seed: int = 0) -> UnlearningContext:
        return UnlearningContext(SPEC, original=self.original, base=self.base, x_train=self.x, y_train=self.y,
                                 forget_mask=self.mask, finetune=FINETUNE, params=params or {}, seed=seed)

    def accuracy(self, state: StateDict) -> tuple[float, float]:
        """(accuracy on D_u with its flipped labels, test accuracy)."""
        model = build_model(SPEC)
        model.load_state_dict(state)
        return (evaluate(model, self.x[self.mask], self.y[self.mask]),
                evaluate(model, *self.test))


def make_toy() -> Toy:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = build_model(SPEC)
    xp, yp = clusters(400, seed=1)
    train(model, xp, yp, TrainConfig(epochs=20, lr=0.05, momentum=0.9, batch_size=64), seed=0)
    base = state_of(model)
    x, y = clusters(64, seed=2)
    mask = torch.zeros(64, dtype=torch.bool)
    mask[:6] = True
    y = y.clone()
    y[mask] = (y[mask] + 1) % 4  # flipped: only memorisation gets them right
    train(model, x, y, FINETUNE, seed=3)
    return Toy(base=base, original=state_of(model), x=x, y=y, mask=mask, test=clusters(400, seed=4))
