"""Probe generators: they reach the threshold, their query counts follow the algorithms' arithmetic exactly."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from unlearnleak.attacks.label_inference import (
    PROBE_GENERATORS,
    ProbeSet,
    black_box_generators,
    generate_probes,
    log_odds,
    make_generator,
    margin_loss,
)
from unlearnleak.errors import CheckpointError, ConfigError
from unlearnleak.models import Normalized
from unlearnleak.oracle import FunctionOracle, ModelOracle

SHAPE = (3, 8, 8)
K = 4


def linear_model(scale: float = 3.0, seed: int = 0) -> Normalized:
    """A linear classifier on 8×8 RGB images that can be pushed past p_c = 0.9995 within [0, 1]."""
    torch.manual_seed(seed)
    linear = nn.Linear(3 * 8 * 8, K)
    with torch.no_grad():
        linear.weight.mul_(scale)
    net = nn.Sequential(nn.Flatten(), linear)
    return Normalized(net, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), image=True).eval()


def oracle(model: nn.Module | None = None, budget: int | None = None) -> ModelOracle:
    return ModelOracle(model or linear_model(), num_classes=K, input_shape=SHAPE, budget=budget)


def test_registry_lists_the_four_generators() -> None:
    assert set(PROBE_GENERATORS.names()) >= {"zoo", "nes", "gradient", "public"}
    assert set(black_box_generators()) >= {"zoo", "nes", "public"}
    assert "gradient" not in black_box_generators()
    with pytest.raises(ConfigError, match="unknown probe generator"):
        make_generator("nope")


def test_configs_are_validated_and_printed() -> None:
    with pytest.raises(ConfigError, match="nb_parallel"):
        make_generator("zoo", nb_parallel=0)
    with pytest.raises(ConfigError, match="extra"):
        make_generator("nes", not_a_field=1)
    with pytest.raises(ConfigError, match="lr_confident"):
        make_generator("zoo", lr=0.01, lr_confident=0.02)
    text = repr(make_generator("zoo"))
    assert text.startswith("ZooProbes(") and "nb_parallel=1024" in text and "h=0.0001" in text


def test_zoo_reaches_threshold_and_queries_match_arithmetic() -> None:
    o = oracle()
    n = 16
    probes = generate_probes("zoo", o, K, 1, SHAPE, seed=0, classes=[0, 3], nb_parallel=n)
    assert probes.accepted.all() and (probes.confidence >= 0.9995).all()
    assert probes.predicted.tolist() == probes.target.tolist() == [0, 3]
    steps, inits = probes.params["steps"], probes.params["inits"]
    # a start costs 1 query, an iteration 2·nb_parallel symmetric differences + 1 evaluation
    assert probes.queries.tolist() == [i + s * (2 * n + 1) for s, i in zip(steps, inits, strict=True)]
    # θ's answers for the finished probes are recorded with one more query each; the start pool costs one
    # query per candidate (starts.py)
    pool = probes.params["pool_size"]
    assert probes.total_queries == int(probes.queries.sum()) + len(probes) + pool == o.queries
    assert probes.queries_per_accepted == probes.total_queries / 2
    assert (probes.x >= 0).all() and (probes.x <= 1).all()


def test_zoo_rejects_more_coordinates_than_the_input_has() -> None:
    with pytest.raises(ConfigError, match="exceeds"):
        generate_probes("zoo", oracle(), K, 1, SHAPE, classes=[0])  # 1024 > 192 coordinates


def test_nes_reaches_threshold_with_fewer_queries_than_zoo() -> None:
    o = oracle()
    nes = generate_probes("nes", o, K, 2, SHAPE, seed=0, tiles=(2, 4), directions=10)
    assert nes.accepted.all() and (nes.confidence >= 0.9995).all()
    steps, inits = nes.params["steps"], nes.params["inits"]
    # a start costs 1 query, a step 2·directions antithetic evaluations + one per line-search candidate
    assert nes.queries.tolist() == [i + s * (2 * 10 + 3) for s, i in zip(steps, inits, strict=True)]
    assert nes.total_queries == int(nes.queries.sum()) + len(nes) + nes.params["pool_size"] == o.queries
    zoo = generate_probes("zoo", oracle(), K, 1, SHAPE, seed=0, classes=[0, 1], nb_parallel=16)
    assert nes.queries_per_accepted < zoo.queries_per_accepted


def test_probes_are_deterministic_and_independent_of_the_other_classes() -> None:
    a = generate_probes("nes", oracle(), K, 2, SHAPE, seed=7, tiles=(2, 4))
    b = generate_probes("nes", oracle(), K, 2, SHAPE, seed=7, tiles=(2, 4), classes=[2])
    assert torch.equal(a.x[a.target == 2], b.x)
    c = generate_probes("nes", oracle(), K, 2, SHAPE, seed=8, tiles=(2, 4), classes=[2])
    assert not torch.equal(b.x, c.x)


def test_round_robin_order_and_budget_stop_keep_classes_even() -> None:
    # a budget for a few probes over 4 classes (the start pool takes 200 of it)
    probes = generate_probes("nes", oracle(budget=250), K, 3, SHAPE, seed=0, tiles=(2, 4), population=1)
    assert 0 < len(probes) < 12 and "query budget" in probes.notes
    counts = torch.bincount(probes.target, minlength=K)
    assert int(counts.max() - counts.min()) <= 1


def test_time_limit_zero_makes_no_probe() -> None:
    with pytest.raises(ConfigError, match="no probe"):
        generate_probes("zoo", oracle(), K, 1, SHAPE, nb_parallel=8, max_seconds=0.0)


def test_gradient_probes_are_white_box_only() -> None:
    model = linear_model()
    probes = generate_probes("gradient", model, K, 2, SHAPE, seed=0)
    assert probes.accepted.all() and not probes.black_box and (probes.confidence >= 0.9995).all()
    assert probes.total_queries == int(probes.queries.sum()) + len(probes) + probes.params["pool_size"]
    with pytest.raises(ConfigError, match="white-box"):
        generate_probes("gradient", oracle(model), K, 1, SHAPE)


def test_public_probes_are_confident_real_samples() -> None:
    model = linear_model()
    pool = torch.rand(400, *SHAPE)
    labels = ModelOracle(model, num_classes=K, input_shape=SHAPE).predict_proba(pool).argmax(1)
    o = oracle(model)
    probes = generate_probes("public", o, K, 3, SHAPE, seed=0, public=_Data(pool, labels), min_confidence=0.6,
                             chunk=5)
    assert len(probes) == 3 * K and probes.target.tolist() == [0, 1, 2, 3] * 3
    for row, c in zip(probes.x, probes.target, strict=True):
        assert any(torch.equal(row, p) for p in pool[labels == c])
    ok = probes.accepted
    assert (probes.confidence[ok] >= 0.6).all()
    assert probes.total_queries == o.queries == int(probes.queries.sum()) + len(probes)
    assert probes.total_queries % 5 == 0 or probes.total_queries < 400 + len(probes)
    with pytest.raises(ConfigError, match="public"):
        generate_probes("public", oracle(model), K, 1, SHAPE)


def test_public_falls_back_to_most_confident_when_none_passes() -> None:
    model = linear_model(scale=0.01)  # nearly uniform answers: nothing reaches 0.99
    pool = torch.rand(60, *SHAPE)
    labels = ModelOracle(model, num_classes=K, input_shape=SHAPE).predict_proba(pool).argmax(1)
    probes = generate_probes("public", oracle(model), K, 2, SHAPE, public=_Data(pool, labels),
                             min_confidence=0.99, classes=[int(labels[0])])
    assert len(probes) == 2 and not probes.accepted.any()


def test_probe_set_roundtrip(tmp_path: pytest.TempPathFactory) -> None:
    probes = generate_probes("nes", oracle(), K, 1, SHAPE, seed=0, tiles=(2, 4))
    folder = probes.save(tmp_path / "probes")  # type: ignore[operator]
    loaded = ProbeSet.load(folder)
    for name in ("x", "target", "original_proba", "queries", "accepted"):
        assert torch.equal(getattr(loaded, name), getattr(probes, name)), name
    assert loaded.generator == "nes" and loaded.total_queries == probes.total_queries
    assert loaded.params["tiles"] == [2, 4] and loaded.per_class() == [1, 1, 1, 1]
    with pytest.raises(CheckpointError, match="missing"):
        ProbeSet.load(tmp_path / "nowhere")  # type: ignore[operator]


def test_margin_loss_is_the_logit_margin() -> None:
    logits = torch.tensor([[2.0, 0.5, -1.0], [0.0, 3.0, 1.0]], dtype=torch.float64)
    proba = torch.softmax(logits, 1)
    torch.testing.assert_close(margin_loss(proba, 0), torch.tensor([-1.5, 3.0], dtype=torch.float64))


def test_log_odds_is_that_of_the_target_class() -> None:
    proba = torch.tensor([[0.9995, 0.0003, 0.0002], [0.2, 0.5, 0.3]], dtype=torch.float64)
    expected = torch.tensor([0.0005 / 0.9995, 0.8 / 0.2], dtype=torch.float64).log()
    torch.testing.assert_close(log_odds(proba, 0), expected)


def test_black_box_generators_accept_function_oracles() -> None:
    model = linear_model()
    fo = FunctionOracle(lambda x: torch.softmax(model(x).double(), 1).detach(), num_classes=K, input_shape=SHAPE)
    probes = generate_probes("nes", fo, K, 1, SHAPE, tiles=(2, 4), classes=[1])
    assert probes.accepted.all() and fo.queries == probes.total_queries


class _Data:
    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y


def test_time_limit_keeps_the_unfinished_zoo_probe(monkeypatch: pytest.MonkeyPatch) -> None:
    """A fake clock that advances one second per reading: the run is cut inside the first probe."""
    import types

    from unlearnleak.attacks.label_inference import probes as probes_module

    ticks = iter(range(10_000))
    monkeypatch.setattr(probes_module, "time", types.SimpleNamespace(perf_counter=lambda: float(next(ticks))))
    o = oracle(linear_model(scale=0.3))  # hard enough not to finish within a few iterations
    made = generate_probes("zoo", o, K, 2, SHAPE, seed=0, nb_parallel=8, max_seconds=6)
    assert len(made) == 1 and not made.accepted.any()
    assert "cut short unfinished" in made.notes and "1 of 8" in made.notes
    steps, inits = made.params["steps"], made.params["inits"]
    assert made.queries.tolist() == [inits[0] + steps[0] * (2 * 8 + 1)] and steps[0] > 0
    assert made.total_queries == o.queries == int(made.queries.sum()) + 1 + made.params["pool_size"]


def test_without_budget_for_the_final_request_answers_seen_are_kept() -> None:
    first = generate_probes("nes", oracle(), K, 1, SHAPE, seed=3, tiles=(2, 4), classes=[0])
    tight = oracle(budget=first.total_queries - 1)  # everything but the final re-query fits
    again = generate_probes("nes", tight, K, 1, SHAPE, seed=3, tiles=(2, 4), classes=[0])
    assert "seen during generation" in again.notes
    torch.testing.assert_close(again.original_proba, first.original_proba, rtol=0, atol=1e-9)
    assert again.total_queries == first.total_queries - 1 and tight.remaining == 0


def test_zoo_coordinate_adam_is_arts_per_coordinate_adam() -> None:
    """torch.optim.Adam over 0-d views: per-coordinate step counts, untouched coordinates stay put."""
    from unlearnleak.attacks.label_inference.zeroth_order import CoordinateAdam

    d, b1, b2, eps, lr = 8, 0.9, 0.999, 1e-8, 0.1
    g = torch.Generator().manual_seed(0)
    steps = [(torch.randperm(d, generator=g)[:3], torch.randn(3, generator=g, dtype=torch.float64))
             for _ in range(6)]
    flat = torch.zeros(d, dtype=torch.float64)
    adam = CoordinateAdam(flat, lr=lr, betas=(b1, b2), eps=eps)
    ref, m, v, t = (torch.zeros(d, dtype=torch.float64) for _ in range(4))
    for idx, grad in steps:  # ART's ZooAttack update, written out
        adam.step(idx, grad)
        t[idx] += 1
        m[idx] = b1 * m[idx] + (1 - b1) * grad
        v[idx] = b2 * v[idx] + (1 - b2) * grad ** 2
        corr = torch.sqrt(1 - b2 ** t[idx]) / (1 - b1 ** t[idx])
        ref[idx] -= lr * corr * m[idx] / (torch.sqrt(v[idx]) + eps)
    touched = torch.zeros(d, dtype=torch.bool)
    for idx, _ in steps:
        touched[idx] = True
    assert torch.allclose(flat, ref, atol=1e-6) and bool((flat[~touched] == 0).all())
    assert bool((flat[touched] != 0).all())


def test_zoo_population_batches_the_queries_of_several_probes_without_changing_them() -> None:
    """population=4 sends every step's requests of 4 probes in one call: same probes, same counts."""
    weight = torch.randn(K, 3 * 8 * 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 0.5
    calls: list[int] = []

    def answer(x: torch.Tensor) -> torch.Tensor:  # row by row in float64: independent of the batch
        calls.append(x.shape[0])
        return torch.softmax(x.double().flatten(1) @ weight.T, dim=1)

    made = {}
    for population in (1, 4):
        calls.clear()
        o = FunctionOracle(answer, num_classes=K, input_shape=SHAPE)
        made[population] = (generate_probes("zoo", o, K, 1, SHAPE, seed=0, nb_parallel=16, threshold=0.999,
                                            population=population, start="noise"), len(calls))
    (one, calls_one), (four, calls_four) = made[1], made[4]
    assert torch.equal(one.x, four.x) and one.queries.tolist() == four.queries.tolist()
    assert one.total_queries == four.total_queries and one.accepted.tolist() == four.accepted.tolist()
    assert calls_four < calls_one / 2  # the same rows in fewer, larger requests
