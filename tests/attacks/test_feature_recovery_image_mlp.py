"""An image MLP gives the deleted image away in closed form (first layer Linear on the flattened image): the
default lets that closed form compete with the inversion on the attacker's own score, the gradient cost."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError
from torch.nn import functional as F

from unlearnleak.attacks.feature_recovery import evaluate_reconstruction, recover
from unlearnleak.attacks.feature_recovery.config import FeatureRecoveryConfig
from unlearnleak.attacks.feature_recovery.facade import FeatureRecovery
from unlearnleak.knowledge import ServerKnowledge
from unlearnleak.models import ModelSpec, build_model
from unlearnleak.pair import ModelPair
from unlearnleak.unlearning import state_of

MEAN, STD = (0.49, 0.48, 0.45), (0.25, 0.24, 0.26)


def _pair(spec: ModelSpec) -> tuple[ModelPair, torch.Tensor, torch.Tensor]:
    """θ_u = θ + τ∇ℓ(x*, y*) (one gradient-ascent step on a smooth image), and the image."""
    torch.manual_seed(0)
    model = build_model(spec).eval()
    ramp = torch.linspace(0.1, 0.9, 8)
    x = torch.stack([ramp.outer(ramp), ramp.flip(0).outer(ramp), ramp.outer(ramp.flip(0))]).unsqueeze(0)
    y = torch.tensor([2])
    grads = torch.autograd.grad(F.cross_entropy(model(x), y), list(model.parameters()))
    original = state_of(model)
    unlearned = dict(original)
    for (name, p), g in zip(model.named_parameters(), grads, strict=True):
        unlearned[name] = (p + 1e-3 * g).detach()
    return ModelPair(spec, original, unlearned), x, y


def test_an_image_mlp_gives_its_image_away_in_closed_form() -> None:
    pair, x, y = _pair(ModelSpec("mlp", (3, 8, 8), 5, MEAN, STD, {"hidden": [32]}))
    knowledge = ServerKnowledge(n_forget=1, unlearning="approximate")
    rec = recover(pair, knowledge, iterations=20)
    assert rec.method == "analytic" and rec.kind == "image" and rec.x.shape == (1, 3, 8, 8)
    scored = evaluate_reconstruction(rec, x, y)
    assert scored["samples"][0]["psnr"] > 60  # exact up to float rounding
    assert scored["label_accuracy"] == 1.0
    forced = recover(pair, knowledge, iterations=20, method="inversion")  # 20 steps cannot match it
    assert forced.method == "inversion"
    assert evaluate_reconstruction(forced, x, y)["samples"][0]["psnr"] < scored["samples"][0]["psnr"]
    # the same choice through the attack's one config (an experiment's `overrides: {method: inversion}`)
    config = FeatureRecoveryConfig(iterations=20, overrides={"method": "inversion"})
    assert FeatureRecovery(config).attack(pair, knowledge).method == "inversion"
    with pytest.raises(ValidationError, match="method: choose one of auto, analytic, inversion"):
        FeatureRecoveryConfig(overrides={"method": "closed"})


def test_a_convolutional_net_is_inverted() -> None:
    pair, _, _ = _pair(ModelSpec("lenet", (3, 8, 8), 5, MEAN, STD, {}))
    rec = recover(pair, ServerKnowledge(n_forget=1, unlearning="approximate"), iterations=5)
    assert rec.method == "inversion"
