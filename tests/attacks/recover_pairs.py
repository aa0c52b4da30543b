"""A saved pair for the `recover` CLI tests: θ_u one gradient-ascent step away from θ on k random images."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file
from torch.nn import functional as F

from unlearnleak.knowledge import ServerKnowledge
from unlearnleak.models import ModelSpec, build_model
from unlearnleak.pair import ModelPair
from unlearnleak.unlearning import state_of

SPEC = ModelSpec("lenet", (3, 16, 16), 10, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), {})


def ascent_pair(spec: ModelSpec, x: torch.Tensor, y: torch.Tensor, step: float = 1e-3, seed: int = 0) -> ModelPair:
    """θ (the architecture's initialisation under ``seed``) and θ_u = θ + step·∇ℓ(D_u): one gradient-ascent step
    on D_u = (x, y)."""
    torch.manual_seed(seed)
    model = build_model(spec).eval()
    grads = torch.autograd.grad(F.cross_entropy(model(x), y), list(model.parameters()))
    original = state_of(model)
    unlearned = dict(original)
    for (name, p), g in zip(model.named_parameters(), grads, strict=True):
        unlearned[name] = (p + step * g).detach()
    return ModelPair(spec, original, unlearned)


def one_step_pair(folder: Path, labels: list[int], spec: ModelSpec = SPEC, n_train: int | None = None) -> Path:
    """Save the pair (default: LeNet on 16×16), its knowledge (k = len(labels), N = ``n_train``) and D_u as
    ground truth into ``folder``."""
    x = torch.rand(len(labels), *spec.input_shape, generator=torch.Generator().manual_seed(123))
    y = torch.tensor(labels)
    ascent_pair(spec, x, y, step=1e-2).save(folder)
    ServerKnowledge(n_train=n_train, n_forget=len(labels)).save(folder)
    save_file({"forget_x": x, "forget_y": y}, str(folder / "ground_truth.safetensors"))
    return folder
