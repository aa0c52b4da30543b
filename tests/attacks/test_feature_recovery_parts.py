"""The inversion engine's parts: registered priors and objectives, torch.optim equal to a plain loop, closed
forms in one place, and the race API of the adaptive default (candidates with their own start and priors)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from unlearnleak.attacks.closed_forms import features_from_linear_gradient, log_odds, output_layer
from unlearnleak.attacks.feature_recovery import Candidate, TargetGradient, invert, preset
from unlearnleak.attacks.feature_recovery.adaptive import (
    Pick,
    _consensus,
    blend_consensus,
    candidate_support,
    image_agreement,
    pairwise_agreement,
    pick_winner,
)
from unlearnleak.attacks.feature_recovery.inversion import GradientMatcher, run_inversion
from unlearnleak.attacks.feature_recovery.objectives import OBJECTIVES
from unlearnleak.attacks.feature_recovery.priors import PRIORS, Prior, total_variation
from unlearnleak.data import load_dataset
from unlearnleak.errors import ConfigError
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


def test_a_candidate_with_its_own_start_races_beside_the_recipes_and_wins_when_it_explains_the_gradient() -> None:
    """The race API for starts the configured recipes cannot draw (e.g. a decoded image): a Candidate with the
    true image as its start explains ∇* best on the held-out coordinates, so it wins and is continued."""
    model, x, y = _tiny()
    target = _target(model, x, y)
    truth = Candidate("own start", preset("paper", lr=0.002), init=x)  # small steps: it stays where it starts
    cfg = preset("best", iterations=60, race_min_steps=0)  # a race at any budget (the mechanism, not the rule)
    result = invert(model, target, y, (3, 16, 16), cfg, seed=0, candidates=[truth])
    race = result.race
    assert race is not None and race["raced"] is True
    names = [c["recipe"] for c in race["candidates"]]
    assert names == ["paper", "modern", "smooth", "own start"] and race["candidates"][-1]["own_start"] is True
    assert race["chosen_recipe"] == "own start"
    assert race["heldout_costs"][race["winner"]] == min(race["heldout_costs"])  # nothing else comes close
    assert float(psnr(result.x, x)[0]) > 30.0
    assert result.iterations == 60  # the race and the continuation share the budget


def test_a_prior_built_by_the_caller_is_weighed_per_restart_by_name() -> None:
    """Candidates may bring prior instances (built around a tensor); their weight is raced like a registered one."""

    class PullTowards(Prior):
        name = "pull"

        def __init__(self, image: torch.Tensor, weight: float = 0.0) -> None:
            super().__init__(weight)
            self.image = image

        def penalty(self, x: torch.Tensor) -> torch.Tensor:
            return (x - self.image).pow(2).mean()

    model, x, y = _tiny()
    anchor = torch.full_like(x, 0.2)
    result = run_inversion(model, _target(model, x, y), y, (3, 16, 16), preset("paper", iterations=40, restarts=2),
                           prior_weights={"pull": torch.tensor([0.0, 1000.0])}, priors=(PullTowards(anchor),))
    assert result.candidates is not None
    free, pulled = ((c - anchor).abs().mean() for c in result.candidates)
    assert float(pulled) < 0.5 * float(free)
    with pytest.raises(ValueError, match="both configured and passed"):  # one name, one prior
        GradientMatcher(model, _target(model, x, y), y, preset("paper", priors={"test_gray": 1.0}),
                        input_shape=(3, 16, 16), prior_instances=(GrayWorld(1.0),))


def test_a_budget_too_short_for_the_race_goes_to_one_trajectory_and_says_so() -> None:
    """race_min_steps: when each candidate would get fewer steps, the whole budget goes to one trajectory of
    ``short_recipe``, exactly that preset's run, recorded; a time budget that short likewise."""
    model, x, y = _tiny()
    target = _target(model, x, y)
    cfg = preset("best", iterations=90, race_min_steps=50, short_recipe="modern")
    short = invert(model, target, y, (3, 16, 16), cfg, seed=0)
    assert short.race is not None and short.race["raced"] is False and short.iterations == 90
    assert short.race["chosen_recipe"] == "modern"
    assert short.race["steps_per_candidate"] == pytest.approx(cfg.race_share * 90 / 3)
    assert "no race" in short.race["reason"]
    plain = invert(model, target, y, (3, 16, 16), preset("modern", iterations=90), seed=0)
    assert torch.equal(short.x, plain.x)  # exactly the single trajectory of the short recipe
    timed = invert(model, target, y, (3, 16, 16), cfg.with_overrides(iterations=100_000), seed=0, time_budget=0.3)
    assert timed.race is not None and timed.race["raced"] is False and 3 < timed.iterations < 100_000
    raced = invert(model, target, y, (3, 16, 16), cfg.with_overrides(iterations=600), seed=0)
    assert raced.race is not None and raced.race["raced"] is True
    # a candidate marked `alone` (e.g. one with its own start) takes the short budget instead of short_recipe
    own = Candidate("own start", preset("paper", lr=0.002), init=x, alone=True)
    alone = invert(model, target, y, (3, 16, 16), cfg, seed=0, candidates=[own])
    assert alone.race is not None and alone.race["raced"] is False and alone.race["chosen_recipe"] == "own start"
    assert alone.race["steps_per_candidate"] == pytest.approx(cfg.race_share * 90 / 4)
    assert float(psnr(alone.x, x)[0]) > 30.0 and alone.iterations == 90


@pytest.mark.shared_data
def test_the_race_picks_the_recipe_that_recovers_best(shared_data: Path) -> None:
    """The tuning case `cnn-nobn-random` (a random CNN without normalisation, whose gradient pins the photo
    down), one CIFAR-10 photo, exact ∇*: the paper's weak prior recovers it far better than the strong-prior
    recipes (each run alone for the same 1,000 steps, scored against the truth the race never sees); the race —
    short legs on half of ∇*, scored on the other half — picks it, and continues it to about the same quality."""
    data = load_dataset("cifar10", "train", shared_data, batches=(1,))
    x, y = data.x[:1], data.y[:1]
    torch.manual_seed(0)
    model = build_model(ModelSpec("cnn_nobn", data.input_shape, 10, data.mean, data.std, {"width": 16})).eval()
    target = _target(model, x, y)
    result = invert(model, target, y, data.input_shape, preset("best", iterations=1000), seed=0)
    alone = {name: float(psnr(invert(model, target, y, data.input_shape, preset(name, iterations=1000, restarts=1),
                                     seed=0).x, x)[0]) for name in ("paper", "modern", "smooth")}
    race = result.race
    # legs of 100 steps (10 % each), cooled for 50 on a copy to be scored; the winner's schedule spans 650 steps
    assert race is not None and race["raced"] is True and race["schedule"] == "truncated"
    assert (race["steps_per_candidate"], race["cooldown_steps"], race["schedule_length"]) == (100, 50, 650)
    assert max(alone, key=alone.__getitem__) == "paper" and alone["paper"] > max(alone["modern"], alone["smooth"]) + 1.5
    assert race["chosen_recipe"] == "paper"
    # it wins by the agreement gate: the three recipes' scored images agree, so ∇* pins the photo
    assert race["agreement_db"] >= race["agreement_threshold"] == preset("best").race_agreement > 0
    _check_pick(race)
    assert float(psnr(result.x, x)[0]) > max(alone["modern"], alone["smooth"]) + 1.0
    assert result.iterations == 1000


def _check_pick(race: dict) -> None:
    """The recorded pick follows the rule: with the agreement gate on, the first candidate wins if its image
    agrees with another's to the threshold; else the lowest TV among the candidates within (1 + tolerance) × the
    lowest held-out cost."""
    costs, tvs = race["heldout_costs"], race["total_variation"]
    first = [i for i, c in enumerate(race["candidates"]) if c["recipe"] == race["candidates"][0]["recipe"]]
    agreement, threshold = race["agreement_db"], race["agreement_threshold"]
    if threshold and agreement is not None and agreement >= threshold:
        assert race["eligible"] == first and race["winner"] == min(first, key=lambda i: costs[i])
        return
    eligible = [i for i, c in enumerate(costs) if c <= min(costs) + race["tolerance"] * abs(min(costs))]
    assert race["eligible"] == eligible and race["tolerance"] == preset("best").race_tolerance
    assert race["winner"] == min(eligible, key=lambda i: tvs[i])


def test_the_agreement_gate_trusts_the_faithful_recipe_only_where_the_recipes_agree() -> None:
    """Restart 0 (the data-faithful recipe) explains ∇* about as well as restart 1, whose image is smoother: the
    tolerance rule hands the race to restart 1. Where restart 0's image agrees with another recipe's to the
    threshold, ∇* pins the image down and restart 0 wins outright; below the threshold, or with the gate off
    (threshold 0), the tolerance rule decides."""
    costs, tvs = [0.020, 0.022, 0.030], [0.14, 0.09, 0.08]
    assert pick_winner(costs, tvs, 0.25) == (1, [0, 1])
    assert pick_winner(costs, tvs, 0.25, faithful=[0], agreement=25.0, threshold=22.0) == (0, [0])
    assert pick_winner(costs, tvs, 0.25, faithful=[0], agreement=21.9, threshold=22.0) == (1, [0, 1])
    assert pick_winner(costs, tvs, 0.25, faithful=[0], agreement=25.0, threshold=0.0) == (1, [0, 1])
    # of several faithful restarts, the one with the lowest held-out cost
    assert pick_winner([0.03, 0.02, 0.022], tvs, 0.25, faithful=[0, 1], agreement=30.0, threshold=22.0) == (1, [0, 1])
    # a lone faithful candidate (nothing to agree with: agreement None) races as before
    assert pick_winner([0.01], [0.3], 0.25, faithful=[0], agreement=None, threshold=22.0) == (0, [0])


def test_image_agreement_is_the_psnr_between_the_faithful_image_and_the_closest_other() -> None:
    """Agreement is the PSNR of the faithful restart's image against the closest image of another candidate:
    noise of standard deviation 0.05 gives about 26 dB; an unrelated uniform-noise image about 10 dB."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 3, 16, 16, generator=g) * 0.5 + 0.25
    close = (x + 0.05 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    far = torch.rand(x.shape, generator=g)
    assert image_agreement([x, far, close], faithful=[0]) == pytest.approx(26.0, abs=0.5)
    assert image_agreement([x, far], faithful=[0]) < 12.0
    assert image_agreement([x, x.clone()], faithful=[0]) == 100.0  # identical images: capped, not +inf
    assert image_agreement([x, close], faithful=[0, 1]) is None  # no candidate other than the faithful one


def test_among_near_equal_explanations_the_smoother_image_wins() -> None:
    """Two candidates that explain ∇* equally (both start at the truth, one with colour noise added that its tiny
    steps cannot remove): within the tolerance the smooth one wins; with tolerance 0 the lower held-out cost
    alone decides."""
    model, x, y = _tiny()
    target = _target(model, x, y)
    noisy = (x + 0.15 * torch.randn(x.shape, generator=torch.Generator().manual_seed(8))).clamp(0, 1)
    still = preset("paper", lr=1e-6)
    cands = [Candidate("noisy", still, init=noisy), Candidate("smooth truth", still, init=x)]
    cfg = preset("best", iterations=40, race=(), race_min_steps=0, race_agreement=0.0)  # the tolerance rule alone
    result = invert(model, target, y, (3, 16, 16), cfg, seed=0, candidates=cands)
    race = result.race
    assert race is not None and [c["recipe"] for c in race["candidates"]] == ["configured", "noisy", "smooth truth"]
    assert race["chosen_recipe"] == "smooth truth"
    tvs = race["total_variation"]
    assert tvs[2] < tvs[1]
    _check_pick(race)


def test_the_agreement_tie_break_picks_the_answer_the_other_recipes_share() -> None:
    """Three candidates explain ∇* about equally (within the tolerance). Two of them are the photo plus mild noise,
    the third is the photo plus strong colour noise smoothed away by a blur (low TV, far from the others). The TV
    tie-break hands the race to the blurred one; the agreement tie-break picks an image the other recipes vouch for.
    A candidate's own restarts never vouch for it."""
    g = torch.Generator().manual_seed(0)
    truth = torch.rand(1, 3, 16, 16, generator=g) * 0.6 + 0.2
    a = (truth + 0.05 * torch.randn(truth.shape, generator=g)).clamp(0, 1)
    b = (truth + 0.08 * torch.randn(truth.shape, generator=g)).clamp(0, 1)
    smooth_wrong = F.avg_pool2d(torch.rand(truth.shape, generator=g), 5, stride=1, padding=2)
    images = [a, b, smooth_wrong]
    matrix = pairwise_agreement(images)
    assert matrix[0][0] == 100.0 and matrix[0][1] == matrix[1][0] > matrix[0][2] + 5.0
    costs, tvs = [0.020, 0.024, 0.022], [float(total_variation(x)) for x in images]
    assert pick_winner(costs, tvs, 1.0) == (2, [0, 1, 2])  # the TV tie-break: the smooth, wrong image
    support = candidate_support(matrix, [0, 1, 2])
    assert pick_winner(costs, tvs, 1.0, support=support) == (0, [0, 1, 2])  # the best-supported image
    assert pick_winner(costs, tvs, 0.0, support=support) == (0, [0])  # tolerance 0: the lowest cost alone
    # restarts 1 and 2 as one candidate: they do not vouch for each other; 0 has no one else's support but theirs
    grouped = candidate_support([[100.0, 20.0, 10.0], [20.0, 100.0, 40.0], [10.0, 40.0, 100.0]], [0, 1, 1])
    assert grouped == [15.0, 20.0, 10.0]
    assert candidate_support([[100.0]], [0]) == [0.0]  # a lone candidate


def test_a_race_with_the_agreement_tie_break_records_it() -> None:
    """``race_pick="agreement"`` on a real race: the record holds the agreement matrix (symmetric, 100 on the
    diagonal), the rule, and a winner the replayed rule confirms from the recorded numbers."""
    model, x, y = _tiny()
    target = _target(model, x, y)
    cfg = preset("best", iterations=300, race_min_steps=0, race_agreement=0.0, race_tolerance=1.0,
                 race_pick="agreement")
    race = invert(model, target, y, (3, 16, 16), cfg, seed=0).race
    assert race is not None and race["pick_by"] == "agreement"
    matrix = race["agreements_db"]
    assert len(matrix) == len(race["heldout_costs"]) == 3
    assert all(matrix[i][i] == 100.0 and matrix[i][j] == matrix[j][i] for i in range(3) for j in range(3))
    support = candidate_support(matrix, [0, 1, 2])
    assert pick_winner(race["heldout_costs"], race["total_variation"], 1.0, support=support)[0] == race["winner"]


def test_the_consensus_blends_aligned_answers_and_only_where_the_gate_did_not_fire() -> None:
    """Three answers to a photo, each the truth plus independent noise: their blend (half the first, half the mean
    of the others) is closer to the truth than the first alone. Two samples of one label that another answer
    returns swapped are aligned before blending; samples of different labels are never swapped. In a race, the
    blend is applied (and recorded) only where the agreement gate did not fire."""
    g = torch.Generator().manual_seed(0)
    truth = torch.rand(1, 3, 16, 16, generator=g) * 0.6 + 0.2
    answers = [(truth + 0.1 * torch.randn(truth.shape, generator=g)).clamp(0, 1) for _ in range(3)]
    blended = blend_consensus(answers[0], answers[1:], torch.tensor([4]), 0.5)
    assert float(psnr(blended, truth)[0]) > float(psnr(answers[0], truth)[0]) + 3.0  # noise variance × 3/8
    assert torch.equal(blend_consensus(answers[0], answers[1:], torch.tensor([4]), 0.0), answers[0])
    pair = torch.cat([truth, truth.flip(-1)])
    same = blend_consensus(pair, [pair.flip(0)], torch.tensor([2, 2]), 0.5)  # one label: aligned first
    assert torch.allclose(same, pair)
    mixed = blend_consensus(pair, [pair.flip(0)], torch.tensor([2, 7]), 0.5)  # two labels: slot i stays slot i
    assert torch.allclose(mixed, 0.5 * pair + 0.5 * pair.flip(0))
    # in a race: the gate off (nothing pins the image) → applied to the winner's answer, the losers as members
    model, x, y = _tiny()
    target = _target(model, x, y)
    still = preset("paper", lr=1e-6)
    noisy = (x + 0.15 * torch.randn(x.shape, generator=torch.Generator().manual_seed(8))).clamp(0, 1)
    cands = [Candidate("noisy", still, init=noisy), Candidate("smooth truth", still, init=x)]
    cfg = preset("best", iterations=40, race=(), race_min_steps=0, race_agreement=0.0)
    plain = invert(model, target, y, (3, 16, 16), cfg, seed=0, candidates=cands)
    blend = invert(model, target, y, (3, 16, 16), cfg.with_overrides(race_consensus=0.5), seed=0, candidates=cands)
    assert plain.race is not None and plain.race["consensus"] is None
    assert blend.race is not None and blend.race["winner"] == plain.race["winner"] == 2
    record = blend.race["consensus"]
    assert record["applied"] is True and record["members"] == [0, 1] and record["weight"] == 0.5
    moved = float(psnr(blend.x, plain.x)[0])
    assert record["psnr_to_winner"] == pytest.approx(moved, abs=1e-3) and moved < 60.0
    # the gate fired (∇* pins the image down): the winner's answer as it is, and the record says why
    fired = Pick(winner=0, eligible=[0], tvs=[0.1, 0.1], agreement=30.0, pinned=True)
    kept, why = _consensus(cfg.with_overrides(race_consensus=0.5), fired, plain.x, [plain.x, noisy], [0], y)
    assert kept is plain.x and why == {"weight": 0.5, "applied": False, "reason": "the agreement gate fired",
                                       "members": []}


def test_adaptive_default_works_for_several_samples() -> None:
    model, x, _ = _tiny()
    xs, ys = torch.cat([x, x.flip(-1)]), torch.tensor([3, 5])
    result = invert(model, _target(model, xs, ys), ys, (3, 16, 16), preset("best", iterations=20, race_min_steps=0),
                    seed=0)
    assert result.x.shape == (2, 3, 16, 16) and result.race is not None and result.race["raced"] is True
    assert result.iterations == 20


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


@pytest.mark.parametrize("name", ["paper", "modern"])
def test_a_run_stopped_part_way_and_continued_is_the_uninterrupted_run(name: str) -> None:
    """The hook the truncated race uses: steps 0 … 15 of a 40-step schedule, then steps 15 … 40 from that iterate
    with the optimiser's state, give the same image as the 40 steps in one call (the schedule, the soft sign and
    Adam's moments all continue where they stopped)."""
    model, x, y = _tiny()
    target = _target(model, x, y)
    cfg = preset(name, iterations=40, restarts=2, keep_best=False)
    whole = run_inversion(model, target, y, (3, 16, 16), cfg, seed=3, log_every=0)
    first = run_inversion(model, target, y, (3, 16, 16), cfg, seed=3, log_every=0, feature_phase=False, stop_step=15)
    assert first.iterations == 15 and first.candidates is not None and first.optimizer_state is not None
    rest = run_inversion(model, target, y, (3, 16, 16), cfg, seed=3, log_every=0, feature_phase=False,
                         init=first.candidates, start_step=15, optimizer_state=first.optimizer_state)
    assert rest.iterations == 25 and whole.candidates is not None and rest.candidates is not None
    torch.testing.assert_close(rest.candidates, whole.candidates, atol=1e-5, rtol=0)
    fresh = run_inversion(model, target, y, (3, 16, 16), cfg, seed=3, log_every=0, feature_phase=False,
                          init=first.candidates, start_step=15)  # without the state: a different run
    assert fresh.candidates is not None and (fresh.candidates - whole.candidates).abs().max() > 1e-3


@pytest.mark.parametrize("schedule", ["truncated", "compressed"])
def test_the_race_and_the_winner_share_the_budget(schedule: str) -> None:
    """Both race rules spend exactly the budget: truncated legs L + their cool-downs C + the winner's rest of its
    schedule (S − L, S = T − (n − 1)·L − n·C); compressed legs + a fresh continuation."""
    model, x, y = _tiny()
    cfg = preset("best", iterations=120, race_min_steps=0, race_schedule=schedule)
    result = invert(model, _target(model, x, y), y, (3, 16, 16), cfg, seed=0)
    race = result.race
    assert race is not None and race["raced"] is True and result.iterations == 120
    if schedule == "truncated":
        leg, cool = race["steps_per_candidate"], race["cooldown_steps"]
        assert (leg, cool) == (12, 6) and race["schedule_length"] == 120 - 2 * leg - 3 * cool
        assert race["iterations"] == 3 * (leg + cool)


def test_a_race_scored_on_tail_averages_spends_no_extra_steps() -> None:
    """Scoring each leg by the mean of its last iterates (``race_average``) instead of a cool-down costs no steps:
    the winner's schedule spans S = T − (n − 1)·L; the averaged tail is the mean of exactly those iterates."""
    model, x, y = _tiny()
    cfg = preset("best", iterations=120, race_min_steps=0, race_cooldown=0.0, race_average=0.5)
    result = invert(model, _target(model, x, y), y, (3, 16, 16), cfg, seed=0)
    race = result.race
    assert race is not None and race["raced"] is True and result.iterations == 120
    assert (race["steps_per_candidate"], race["cooldown_steps"], race["averaged_steps"]) == (12, 0, 6)
    assert race["schedule_length"] == 120 - 2 * 12 and race["iterations"] == 3 * 12
    plain = preset("paper", iterations=20, restarts=1)
    tails = [run_inversion(model, _target(model, x, y), y, (3, 16, 16), plain, seed=1, log_every=0,
                           stop_step=s).candidates for s in (18, 19, 20)]
    averaged = run_inversion(model, _target(model, x, y), y, (3, 16, 16), plain, seed=1, log_every=0,
                             average_last=3)
    assert averaged.average is not None and torch.allclose(averaged.average, sum(tails) / 3, atol=1e-6)
    with pytest.raises(ValueError, match="race_average and race_cooldown"):
        preset("best", race_average=0.5)
    with pytest.raises(ConfigError, match="prune_at"):
        run_inversion(model, _target(model, x, y), y, (3, 16, 16), plain.with_overrides(restarts=2, prune_at=(0.5,)),
                      average_last=3)


def test_a_timed_truncated_race_fits_its_budget_from_the_step_time() -> None:
    """With a time budget the race's T comes from the measured step time (capped by the configured iterations),
    and the legs, cool-downs and the winner's schedule are split from it as for an iteration budget."""
    model, x, y = _tiny()
    cfg = preset("best", iterations=100_000, race_min_steps=0)
    result = invert(model, _target(model, x, y), y, (3, 16, 16), cfg, seed=0, time_budget=1.5)
    race = result.race
    assert race is not None and race["raced"] is True and race["schedule"] == "truncated"
    leg, cool = race["steps_per_candidate"], race["cooldown_steps"]
    assert leg >= 1 and race["iterations"] == 3 * (leg + cool)
    assert race["iterations"] < result.iterations <= race["iterations"] + race["schedule_length"] - leg < 100_000


def test_output_layer_is_the_linear_forward_calls_last() -> None:
    """Registration order does not say which K-wide Linear makes the logits; one forward pass does."""
    from torch import nn

    from unlearnleak.attacks.closed_forms import num_logits
    from unlearnleak.models import Normalized

    class HeadFirst(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.head = nn.Linear(3, 3)
            self.hidden = nn.Linear(4, 3)
            self.extra = nn.Linear(4, 7)  # registered last, called first

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(torch.relu(self.hidden(x + 0 * self.extra(x).sum())))

    model = Normalized(HeadFirst(), (0.0,), (1.0,), image=False, input_shape=(4,)).train()
    assert output_layer(model, 3)[0] == "net.head"
    assert num_logits(model) == 3
    assert model.training  # the probe runs in eval mode and restores the mode


def test_bias_free_head_label_whatever_the_sign_of_the_features() -> None:
    """A bias-free output layer after tanh: the weight rows' signs flip with the features' sum; for k = 1 the
    label's entry is still the largest in magnitude (before: the most confident wrong class was named)."""
    from torch import nn
    from torch.nn import functional as F

    from unlearnleak.attacks.feature_recovery.labels import infer_labels
    from unlearnleak.attacks.feature_recovery.target_gradient import TargetGradient

    torch.manual_seed(0)
    for shift, label in ((-2.0, 4), (2.0, 1), (-2.0, 0)):
        net = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 5, bias=False))
        with torch.no_grad():
            net[0].bias.fill_(shift)  # features all below (or above) 0
        x = torch.randn(1, 6)
        loss = F.cross_entropy(net(x), torch.tensor([label]))
        names = tuple(n for n, _ in net.named_parameters())
        grads = torch.autograd.grad(loss, list(net.parameters()))
        target = TargetGradient(names, tuple(g.double() for g in grads), "approximate", "original")
        estimate = infer_labels(net, target, 1, 5)
        assert estimate.source == "output_weight_rows" and estimate.labels.tolist() == [label]


def test_bias_free_head_after_relu_keeps_the_label_when_a_wrong_class_takes_almost_all_mass() -> None:
    """ReLU features (sum > 0) and a confidently misclassified deleted sample: the label's entry −(1 − p_y) and
    the wrong class's +p_c nearly tie in magnitude; the label must still be named (no sign flip on a near-tie)."""
    from unlearnleak.attacks.feature_recovery.labels import infer_labels
    from unlearnleak.attacks.feature_recovery.target_gradient import TargetGradient

    h = torch.rand(8, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) + 0.1  # ReLU: ≥ 0
    p = torch.tensor([1e-7, 0.9999996, 1e-7, 1e-7, 1e-7], dtype=torch.float64)  # label 0, class 1 takes it all
    y = torch.zeros(5, dtype=torch.float64)
    y[0] = 1
    grad = torch.outer(p - y, h)
    grad[1] *= 1 + 1e-6  # float noise of ∇* (a float32 step) tips the near-tie towards the wrong class
    target = TargetGradient(("head.weight",), (grad,), "approximate", "original")
    head = torch.nn.Sequential()
    head.add_module("head", torch.nn.Linear(8, 5, bias=False))
    assert infer_labels(head, target, 1, 5).labels.tolist() == [0]
