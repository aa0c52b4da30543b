"""Probes for every class, also on a trained batch-norm network that sends noise to one class (issue 18)."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from unlearnleak.attacks.label_inference import generate_probes
from unlearnleak.attacks.label_inference.starts import StartPool, class_margins, synthetic_candidates
from unlearnleak.models import Normalized
from unlearnleak.oracle import ModelOracle

K, SHAPE = 10, (3, 8, 8)
PALETTE = torch.tensor([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [1, 0, 1], [0, 1, 1], [1, 1, 1],
                        [0.5, 0.5, 0.5], [1, 0.5, 0]])[:, :, None, None]


def _images(n: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Class c: a smooth field around colour c; class 0 is a noisy texture (as noise-like photos are)."""
    y = torch.randint(K, (n,), generator=g)
    low = torch.rand(n, 3, 2, 2, generator=g) * 0.3
    x = PALETTE[y] * 0.7 + F.interpolate(low, size=SHAPE[1:], mode="bilinear", align_corners=False)
    texture = y == 0
    x[texture] += 0.5 * torch.randn(int(texture.sum()), *SHAPE, generator=g)
    return x.clamp(0, 1), y


@pytest.fixture(scope="module")
def collapsed() -> Normalized:
    """A conv-BN-ReLU network trained on ten classes; in eval mode it sends clipped noise to class 0."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # module-scoped: set up before the per-test one-thread fixture
    torch.manual_seed(1)
    g = torch.Generator().manual_seed(1)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                        nn.Conv2d(8, 16, 3, padding=1, stride=2), nn.BatchNorm2d(16), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, K))
    optimizer = torch.optim.Adam(net.parameters(), lr=0.02)
    for _ in range(100):
        x, y = _images(32, g)
        loss = F.cross_entropy(net(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model = Normalized(net, (0.5,) * 3, (0.25,) * 3, image=True).eval()
    x, y = _images(400, g)
    with torch.no_grad():
        assert float((model(x).argmax(1) == y).float().mean()) > 0.5  # trained (chance: 0.1)
    torch.set_num_threads(threads)
    return model


def test_noise_falls_into_one_class_but_every_class_gets_probes(collapsed: Normalized) -> None:
    noise = torch.randn(300, *SHAPE, generator=torch.Generator().manual_seed(1)).clamp(0, 1)
    with torch.no_grad():
        assert torch.bincount(collapsed(noise).argmax(1), minlength=K).max() >= 0.95 * 300
    oracle = ModelOracle(collapsed, num_classes=K, input_shape=SHAPE)
    probes = generate_probes("nes", oracle, K, 2, SHAPE, seed=0, max_steps=40)  # default: class starts
    assert probes.class_counts() == [2] * K and probes.lacking() == []
    assert "no probe" not in probes.notes
    assert probes.total_queries == oracle.queries
    # the paper's noise starts, same budget: classes are left without probes, and the notes name them
    paper = generate_probes("nes", ModelOracle(collapsed, num_classes=K, input_shape=SHAPE), K, 2, SHAPE, seed=0,
                            max_steps=40, start="noise")
    assert paper.lacking() != []
    for c in paper.lacking():
        assert f"class {c}: no probe after" in paper.notes


def test_the_start_pool_ranks_candidates_by_the_margin_towards_each_class(collapsed: Normalized) -> None:
    oracle = ModelOracle(collapsed, num_classes=K, input_shape=SHAPE)
    pool = StartPool.build(oracle, 60, seed=0)
    assert pool.source == "synthetic" and oracle.queries == len(pool) == 60
    assert pool.x.min() >= 0 and pool.x.max() <= 1
    margins = class_margins(pool.proba)
    for c in range(K):
        first, _ = pool.start(c, 0)
        second, _ = pool.start(c, 1)
        i, j = int(pool.order(c)[0]), int(pool.order(c)[1])
        assert torch.equal(first[0], pool.x[i]) and torch.equal(second[0], pool.x[j])
        assert margins[i, c] == margins[:, c].max() and margins[j, c] <= margins[i, c]
    # a margin is log p_c − max_{j≠c} log p_j: positive exactly for the predicted class
    assert torch.equal(margins.argmax(1), pool.proba.argmax(1)) and bool((margins.max(1).values >= 0).all())
    again = synthetic_candidates(SHAPE, 60, torch.Generator().manual_seed(5))
    assert torch.equal(again, synthetic_candidates(SHAPE, 60, torch.Generator().manual_seed(5)))


def test_public_probes_name_a_class_theta_never_predicts(collapsed: Normalized) -> None:
    """Public samples of a class θ never predicts correctly: no probe for it, and the notes say why."""
    oracle = ModelOracle(collapsed, num_classes=K, input_shape=SHAPE)
    g = torch.Generator().manual_seed(2)
    x = torch.rand(60, *SHAPE, generator=g)
    y = oracle.predict_proba(x).argmax(1)
    y[y == int(y[0])] = (int(y[0]) + 1) % K  # relabel: θ predicts none of the new class's samples as it

    class Data:
        def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
            self.x, self.y = x, y

    probes = generate_probes("public", oracle, K, 1, SHAPE, public=Data(x, y))
    missing = int(y[0]) - 1 if int(y[0]) > 0 else K - 1
    assert missing in probes.lacking()
    assert f"class {missing}:" in probes.notes


def test_a_class_budget_caps_each_class_and_failed_attempts_are_retried(collapsed: Normalized) -> None:
    oracle = ModelOracle(collapsed, num_classes=K, input_shape=SHAPE)
    budget, per_class = 300, 2
    probes = generate_probes("nes", oracle, K, per_class, SHAPE, seed=0, max_steps=40, class_budget=budget,
                             threshold=0.999)
    step = 2 * 10 + 3  # queries of one nes step (10 antithetic directions, 3 line-search points)
    spent, attempts = probes.params["class_queries"], probes.params["class_attempts"]
    # the budget is checked after every step of the class's running attempts: at most one step (and a start)
    # over it per running attempt
    assert all(q <= budget + per_class * (step + 1) for q in spent), spent
    assert all(a <= per_class * 3 for a in attempts)  # max_attempts = 3 per probe asked for
    assert probes.total_queries == oracle.queries == sum(spent) + len(probes) + probes.params["pool_size"]
    assert len(probes) <= per_class * K
