"""Method parameters are validated when a config is loaded; SISA touches only the affected shard."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError
from unlearning_toy import SPEC, Toy

from unlearnleak.errors import ConfigError
from unlearnleak.experiments.config import load_config
from unlearnleak.scenario import ScenarioConfig, UnlearningConfig
from unlearnleak.unlearning import CostMeter, UnlearningContext, unlearn
from unlearnleak.unlearning.sisa import (
    SisaParams,
    affected_shards,
    layout,
    member_state,
    train_shard,
    train_sisa,
)


def test_a_typo_in_method_params_fails_at_config_load() -> None:
    with pytest.raises(ConfigError, match=r"first_order.*tua.*its parameters: tau"):
        load_config(ScenarioConfig, None, ["unlearning.method=first_order", "unlearning.params.tua=0.1"])
    with pytest.raises(ValidationError, match="damping"):
        UnlearningConfig(method="second_order", params={"damping": -1})
    with pytest.raises(ValidationError, match="takes|exact"):
        UnlearningConfig(method="exact", params={"lr": 1})
    assert UnlearningConfig(method="neggrad_plus", params={"alpha": 0.5}).params == {"alpha": 0.5}


def test_unknown_method_is_refused_and_sisa_is_a_scenario_method() -> None:
    with pytest.raises(ValidationError, match="unknown unlearning method 'forget_it'"):
        UnlearningConfig(method="forget_it")
    assert UnlearningConfig(method="sisa", params={"shards": 2}).params == {"shards": 2}



@pytest.fixture(scope="module")
def sisa_setup(toy: Toy) -> tuple[SisaParams, UnlearningContext]:
    params = SisaParams(shards=4, slices=3, epochs_per_slice=2, lr=0.05, batch_size=8)
    spec, original, base = train_sisa(SPEC, toy.base, toy.x, toy.y, params, seed=5)
    mask = torch.zeros(64, dtype=torch.bool)
    lay = layout(64, params, 5)
    row = int(torch.nonzero((lay.shard_of == 2) & (lay.slice_of == 1))[0])  # one row in shard 2, slice 1
    mask[row] = True
    ctx = UnlearningContext(spec, original=original, base=base, x_train=toy.x, y_train=toy.y, forget_mask=mask,
                            finetune=toy.context().finetune, params=params.model_dump(), seed=5,
                            meter=CostMeter())
    return params, ctx


def test_sisa_unlearning_touches_only_the_affected_shard(sisa_setup: tuple[SisaParams, UnlearningContext]) -> None:
    params, ctx = sisa_setup
    theta_u = unlearn("sisa", ctx)
    assert affected_shards(ctx, params) == [2]
    for s in range(params.shards):
        before, after = member_state(ctx.original, s), member_state(theta_u, s)
        same = all(torch.equal(before[k], after[k]) for k in before)
        assert same == (s != 2), s
    # only the slices from the first dirty one (1 of 0..2) were retrained: 2 slices × 2 epochs of shard 2's rows
    lay = layout(64, params, 5)
    rows = [int(((lay.shard_of == 2) & (lay.slice_of <= r) & ~ctx.forget_mask).sum()) for r in (1, 2)]
    assert ctx.meter.sample_gradients == params.epochs_per_slice * sum(rows)


def test_sisa_unlearning_equals_retraining_the_shard_without_the_row(
        sisa_setup: tuple[SisaParams, UnlearningContext]) -> None:
    """Resuming from the clean checkpoint is exact: the same as training shard 2 from θ0 without D_u."""
    params, ctx = sisa_setup
    theta_u = unlearn("sisa", ctx)
    lay = layout(64, params, 5)
    member = SPEC
    scratch = train_shard(member, member_state(ctx.base, 2), ctx.x_train, ctx.y_train, lay, 2, params, seed=5,
                          device="cpu", exclude=ctx.forget_mask)[-1]
    after = member_state(theta_u, 2)
    assert all(torch.equal(after[k], scratch[k]) for k in scratch)


def test_sisa_ensemble_votes(sisa_setup: tuple[SisaParams, UnlearningContext]) -> None:
    """Soft vote = mean of the members' softmax; hard vote = share of their argmax."""
    from unlearnleak.models import build_model

    params, ctx = sisa_setup
    model = build_model(ctx.spec)
    model.load_state_dict(ctx.original)
    x = ctx.x_train[:5]
    members = []
    for s in range(params.shards):
        m = build_model(SPEC)
        m.load_state_dict(member_state(ctx.original, s))
        members.append(m(x).softmax(-1))
    torch.testing.assert_close(model(x).softmax(-1), torch.stack(members).mean(0), rtol=1e-5, atol=1e-6)
    hard_spec = type(ctx.spec)(**{**ctx.spec.to_dict(), "input_shape": ctx.spec.input_shape,
                                  "mean": ctx.spec.mean, "std": ctx.spec.std,
                                  "kwargs": {**ctx.spec.kwargs, "vote": "hard"}})
    hard = build_model(hard_spec)
    hard.load_state_dict(ctx.original)
    votes = torch.nn.functional.one_hot(torch.stack(members).argmax(-1), 4).float().mean(0)
    torch.testing.assert_close(hard(x).softmax(-1), votes / votes.sum(-1, keepdim=True), rtol=1e-4, atol=1e-5)


def test_sisa_refuses_mismatched_parameters(sisa_setup: tuple[SisaParams, UnlearningContext], toy: Toy) -> None:
    params, ctx = sisa_setup
    from dataclasses import replace

    with pytest.raises(ConfigError, match="shards"):
        unlearn("sisa", replace(ctx, params={**params.model_dump(), "shards": 3}))
    with pytest.raises(ConfigError, match="sisa_ensemble"):
        unlearn("sisa", toy.context(params.model_dump()))
    with pytest.raises(ConfigError, match="at least shards × slices"):
        layout(5, params, 0)
