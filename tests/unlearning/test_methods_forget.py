"""Every registered method forgets on a small net, stays usable, and records its cost (issue 10)."""

from __future__ import annotations

import pytest
import torch
from unlearning_toy import SPEC, Toy

from unlearnleak.unlearning import UNLEARNING, unlearn_measured
from unlearnleak.unlearning.sisa import SisaParams, member_state, shard_pair, train_sisa

# Parameters that make each method forget on the toy problem (its defaults are sized for CIFAR, see docs).
PARAMS: dict[str, dict] = {
    "exact": {},
    "retrain": {"epochs": 60},
    "finetune": {"epochs": 60, "lr": 0.05},
    "neggrad_plus": {"alpha": 0.5, "epochs": 20, "lr": 0.02},
    "first_order": {"tau": 0.2},
    "second_order": {"damping": 0.1, "tau": 0.1},
    "random_label": {"epochs": 10},
    "gradient_ascent": {"lr": 0.1, "epochs": 5},
}
# Usable: the unlearned model's test accuracy is at least θ's minus this bound (θ: 0.79, θ0: 0.94).
TEST_ACCURACY_BOUND = 0.10



def test_every_registered_method_is_covered() -> None:
    assert set(UNLEARNING.names()) == set(PARAMS) | {"sisa"}


@pytest.mark.parametrize("method", sorted(PARAMS))
def test_method_forgets_and_stays_usable(toy: Toy, method: str) -> None:
    forget_before, test_before = toy.accuracy(toy.original)
    assert forget_before == 1.0  # θ memorised the flipped points
    outcome = unlearn_measured(method, toy.context(PARAMS[method]), toy.test)
    forget_after, test_after = toy.accuracy(outcome.state)
    assert forget_after <= 0.5, f"{method} did not forget: accuracy on D_u {forget_after}"
    assert test_after >= test_before - TEST_ACCURACY_BOUND
    # the record matches a direct evaluation and the cost is counted
    assert outcome.accuracy["original_forget"] == forget_before
    assert outcome.accuracy["unlearned_forget"] == forget_after
    assert outcome.accuracy["unlearned_test"] == test_after
    assert outcome.seconds > 0 and outcome.backward_passes > 0 and outcome.sample_gradients >= outcome.backward_passes


def test_methods_are_deterministic(toy: Toy) -> None:
    for method in ("neggrad_plus", "random_label", "retrain"):
        a = unlearn_measured(method, toy.context(PARAMS[method])).state
        b = unlearn_measured(method, toy.context(PARAMS[method])).state
        assert all(torch.equal(a[k], b[k]) for k in a), method


def test_retrain_does_not_touch_the_global_generator(toy: Toy) -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    unlearn_measured("retrain", toy.context({"epochs": 1}))
    assert torch.equal(torch.rand(3), expected)


def test_sisa_affected_shard_forgets(toy: Toy) -> None:
    """The member that held D_u memorised it and forgets it; the ensemble keeps its test accuracy."""
    params = SisaParams(shards=2, slices=2, epochs_per_slice=150, lr=0.05, batch_size=64)
    spec, original, base = train_sisa(SPEC, toy.base, toy.x, toy.y, params, seed=0)
    ctx = toy.context(params.model_dump())
    ctx = type(ctx)(spec, original=original, base=base, x_train=toy.x, y_train=toy.y, forget_mask=toy.mask,
                    finetune=ctx.finetune, params=params.model_dump(), seed=0)
    outcome = unlearn_measured("sisa", ctx, toy.test)
    from unlearnleak.unlearning.sisa import affected_shards, layout

    lay = layout(64, params, 0)
    for shard in affected_shards(ctx, params):
        in_shard = toy.mask & (lay.shard_of == shard)
        m_spec, before, after = shard_pair(spec, original, outcome.state, shard)
        assert m_spec == SPEC
        model = toy_model(before)
        assert float((model(toy.x[in_shard]).argmax(1) == toy.y[in_shard]).float().mean()) == 1.0
        model = toy_model(after)
        assert float((model(toy.x[in_shard]).argmax(1) == toy.y[in_shard]).float().mean()) <= 0.5
    assert outcome.accuracy["unlearned_test"] >= outcome.accuracy["original_test"] - TEST_ACCURACY_BOUND
    assert set(member_state(original, 0)) == set(toy.base)


def toy_model(state: dict[str, torch.Tensor]) -> torch.nn.Module:
    from unlearnleak.models import build_model

    model = build_model(SPEC)
    model.load_state_dict(state)
    return model.eval()
