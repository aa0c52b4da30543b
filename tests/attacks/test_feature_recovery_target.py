"""∇* from a ModelPair: its sign, its equality with the true forget-set gradient, and what each mode needs."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch.nn import functional as F

from unlearnleak.attacks.feature_recovery import target_gradient
from unlearnleak.attacks.feature_recovery.target_gradient import (
    BatchScheduleWarning,
    resolve_mode,
    schedule_coefficients,
)
from unlearnleak.errors import CheckpointError, ConfigError
from unlearnleak.knowledge import ServerKnowledge
from unlearnleak.models import ModelSpec, build_model
from unlearnleak.pair import ModelPair
from unlearnleak.scenario import finetune
from unlearnleak.training import TrainConfig
from unlearnleak.unlearning import UnlearningContext, state_of, unlearn

SPEC = ModelSpec("lenet", (3, 16, 16), 10, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), {})
FT = TrainConfig(lr=1e-3, batch_size=128, freeze_bn=True)  # the paper's fine-tune: one full-batch step


@pytest.fixture(scope="module")
def setting() -> dict[str, torch.Tensor | dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(16, 3, 16, 16, generator=g)
    y = torch.randint(0, 10, (16,), generator=g)
    mask = torch.zeros(16, dtype=torch.bool)
    mask[[2, 7, 9]] = True
    torch.manual_seed(0)
    base = state_of(build_model(SPEC))
    original = finetune(SPEC, base, x, y, FT, seed=0)
    return {"x": x, "y": y, "mask": mask, "base": base, "original": original}


def _unlearned(s: dict, method: str, params: dict | None = None) -> dict[str, torch.Tensor]:
    ctx = UnlearningContext(spec=SPEC, original=s["original"], base=s["base"], x_train=s["x"], y_train=s["y"],
                            forget_mask=s["mask"], finetune=FT, params=params or {})
    return unlearn(method, ctx)


def _true_gradient(state: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    model = build_model(SPEC)
    model.load_state_dict(state)
    model.eval()
    loss = F.cross_entropy(model(x), y)
    return torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, list(model.parameters()))]).double()


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(a @ b / (a.norm() * b.norm()))


def test_gradient_ascent_target_is_plus_the_forget_gradient(setting: dict) -> None:
    unlearned = _unlearned(setting, "gradient_ascent", {"lr": 1e-3})
    pair = ModelPair(SPEC, setting["original"], unlearned)
    target = target_gradient(pair, ServerKnowledge(base=setting["base"], n_train=16, n_forget=3), "approximate")
    truth = _true_gradient(setting["original"], setting["x"][setting["mask"]], setting["y"][setting["mask"]])
    assert target.invert_on == "original"
    assert _cos(target.flat(), truth) > 0.9999
    # The paper's Eq. 2 writes θ − θ_u: exactly the opposite direction.
    paper = torch.cat([(setting["original"][n] - unlearned[n]).reshape(-1).double() for n in target.names])
    assert _cos(paper, truth) < -0.9999


def test_exact_target_is_the_forget_gradient_at_the_base(setting: dict) -> None:
    unlearned = _unlearned(setting, "exact")
    pair = ModelPair(SPEC, setting["original"], unlearned)
    knowledge = ServerKnowledge(base=setting["base"], n_train=16, n_forget=3)
    target = target_gradient(pair, knowledge, "exact")
    truth = _true_gradient(setting["base"], setting["x"][setting["mask"]], setting["y"][setting["mask"]])
    assert target.invert_on == "base"
    assert _cos(target.flat(), truth) > 0.9999
    # Without θ0 the plain difference still points the same way, but only roughly.
    plain = target_gradient(pair, knowledge.without("base"), "auto")
    assert plain.mode == "approximate"
    assert 0.5 < _cos(plain.flat(), truth) < 0.9999


def test_modes_need_their_knowledge(setting: dict) -> None:
    pair = ModelPair(SPEC, setting["original"], _unlearned(setting, "exact"))
    knowledge = ServerKnowledge(base=setting["base"], n_train=16, n_forget=3)
    assert resolve_mode(knowledge, "auto") == "exact"
    assert resolve_mode(knowledge.without("base"), "auto") == "approximate"
    assert resolve_mode(None, "auto") == "approximate"
    with pytest.raises(ConfigError, match="θ0, N and k"):
        target_gradient(pair, knowledge.without("n_train"), "exact")
    declared = ServerKnowledge(base=setting["base"], n_train=16, n_forget=3, unlearning="approximate")
    assert resolve_mode(declared, "auto") == "approximate"
    described = target_gradient(pair, knowledge, "exact").describe()
    assert described["knowledge"].startswith("θ, θ_u, the base model θ0")
    assert described["knowledge_used"] == ["base", "n_train", "n_forget"]
    assert target_gradient(pair, declared).used == ("unlearning",)


def test_identical_models_have_nothing_to_invert(setting: dict) -> None:
    pair = ModelPair(SPEC, setting["original"], dict(setting["original"]))
    with pytest.raises(CheckpointError, match="no difference — nothing to attack"):
        target_gradient(pair)


def _exact_pair(n: int, k: int, batch_size: int,
                epochs: int = 1) -> tuple[ModelPair, ServerKnowledge, torch.Tensor]:
    """A LeNet pair retrained without k of n random rows under mini-batches, and the true D_u gradient at θ0."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, 3, 16, 16, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    mask = torch.zeros(n, dtype=torch.bool)
    mask[torch.randperm(n, generator=g)[:k]] = True
    torch.manual_seed(0)
    base = state_of(build_model(SPEC))
    ft = TrainConfig(lr=1e-3, batch_size=batch_size, epochs=epochs, freeze_bn=True)
    original = finetune(SPEC, base, x, y, ft, seed=0)
    ctx = UnlearningContext(spec=SPEC, original=original, base=base, x_train=x, y_train=y, forget_mask=mask,
                            finetune=ft)
    pair = ModelPair(SPEC, original, unlearn("exact", ctx))
    return pair, ServerKnowledge(base=base, n_train=n, n_forget=k), _true_gradient(base, x[mask], y[mask])


def test_one_batch_schedule_is_the_n_k_formula() -> None:
    assert schedule_coefficients(16, 3, 16) == pytest.approx((13.0, 16.0), rel=1e-12)
    pair, knowledge, truth = _exact_pair(16, 2, 16)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # N ≤ batch size: nothing to warn about
        target = target_gradient(pair, knowledge, "exact", batch_size=16)
    assert target.warnings == () and target.schedule is None
    assert _cos(target.flat(), truth) > 0.9999


def test_more_rows_than_a_batch_warns_in_the_result_and_on_the_console() -> None:
    pair, knowledge, _ = _exact_pair(32, 1, 8)
    with pytest.warns(BatchScheduleWarning, match="N = 32 exceeds the fine-tune batch size 8"):
        target = target_gradient(pair, knowledge, "exact", batch_size=8, use_schedule=False)
    assert target.schedule is None and len(target.warnings) == 1
    assert "exceeds the fine-tune batch size" in target.describe()["warnings"][0]


def test_schedule_estimator_beats_the_n_k_formula_when_batches_are_rechunked() -> None:
    pair, knowledge, truth = _exact_pair(32, 4, 8)
    with pytest.warns(BatchScheduleWarning):
        n_k = target_gradient(pair, knowledge, "exact", batch_size=8, use_schedule=False)
        scheduled = target_gradient(pair, knowledge, "exact", batch_size=8)
    assert scheduled.schedule is not None and scheduled.schedule["batch_size"] == 8
    assert scheduled.describe()["knowledge"].endswith("(batch size, epochs; inverted on θ0)")
    cos_n_k, cos_schedule = _cos(n_k.flat(), truth), _cos(scheduled.flat(), truth)
    assert cos_schedule > cos_n_k + 0.01, (cos_schedule, cos_n_k)
    # Its scale is that of η·Σ_{D_u}∇ℓ, as the one-batch formula's (within the schedule's randomness).
    assert 0.5 < float(scheduled.flat().norm()) / (1e-3 * 4 * float(truth.norm())) < 2.0


def test_schedule_coefficients_reject_an_impossible_schedule() -> None:
    with pytest.raises(ConfigError, match="0 < k < N"):
        schedule_coefficients(8, 8, 4)
    with pytest.raises(ConfigError, match="batch_size and epochs must be ≥ 1"):
        schedule_coefficients(8, 1, 0)
