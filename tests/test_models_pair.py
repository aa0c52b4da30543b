"""Model registry, user models by import path, and ModelPair save/load."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file
from typer.testing import CliRunner

from unlearnleak.cli import app
from unlearnleak.errors import CheckpointError, ConfigError
from unlearnleak.knowledge import ServerKnowledge
from unlearnleak.models import MODELS, ModelSpec, build_model
from unlearnleak.pair import ModelPair, load_pair_folder


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
    pair = ModelPair(spec, states[0], states[1])
    knowledge = ServerKnowledge(base=states[2], n_train=32, n_forget=1, unlearning="exact", batch_size=8)
    pair.save(tmp_path / "run")
    knowledge.save(tmp_path / "run")
    loaded, known = load_pair_folder(tmp_path / "run")
    assert known.n_train == 32 and known.n_forget == 1 and known.unlearning == "exact" and known.batch_size == 8
    assert known.declared == ("base", "n_train", "n_forget", "unlearning", "batch_size")
    for a, b in [(pair.original, loaded.original), (pair.unlearned, loaded.unlearned), (states[2], known.base)]:
        assert b is not None and all(torch.equal(a[k], b[k]) for k in a)
    x = torch.rand(2, 3, 16, 16)
    assert torch.equal(pair.model("unlearned")(x), loaded.model("unlearned")(x))
    assert torch.equal(loaded.model("base", knowledge=known)(x), pair.model("base", knowledge=knowledge)(x))
    with pytest.raises(CheckpointError, match="θ0 .* is not known"):
        loaded.model("base")
    with pytest.raises(CheckpointError, match="θ0 .* is not known"):
        loaded.model("base", knowledge=known.without("base"))


def test_a_folder_without_knowledge_declares_nothing(tmp_path: Path) -> None:
    spec = _spec("lenet", (3, 16, 16))
    a, b = build_model(spec).state_dict(), build_model(spec).state_dict()
    ModelPair(spec, a, b).save(tmp_path)
    assert load_pair_folder(tmp_path)[1] == ServerKnowledge()
    assert set(json.loads((tmp_path / "manifest.json").read_text())) == {"format", "model"}


def test_legacy_pair_folder_keeps_its_base_and_sizes(tmp_path: Path) -> None:
    spec = _spec("lenet", (3, 16, 16))
    states = [build_model(spec).state_dict() for _ in range(3)]
    tensors = {f"{w}.{k}": v for w, s in zip(("original", "unlearned", "base"), states, strict=True)
               for k, v in s.items()}
    save_file(tensors, str(tmp_path / "weights.safetensors"))
    (tmp_path / "manifest.json").write_text(json.dumps({
        "format": "unlearnleak.ModelPair/1", "model": spec.to_dict(), "has_base": True, "n_train": 32,
        "n_forget": 2, "metadata": {"forget_labels": [3, 4]}}))
    _, knowledge = load_pair_folder(tmp_path)
    assert knowledge.n_train == 32 and knowledge.n_forget == 2 and knowledge.base is not None
    assert knowledge.labels is None  # the old metadata's ground truth is not knowledge


def _saved(tmp_path: Path, name: str = "p") -> tuple[Path, ModelSpec, dict[str, torch.Tensor]]:
    spec = _spec("lenet", (3, 16, 16))
    state = {k: v.clone() for k, v in build_model(spec).state_dict().items()}
    other = {k: v + 0.01 if v.is_floating_point() else v for k, v in state.items()}
    ModelPair(spec, state, other).save(tmp_path / name)
    return tmp_path / name, spec, state


def test_model_pair_load_errors(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="manifest.json is missing"):
        ModelPair.load(tmp_path)
    folder, _, _ = _saved(tmp_path, "p")
    (folder / "weights.safetensors").write_bytes(b"\x00garbage")
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        ModelPair.load(folder)
    folder, _, _ = _saved(tmp_path, "q")
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["model"]["kwargs"] = {"channels": 5}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match=r"θ \(original weights\) does not fit .* has shape "):
        ModelPair.load(folder)


@pytest.mark.parametrize(("manifest", "message"), [
    ([1, 2, 3], "must hold a JSON object, got a list"),
    ({"format": "unlearnleak.ModelPair/2", "model": "convnet"}, "model spec must be a JSON object"),
    ({"format": "unlearnleak.ModelPair/1", "model": None, "n_train": "many"}, "model spec must be a JSON object"),
    ({"format": "something else"}, "unknown format"),
])
def test_malformed_manifest_is_one_clear_error(tmp_path: Path, manifest: object, message: str) -> None:
    folder, _, _ = _saved(tmp_path)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match=message):
        load_pair_folder(folder)


def test_legacy_manifest_with_non_numeric_n_train_is_refused(tmp_path: Path) -> None:
    folder, spec, _ = _saved(tmp_path)
    (folder / "manifest.json").write_text(json.dumps({
        "format": "unlearnleak.ModelPair/1", "model": spec.to_dict(), "n_train": "many", "n_forget": 1}))
    with pytest.raises(CheckpointError, match="n_train must be a positive integer or unknown, got 'many'"):
        load_pair_folder(folder)


def test_unlearned_weights_of_another_architecture_name_the_key_and_both_shapes(tmp_path: Path) -> None:
    spec = _spec("mlp", (6,), hidden=[4])
    wide = build_model(_spec("mlp", (6,), hidden=[5])).state_dict()
    state = build_model(spec).state_dict()
    ModelPair(spec, state, wide).save(tmp_path)
    with pytest.raises(CheckpointError, match=r"θ_u .*net\.0\.weight has shape \(5, 6\) in the checkpoint but "
                                             r"\(4, 6\) in the model"):
        ModelPair.load(tmp_path)


def test_base_of_another_architecture_is_refused(tmp_path: Path) -> None:
    spec = _spec("mlp", (6,), hidden=[4])
    state = build_model(spec).state_dict()
    ModelPair(spec, state, {k: v + 1 for k, v in state.items()}).save(tmp_path)
    ServerKnowledge(base=build_model(_spec("mlp", (6,), hidden=[3])).state_dict()).save(tmp_path)
    with pytest.raises(CheckpointError, match=r"θ0 .*has shape \(3, 6\) in the checkpoint but \(4, 6\)"):
        load_pair_folder(tmp_path)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_weights_are_refused_at_load(tmp_path: Path, bad: float) -> None:
    spec = _spec("mlp", (6,), hidden=[4])
    state = build_model(spec).state_dict()
    unlearned = {k: v.clone() for k, v in state.items()}
    unlearned["net.2.bias"][1] = bad
    ModelPair(spec, state, unlearned).save(tmp_path)
    with pytest.raises(CheckpointError, match="θ_u has non-finite values in net.2.bias"):
        ModelPair.load(tmp_path)


MARKER_MODULE = """
import pathlib
pathlib.Path({marker!r}).write_text("ran")
import torch
class Net(torch.nn.Module):
    def __init__(self, num_classes):
        super().__init__()
        self.fc = torch.nn.Linear(6, num_classes)
    def forward(self, x):
        return self.fc(x)
"""


@pytest.mark.parametrize("kind", ["file", "os_system"])
def test_a_manifest_naming_code_is_refused_before_any_import(tmp_path: Path, kind: str) -> None:
    marker = tmp_path / "marker"
    if kind == "file":
        code = tmp_path / "evil.py"
        code.write_text(MARKER_MODULE.format(marker=str(marker)))
        name, kwargs = f"{code}:Net", {}
    else:
        name, kwargs = "os:system", {"command": f"touch {marker}"}
    folder, _, _ = _saved(tmp_path)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["model"].update(name=name, kwargs=kwargs)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match="names code .*loading a file never runs code.*--model-def"):
        load_pair_folder(folder)
    with pytest.raises(CheckpointError, match="names code"):
        load_pair_folder(folder, model_def="torch.nn:Linear")  # another definition than the one named
    runner = CliRunner()
    for command in (["recover", str(folder), "--out", str(tmp_path / "r"), "--iterations", "1"],
                    ["infer-label", str(folder), "--per-class", "1"]):
        result = runner.invoke(app, command)
        assert result.exit_code == 2, result.output
        assert "names code" in result.output
    assert not marker.exists()


def test_the_named_definition_is_accepted(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    code = tmp_path / "net.py"
    code.write_text(MARKER_MODULE.format(marker=str(marker)))
    spec = ModelSpec(f"{code}:Net", (6,), 3, (0.0,), (1.0,))
    state = build_model(spec).state_dict()
    marker.unlink()
    ModelPair(spec, state, {k: v + 1 for k, v in state.items()}).save(tmp_path / "p")
    pair = ModelPair.load(tmp_path / "p", model_def=f"{tmp_path}/./net.py:Net")
    assert marker.exists() and pair.model()(torch.rand(2, 6)).shape == (2, 3)
    result = CliRunner().invoke(app, ["recover", str(tmp_path / "p"), "--model-def", f"{code}:Net", "--out",
                                      str(tmp_path / "r"), "--iterations", "1"])
    assert result.exit_code == 0, result.output


_JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                     lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                                   max_size=3), max_leaves=8)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(field=st.sampled_from(["format", "model", "name", "input_shape", "num_classes", "mean", "std", "kwargs",
                              "n_train", "n_forget", "has_base"]), value=_JSON)
def test_fuzzed_manifest_fields_give_exit_2_never_a_traceback(tmp_path_factory: pytest.TempPathFactory,
                                                             field: str, value: object) -> None:
    # Identical θ and θ_u, and missing saved probes: a manifest that still parses fails fast, cleanly, later.
    folder = tmp_path_factory.mktemp("fuzz")
    spec = _spec("mlp", (6,), hidden=[4])
    state = build_model(spec).state_dict()
    ModelPair(spec, state, state).save(folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    if field in ("format", "model"):
        manifest[field] = value
    elif field in ("n_train", "n_forget", "has_base"):
        manifest.update({"format": "unlearnleak.ModelPair/1", field: value})
    else:
        manifest["model"][field] = value
    (folder / "manifest.json").write_text(json.dumps(manifest))
    for command in (["recover", str(folder), "--out", str(folder / "r"), "--iterations", "1"],
                    ["infer-label", str(folder), "--probes", str(folder / "no-probes")]):
        result = CliRunner().invoke(app, command)
        assert result.exit_code == 2, (command, manifest, result.output, result.exception)
        assert result.output.count("error:") == 1, result.output
