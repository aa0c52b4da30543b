"""The zoo's extra CNNs: registered, built from a spec like every model, and the structure their names promise."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from unlearnleak.errors import ConfigError
from unlearnleak.models import MODELS, ModelSpec, build_model

CIFAR = ((3, 32, 32), 10, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))


@pytest.mark.parametrize(("name", "shape"), [("cnn_nobn", (3, 32, 32)), ("cnn_bn_gelu", (3, 28, 28))])
def test_zoo_models_build_from_a_spec_and_train(name: str, shape: tuple[int, int, int]) -> None:
    assert name in MODELS
    model = build_model(ModelSpec(name, shape, 5, CIFAR[2], CIFAR[3], {"width": 4}))
    x = torch.rand(3, *shape)
    out = model(x)
    assert out.shape == (3, 5)
    torch.nn.functional.cross_entropy(out, torch.tensor([0, 1, 2])).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_no_bn_cnn_has_no_normalisation_and_the_bn_cnn_a_tanh_head() -> None:
    plain = build_model(ModelSpec("cnn_nobn", *CIFAR, {}))
    assert not any(isinstance(m, nn.BatchNorm2d) for m in plain.modules())
    assert any(isinstance(m, nn.LeakyReLU) for m in plain.modules())
    gelu = build_model(ModelSpec("cnn_bn_gelu", *CIFAR, {"hidden": 32}))
    kinds = [type(m) for m in gelu.modules()]
    assert nn.BatchNorm2d in kinds and nn.GELU in kinds and nn.Tanh in kinds


def test_zoo_models_need_images() -> None:
    with pytest.raises(ConfigError, match="needs image input"):
        build_model(ModelSpec("cnn_nobn", (30,), 2, (0.0,), (1.0,), {}))
