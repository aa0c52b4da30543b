"""Defenses: noise has its stated scale, pruning reaches its sparsity, fine-tuning moves the weights, and each
is the identity at strength 0 (issue 10)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from unlearnleak.defenses import DEFENSES, DefenseContext, defend
from unlearnleak.errors import ConfigError
from unlearnleak.models import ModelSpec, build_model
from unlearnleak.unlearning import state_of

SPEC = ModelSpec("lenet", (3, 16, 16), 4, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), {"channels": 8})


@pytest.fixture(scope="module")
def state() -> dict[str, torch.Tensor]:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return state_of(build_model(SPEC))


@pytest.fixture(scope="module")
def context() -> DefenseContext:
    g = torch.Generator().manual_seed(0)
    return DefenseContext(SPEC, retain_x=torch.rand(32, 3, 16, 16, generator=g),
                          retain_y=torch.randint(0, 4, (32,), generator=g), seed=3)


def _weights(state: dict[str, torch.Tensor]) -> list[str]:
    return [n for n, _ in build_model(SPEC).named_parameters()]


def _layers(state: dict[str, torch.Tensor]) -> list[str]:
    model = build_model(SPEC)
    return [f"{name}.weight" for name, m in model.named_modules() if isinstance(m, nn.Conv2d | nn.Linear)]


@pytest.mark.parametrize(("name", "params"), [("noise", {"sigma": 0.0}), ("noise", {"sigma": 0, "relative": False}),
                                              ("prune", {"sparsity": 0.0}), ("finetune", {"epochs": 0})])
def test_each_defense_is_the_identity_at_strength_zero(state: dict, context: DefenseContext, name: str,
                                                       params: dict) -> None:
    released = defend(name, state, context, params)
    assert released.keys() == state.keys()
    assert all(torch.equal(released[k], state[k]) for k in state)


def test_absolute_noise_has_the_stated_standard_deviation(state: dict, context: DefenseContext) -> None:
    released = defend("noise", state, context, {"sigma": 0.05, "relative": False})
    diffs = torch.cat([(released[k] - state[k]).flatten() for k in _weights(state)])
    assert diffs.numel() > 3000
    assert float(diffs.std()) == pytest.approx(0.05, rel=0.05)
    assert abs(float(diffs.mean())) < 0.005
    assert torch.equal(released["mean"], state["mean"]) and torch.equal(released["std"], state["std"])


def test_relative_noise_scales_with_each_tensor_norm(state: dict, context: DefenseContext) -> None:
    sigma = 0.1
    released = defend("noise", state, context, {"sigma": sigma, "relative": True})
    for name in _weights(state):
        w = state[name]
        if w.numel() < 500:  # small tensors (biases) only get the scale in expectation
            continue
        ratio = float((released[name] - w).norm() / w.norm())
        assert ratio == pytest.approx(sigma, rel=0.1), name


def test_noise_is_seeded(state: dict, context: DefenseContext) -> None:
    a = defend("noise", state, context, {"sigma": 0.1})
    b = defend("noise", state, context, {"sigma": 0.1})
    c = defend("noise", state, DefenseContext(SPEC, seed=4), {"sigma": 0.1})
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


@pytest.mark.parametrize("sparsity", [0.3, 0.8])
def test_global_pruning_reaches_the_stated_sparsity(state: dict, context: DefenseContext, sparsity: float) -> None:
    released = defend("prune", state, context, {"sparsity": sparsity, "scope": "global"})
    layers = _layers(state)
    total = sum(state[k].numel() for k in layers)
    zeros = sum(int((released[k] == 0).sum()) for k in layers)
    assert zeros == round(sparsity * total)
    # global threshold: every surviving weight is at least as large as every pruned one
    kept = torch.cat([released[k][released[k] != 0].abs() for k in layers])
    pruned = torch.cat([state[k][released[k] == 0].abs() for k in layers])
    assert float(kept.min()) >= float(pruned.max())
    assert all(torch.equal(released[k], state[k]) for k in state if k not in layers)  # biases and buffers kept


def test_per_layer_pruning_reaches_the_sparsity_in_every_layer(state: dict, context: DefenseContext) -> None:
    released = defend("prune", state, context, {"sparsity": 0.5, "scope": "layer"})
    for k in _layers(state):
        assert int((released[k] == 0).sum()) == round(0.5 * state[k].numel()), k
        survivors = released[k] != 0
        assert torch.equal(released[k][survivors], state[k][survivors])


def test_pruning_is_permanent_and_loads_into_the_plain_model(state: dict, context: DefenseContext) -> None:
    released = defend("prune", state, context, {"sparsity": 0.5})
    assert not any(k.endswith(("_orig", "_mask")) for k in released)
    build_model(SPEC).load_state_dict(released)  # strict


def test_finetuning_moves_the_weights_and_is_seeded(state: dict, context: DefenseContext) -> None:
    a = defend("finetune", state, context, {"epochs": 1})
    b = defend("finetune", state, context, {"epochs": 1})
    moved = [k for k in _weights(state) if not torch.equal(a[k], state[k])]
    assert set(moved) == set(_weights(state))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_finetuning_needs_retained_data(state: dict) -> None:
    with pytest.raises(ConfigError, match="retained data"):
        defend("finetune", state, DefenseContext(SPEC), {"epochs": 1})


def test_defense_parameters_are_validated(state: dict, context: DefenseContext) -> None:
    with pytest.raises(ConfigError, match="'noise'.*sigmaa"):
        defend("noise", state, context, {"sigmaa": 0.1})
    with pytest.raises(ConfigError, match="sparsity"):
        defend("prune", state, context, {"sparsity": 1.5})
    with pytest.raises(ConfigError, match="unknown defense 'blur'"):
        defend("blur", state, context, {})
    assert DEFENSES.names() == ["finetune", "noise", "prune"]


def test_the_input_state_is_not_modified(state: dict, context: DefenseContext) -> None:
    before = {k: v.clone() for k, v in state.items()}
    defend("noise", state, context, {"sigma": 0.5})
    defend("prune", state, context, {"sparsity": 0.5})
    assert all(torch.equal(before[k], state[k]) for k in state)
