"""Model registry, user models by import path, and ModelPair save/load."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from unlearnleak.errors import CheckpointError, ConfigError
from unlearnleak.models import MODELS, ModelSpec, build_model
from unlearnleak.pair import ModelPair


def _spec(name: str, shape: tuple[int, ...], **kwargs: object) -> ModelSpec:
    c = shape[0]
    return ModelSpec(name, shape, 10, (0.5,) * c, (0.25,) * c, kwargs)


@pytest.mark.parametrize(("name", "shape", "kwargs"), [
    ("convnet", (3, 32, 32), {"width": 8}), ("convnet", (3, 96, 96), {"width": 4}),
    ("convnet", (1, 28, 28), {"width": 4}), ("resnet18", (3, 32, 32), {"width": 4}),
    ("lenet", (3, 28, 28), {}), ("mlp", (30,), {"hidden": [16]}),
])
def test_models_accept_their_input_shapes(name: str, shape: tuple[int, ...], kwargs: dict) -> None:
    model = build_model(_spec(name, shape, **kwargs))
    assert model(torch.rand(2, *shape)).shape == (2, 10)


def test_convnet_has_the_papers_eight_convolutions_and_2304_features_at_width_64() -> None:
    model = build_model(_spec("convnet", (3, 32, 32), width=64))
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [64, 128, 128, 256, 256, 256, 256, 256]
    assert model.net.model.linear.in_features == 2304


def test_resnet18_is_cifar_style() -> None:
    model = build_model(_spec("resnet18", (3, 32, 32)))
    stem = model.net.conv1
    assert stem.kernel_size == (3, 3) and stem.stride == (1, 1)
    assert not any(isinstance(m, torch.nn.MaxPool2d) for m in model.modules())
    assert sum(p.numel() for p in model.parameters()) == 11_173_962  # the standard CIFAR ResNet-18 count


def test_normalisation_is_applied_inside_the_model() -> None:
    spec = ModelSpec("mlp", (2,), 2, (1.0, 2.0), (2.0, 4.0), {"hidden": []})
    model = build_model(spec)
    linear = model.net[0]
    x = torch.tensor([[3.0, 6.0]])
    assert torch.allclose(model(x), linear(torch.tensor([[1.0, 1.0]])))
    assert not any("mean" in n for n, _ in model.named_parameters())


def test_user_model_from_file(tmp_path: Path) -> None:
    f = tmp_path / "mymodel.py"
    f.write_text("import torch\nclass Net(torch.nn.Module):\n"
                 "    def __init__(self, num_classes, hidden=8):\n        super().__init__()\n"
                 "        self.fc = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.LazyLinear(num_classes))\n"
                 "    def forward(self, x):\n        return self.fc(x)\n")
    model = build_model(ModelSpec(f"{f}:Net", (3, 4, 4), 5, (0.0,), (1.0,), {"hidden": 3}))
    assert model(torch.rand(2, 3, 4, 4)).shape == (2, 5)


def test_user_model_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        build_model(ModelSpec(f"{tmp_path}/nope.py:Net", (3, 4, 4), 5, (0.0,), (1.0,)))
    with pytest.raises(ConfigError, match="no attribute"):
        build_model(ModelSpec("torch.nn:NoSuchNet", (3, 4, 4), 5, (0.0,), (1.0,)))
    with pytest.raises(ConfigError, match="unknown model 'convnot'.*convnet"):
        build_model(ModelSpec("convnot", (3, 4, 4), 5, (0.0,), (1.0,)))
    assert {"convnet", "resnet18", "mlp", "lenet"} <= set(MODELS.names())


def test_model_pair_round_trip(tmp_path: Path) -> None:
    spec = _spec("lenet", (3, 16, 16))
    states = [{k: v.clone() for k, v in build_model(spec).state_dict().items()} for _ in range(3)]
    pair = ModelPair(spec, states[0], states[1], states[2], n_train=32, n_forget=1, metadata={"seed": 3})
    pair.save(tmp_path / "run")
    loaded = ModelPair.load(tmp_path / "run")
    assert loaded.n_train == 32 and loaded.n_forget == 1 and loaded.metadata == {"seed": 3}
    for a, b in [(pair.original, loaded.original), (pair.unlearned, loaded.unlearned), (pair.base, loaded.base)]:
        assert b is not None and all(torch.equal(a[k], b[k]) for k in a)
    x = torch.rand(2, 3, 16, 16)
    assert torch.equal(pair.model("unlearned")(x), loaded.model("unlearned")(x))
    blind = loaded.without_base()
    with pytest.raises(CheckpointError, match="no base model"):
        blind.model("base")


def test_model_pair_load_errors(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="manifest.json is missing"):
        ModelPair.load(tmp_path)
    spec = _spec("lenet", (3, 16, 16))
    state = build_model(spec).state_dict()
    ModelPair(spec, state, state).save(tmp_path / "p")
    (tmp_path / "p" / "weights.safetensors").write_bytes(b"\x00garbage")
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        ModelPair.load(tmp_path / "p")
    ModelPair(spec, state, state).save(tmp_path / "q")
    manifest = json.loads((tmp_path / "q" / "manifest.json").read_text())
    manifest["model"]["kwargs"] = {"channels": 5}
    (tmp_path / "q" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match="does not fit"):
        ModelPair.load(tmp_path / "q")
