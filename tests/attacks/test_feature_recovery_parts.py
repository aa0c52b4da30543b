"""The inversion engine's parts: registered priors and objectives, torch.optim equal to a plain loop, closed
forms in one place, and the adaptive default's choice of prior strength (the mechanism, not a timing)."""

from __future__ import annotations

import math
from itertools import pairwise

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from unlearnleak.attacks.closed_forms import features_from_linear_gradient, log_odds, output_layer
from unlearnleak.attacks.feature_recovery import TargetGradient, invert, preset
from unlearnleak.attacks.feature_recovery.inversion import GradientMatcher
from unlearnleak.attacks.feature_recovery.objectives import OBJECTIVES
from unlearnleak.attacks.feature_recovery.priors import PRIORS, Prior, total_variation
from unlearnleak.metrics import psnr
from unlearnleak.models import ModelSpec, build_model


def _target(model: nn.Module, x: torch.Tensor, y: torch.Tensor, noise: float = 0.0) -> TargetGradient:
    """The exact gradient of (x, y), plus Gaussian noise of ``noise`` × each tensor's RMS."""
    grads = torch.autograd.grad(F.cross_entropy(model(x), y), list(model.parameters()))
    gen = torch.Generator().manual_seed(5)
    tensors = tuple(g.detach().double() + noise * g.norm() / g.numel() ** 0.5
                    * torch.randn(g.shape, generator=gen, dtype=torch.float64) for g in grads)
    return TargetGradient(tuple(n for n, _ in model.named_parameters()), tensors, "approximate", "original")


def _tiny(side: int = 16) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A random-weight LeNet (no batch norm: an informative gradient) and one smooth image with an edge."""
    torch.manual_seed(0)
    model = build_model(ModelSpec("lenet", (3, side, side), 10, (0.5,) * 3, (0.25,) * 3, {})).eval()
    g = torch.Generator().manual_seed(1)
    x = F.interpolate(torch.rand(1, 3, 4, 4, generator=g), size=(side, side), mode="bilinear", align_corners=False)
    x[..., 4:10, 5:12] += 0.3
    return model, x.clamp(0, 1), torch.tensor([3])


def test_default_adapts_weak_prior_for_an_exact_gradient_strong_for_a_noisy_one() -> None:
    model, x, y = _tiny()
    clean = invert(model, _target(model, x, y), y, (3, 16, 16), preset("best", iterations=300), seed=0)
    noisy = invert(model, _target(model, x, y, noise=1.0), y, (3, 16, 16), preset("best", iterations=300), seed=0)
    assert clean.race is not None and noisy.race is not None
    assert clean.race["chosen_total_variation"] <= 0.03  # no strong smoothing where ∇* is exact
    assert float(psnr(clean.x, x)[0]) > 21.0
    assert noisy.race["chosen_total_variation"] >= 0.1  # keeps a strong prior where ∇* is noise-dominated
    assert clean.race["chosen_total_variation"] < noisy.race["chosen_total_variation"]
    # The record a user reads: one held-out cost per candidate, the winner is the lowest.
    costs = clean.race["heldout_costs"]
    assert len(costs) == 5 and clean.race["candidates"][costs.index(min(costs))] == clean.race["chosen_total_variation"]


def test_a_budget_too_short_for_the_race_goes_to_one_trajectory_and_says_so() -> None:
    """100 iterations would give each of the 5 candidates 50 steps (< 150): no race, TV 0.01 from a gray start
    for all 100 steps, recorded; a time budget that short (0.2 s) likewise (its first steps measure the step
    time)."""
    model, x, y = _tiny()
    target = _target(model, x, y)
    short = invert(model, target, y, (3, 16, 16), preset("best", iterations=100), seed=0)
    assert short.race is not None and short.race["raced"] is False and short.iterations == 100
    assert short.race["chosen_total_variation"] == 0.01 and short.race["steps_per_candidate"] == 50
    assert "no race" in short.race["reason"]
    assert short.race["init"] == "gray"
    plain = invert(model, target, y, (3, 16, 16), preset("best", iterations=100, race=(), init="gray"), seed=0)
    assert torch.equal(short.x, plain.x)  # exactly the single trajectory at the fallback weight
    timed = invert(model, target, y, (3, 16, 16), preset("best", iterations=100_000), seed=0, time_budget=0.2)
    assert timed.race is not None and timed.race["raced"] is False and 3 < timed.iterations < 100_000
    long = invert(model, target, y, (3, 16, 16), preset("best", iterations=300), seed=0)
    assert long.race is not None and long.race["raced"] is True


def test_successive_halving_keeps_the_better_half_by_held_out_cost() -> None:
    """race_rounds=3: 5, then 3, then 2 candidates, each round's survivors the lowest held-out costs of the
    round before; the winner is the lowest of the last round and the run keeps its iteration count."""
    model, x, y = _tiny()
    result = invert(model, _target(model, x, y), y, (3, 16, 16),
                    preset("best", iterations=60, race_rounds=3, race_min_steps=0), seed=0)
    assert result.race is not None and result.iterations == 60
    rounds = result.race["rounds"]
    assert [len(r["candidates"]) for r in rounds] == [5, 3, 2]
    for before, after in pairwise(rounds):
        ranked = [c for _, c in sorted(zip(before["heldout_costs"], before["candidates"], strict=True))]
        assert sorted(after["candidates"]) == sorted(ranked[:len(after["candidates"])])
    last = rounds[-1]
    assert result.race["chosen_total_variation"] == last["candidates"][last["heldout_costs"].index(
        min(last["heldout_costs"]))]


def test_adaptive_default_works_for_several_samples() -> None:
    model, x, _ = _tiny()
    xs, ys = torch.cat([x, x.flip(-1)]), torch.tensor([3, 5])
    result = invert(model, _target(model, xs, ys), ys, (3, 16, 16), preset("best", iterations=20), seed=0)
    assert result.x.shape == (2, 3, 16, 16) and result.race is not None and result.iterations == 20


def test_paper_step_equals_a_plain_pytorch_loop() -> None:
    model, x, y = _tiny()
    target = _target(model, x, y)
    steps = 8
    result = invert(model, target, y, (3, 16, 16), preset("paper", iterations=steps, restarts=1), seed=4)
    # The same recipe written out: randn start, clamp, cosine + TV 1e-2, signed AdamW(0.04, wd 0.01), MultiStepLR.
    dummy = torch.randn(1, 1, 3, 16, 16, generator=torch.Generator().manual_seed(4))[0].requires_grad_(True)
    opt = torch.optim.AdamW([dummy], lr=0.04, weight_decay=0.01)
    milestones = [int(steps // 2.667), int(steps // 1.6), int(steps // 1.142)]
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones, 0.5)
    t = target.flat().float()
    for _ in range(steps):
        with torch.no_grad():
            dummy.clamp_(0, 1)
        loss = F.cross_entropy(model(dummy), y)
        g = torch.cat([a.reshape(-1) for a in torch.autograd.grad(loss, list(model.parameters()), create_graph=True)])
        (gx,) = torch.autograd.grad(1 - g @ t / (g.norm() * t.norm()) + 0.01 * total_variation(dummy), dummy)
        dummy.grad = gx.sign()
        opt.step()
        sched.step()
    assert torch.allclose(result.x, dummy.detach().clamp(0, 1), atol=1e-5)


@PRIORS.register("test_gray")
class GrayWorld(Prior):
    """Test prior: pixels near mid-gray (mean squared distance to 0.5)."""

    name = "test_gray"

    def penalty(self, x: torch.Tensor) -> torch.Tensor:
        return (x - 0.5).pow(2).mean()


def test_a_new_prior_is_one_registered_class() -> None:
    model, x, y = _tiny()
    target = _target(model, x, y)
    cfg = preset("paper", priors={"test_gray": 10.0})
    matcher = GradientMatcher(model, target, y, cfg, input_shape=(3, 16, 16))
    assert [p.name for p in matcher.priors] == ["total_variation", "test_gray"]
    assert "GrayWorld(weight=10)" in repr(matcher)
    dummy = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    with_prior, _ = matcher.cost(dummy)
    without, _ = GradientMatcher(model, target, y, preset("paper"), input_shape=(3, 16, 16)).cost(dummy)
    assert float(with_prior - without) == pytest.approx(10.0 * float((dummy - 0.5).pow(2).mean()), rel=1e-5)
    pulled = invert(model, target, y, (3, 16, 16),
                    preset("paper", iterations=30, restarts=1, priors={"test_gray": 100.0}))
    free = invert(model, target, y, (3, 16, 16), preset("paper", iterations=30, restarts=1))
    assert float((pulled.x - 0.5).abs().mean()) < float((free.x - 0.5).abs().mean())
    with pytest.raises(ValueError, match="priors"):
        preset("paper", priors={"no_such_prior": 1.0})


def test_registries_list_the_parts_with_readable_reprs() -> None:
    assert {"total_variation", "bn_prior", "feature_match"} <= set(PRIORS.names())
    assert {"cosine", "layer_cosine"} <= set(OBJECTIVES.names())
    model, x, y = _tiny()
    matcher = GradientMatcher(model, _target(model, x, y), y, preset("paper", bn_prior=0.1, feature_match=1.0),
                              input_shape=(3, 16, 16))
    text = repr(matcher)
    assert "Cosine(" in text and "TotalVariation(weight=0.01)" in text and "FeatureMatching(weight=1" in text
    assert "BatchNormStatistics(weight=0.1" in text  # LeNet has no batch norm: its penalty is 0
    # At the true image the features match exactly: total cost = objective + 0.01 · TV.
    total, objective = matcher.cost(x)
    assert float(total - objective) == pytest.approx(0.01 * float(total_variation(x)), abs=1e-5)


def test_closed_forms_live_in_one_place() -> None:
    layer = nn.Linear(6, 4)
    h = torch.randn(1, 6)
    loss = F.cross_entropy(layer(h), torch.tensor([2]))
    gw, gb = torch.autograd.grad(loss, [layer.weight, layer.bias])
    recovered = features_from_linear_gradient(-3.0 * gw, -3.0 * gb)  # any multiple of the gradient
    assert recovered is not None and torch.allclose(recovered.float(), h[0], atol=1e-5)
    assert features_from_linear_gradient(gw, torch.zeros(4)) is None
    assert output_layer(nn.Sequential(nn.Linear(5, 10), nn.ReLU(), nn.Linear(10, 3)), 3)[0] == "2"
    proba = torch.tensor([[0.9, 0.05, 0.05]])
    assert float(log_odds(proba, 0)[0]) == pytest.approx(math.log(0.1 / 0.9), rel=1e-6)
    from unlearnleak.attacks.feature_recovery.labels import output_layer as from_labels
    from unlearnleak.attacks.label_inference.probes import log_odds as from_probes
    assert from_probes is log_odds and from_labels is output_layer
