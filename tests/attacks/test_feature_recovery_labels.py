"""Labels of D_u read off ∇*: exact for k = 1, counts estimated for k > 1."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from unlearnleak.attacks.feature_recovery import infer_labels, target_gradient
from unlearnleak.attacks.feature_recovery.labels import estimate_counts
from unlearnleak.models import ModelSpec, build_model
from unlearnleak.pair import ModelPair
from unlearnleak.unlearning import state_of

SPEC = ModelSpec("lenet", (3, 16, 16), 10, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), {})


def _pair(x: torch.Tensor, y: torch.Tensor, seed: int = 0, tau: float = 1e-3) -> ModelPair:
    """θ_u = θ + τ·∇ℓ(D_u; θ): one step of gradient ascent on (x, y)."""
    torch.manual_seed(seed)
    model = build_model(SPEC).eval()
    original = state_of(model)
    grads = torch.autograd.grad(F.cross_entropy(model(x), y), list(model.parameters()))
    unlearned = dict(original)
    for (name, p), g in zip(model.named_parameters(), grads, strict=True):
        unlearned[name] = (p + tau * g).detach()
    return ModelPair(SPEC, original, unlearned)


def _infer(pair: ModelPair, k: int) -> list[int]:
    target = target_gradient(pair, mode="approximate")
    return infer_labels(pair.model(), target, k, SPEC.num_classes).labels.tolist()


@pytest.mark.parametrize("label", range(10))
def test_single_label_is_exact(label: int) -> None:
    x = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(label))
    assert _infer(_pair(x, torch.tensor([label]), seed=label), 1) == [label]


@pytest.mark.parametrize("labels", [[1, 4, 7], [2, 2, 5], [6, 6, 6], [0, 3, 9]])
def test_three_labels_with_counts(labels: list[int]) -> None:
    x = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(sum(labels)))
    assert _infer(_pair(x, torch.tensor(labels), seed=len(set(labels))), 3) == sorted(labels)


def test_count_rule_on_known_scores() -> None:
    # Uniform predictions p = 0.1 over 10 classes, D_u labels {2, 5, 5}: entries s·(0.3 − n_c).
    n = torch.zeros(10)
    n[2], n[5] = 1, 2
    scores = 0.7 * (0.3 - n)
    assert estimate_counts(scores, 3).tolist() == n.long().tolist()
    # More negative classes than k: keep the k most negative.
    assert estimate_counts(torch.tensor([-3.0, -1.0, -2.0, 6.0]), 2).tolist() == [1, 0, 1, 0]
