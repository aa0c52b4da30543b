"""∇* from a ModelPair: its sign, its equality with the true forget-set gradient, and what each mode needs."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from unlearnleak.attacks.feature_recovery import target_gradient
from unlearnleak.attacks.feature_recovery.target_gradient import resolve_mode
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
