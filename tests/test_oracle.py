"""Black-box oracles: every row counted, the budget checked before answering, answers = softmax of the model."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from unlearnleak.errors import ConfigError, QueryBudgetExceeded
from unlearnleak.models import ModelSpec, Normalized, build_model
from unlearnleak.oracle import FunctionOracle, ModelOracle, Oracle
from unlearnleak.pair import ModelPair

SHAPE = (3, 8, 8)


def uniform_oracle(budget: int | None = None, k: int = 4) -> FunctionOracle:
    return FunctionOracle(lambda x: torch.full((x.shape[0], k), 1.0 / k), num_classes=k, input_shape=SHAPE,
                          budget=budget)


def linear_model(k: int = 4, seed: int = 0) -> Normalized:
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, k))
    return Normalized(net, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), image=True).eval()


def test_counts_rows_not_calls() -> None:
    oracle = uniform_oracle()
    oracle.predict_proba(torch.rand(5, *SHAPE))
    oracle.predict_proba(torch.rand(1, *SHAPE))
    oracle.predict_proba(torch.rand(0, *SHAPE))
    assert oracle.queries == 6
    assert oracle.budget is None and oracle.remaining is None


def test_budget_is_exact_and_checked_before_answering() -> None:
    calls: list[int] = []

    def fn(x: torch.Tensor) -> torch.Tensor:
        calls.append(x.shape[0])
        return torch.full((x.shape[0], 3), 1 / 3)

    oracle = FunctionOracle(fn, num_classes=3, input_shape=SHAPE, budget=10)
    oracle.predict_proba(torch.rand(4, *SHAPE))
    oracle.predict_proba(torch.rand(6, *SHAPE))  # exactly at the budget: answered
    assert oracle.queries == 10 and oracle.remaining == 0
    with pytest.raises(QueryBudgetExceeded) as info:
        oracle.predict_proba(torch.rand(1, *SHAPE))
    message = str(info.value)
    assert "budget 10" in message and "used 10" in message and "requested 1" in message
    assert oracle.queries == 10 and calls == [4, 6]  # nothing answered, nothing counted


def test_request_over_budget_answers_nothing_but_smaller_one_still_fits() -> None:
    oracle = uniform_oracle(budget=5)
    with pytest.raises(QueryBudgetExceeded, match="requested 6"):
        oracle.predict_proba(torch.rand(6, *SHAPE))
    assert oracle.queries == 0
    assert oracle.predict_proba(torch.rand(5, *SHAPE)).shape == (5, 4)
    assert oracle.queries == 5


def test_zero_budget_refuses_everything() -> None:
    oracle = uniform_oracle(budget=0)
    with pytest.raises(QueryBudgetExceeded):
        oracle.predict_proba(torch.rand(1, *SHAPE))


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=7), max_size=12), st.integers(min_value=0, max_value=40))
def test_queries_never_exceed_budget(sizes: list[int], budget: int) -> None:
    oracle = uniform_oracle(budget=budget)
    answered = 0
    for n in sizes:
        try:
            oracle.predict_proba(torch.zeros(n, *SHAPE))
            answered += n
        except QueryBudgetExceeded:
            assert answered + n > budget
    assert oracle.queries == answered <= budget


def test_wrong_shapes_are_config_errors() -> None:
    oracle = uniform_oracle()
    with pytest.raises(ConfigError, match="shape"):
        oracle.predict_proba(torch.rand(2, 3, 8, 9))
    with pytest.raises(ConfigError, match="shape"):
        oracle.predict_proba(torch.rand(*SHAPE))  # a single input without the batch dimension
    bad = FunctionOracle(lambda x: torch.ones(x.shape[0], 5), num_classes=4, input_shape=SHAPE)
    with pytest.raises(ConfigError, match="answered shape"):
        bad.predict_proba(torch.rand(2, *SHAPE))
    with pytest.raises(ConfigError):
        FunctionOracle(lambda x: x, num_classes=1, input_shape=SHAPE)
    with pytest.raises(ConfigError):
        FunctionOracle(lambda x: x, num_classes=3, input_shape=SHAPE, budget=-1)


def test_model_oracle_is_softmax_of_the_model_in_float64() -> None:
    model = linear_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    oracle = ModelOracle(model, num_classes=4, input_shape=SHAPE, batch_size=3)
    x = torch.rand(7, *SHAPE)
    proba = oracle.predict_proba(x)
    assert proba.dtype == torch.float64 and proba.shape == (7, 4) and not proba.requires_grad
    with torch.no_grad():
        expected = torch.softmax(model(x).double(), dim=1)
    torch.testing.assert_close(proba, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(proba.sum(1), torch.ones(7, dtype=torch.float64))
    assert oracle.queries == 7
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert isinstance(oracle, Oracle) and "queries=7" in repr(oracle)


def test_model_oracle_answers_are_reproducible() -> None:
    oracle = ModelOracle(linear_model(), num_classes=4, input_shape=SHAPE)
    x = torch.rand(9, *SHAPE)
    assert torch.equal(oracle.predict_proba(x), oracle.predict_proba(x))


def test_model_oracle_from_pair_serves_each_model() -> None:
    spec = ModelSpec("lenet", SHAPE, 3, (0.5,) * 3, (0.25,) * 3, {"channels": 4})
    torch.manual_seed(0)
    a, b = build_model(spec).state_dict(), build_model(spec).state_dict()
    pair = ModelPair(spec=spec, original=a, unlearned=b)
    x = torch.rand(2, *SHAPE)
    original = ModelOracle.from_pair(pair, "original", budget=2)
    unlearned = ModelOracle.from_pair(pair, "unlearned")
    assert original.num_classes == 3 and original.input_shape == SHAPE
    assert not torch.allclose(original.predict_proba(x), unlearned.predict_proba(x))
    with pytest.raises(QueryBudgetExceeded):
        original.predict_proba(x)
