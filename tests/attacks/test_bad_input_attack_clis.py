"""`recover`, `infer-label` and `demo` on bad input: one `error:` line naming the flag or file, exit 2, checked
before the attack runs, and no output folder (or stale file) left behind."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from recover_pairs import one_step_pair
from safetensors.torch import save_file
from typer.testing import CliRunner

from cli_checks import one_error
from unlearnleak.cli import app
from unlearnleak.models import ModelSpec, build_model
from unlearnleak.pair import ModelPair
from unlearnleak.record import RunRecord
from unlearnleak.unlearning import state_of

runner = CliRunner()
IMAGE = ModelSpec("lenet", (3, 16, 16), 10, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), {})
TABLE = ModelSpec("mlp", (6,), 3, (0.0,), (1.0,), {"hidden": [8]})


def make_pair(folder: Path, spec: ModelSpec, k: int = 2) -> Path:
    """A pair unlearned by one gradient-ascent step on ``k`` samples (N = 16), with its ground truth."""
    labels = [i % spec.num_classes for i in range(k)]
    one_step_pair(folder, labels, spec, n_train=16)
    RunRecord(forget_labels=tuple(labels)).save(folder)
    return folder


@pytest.fixture
def pair_dir(tmp_path: Path) -> Path:
    return make_pair(tmp_path / "pair", IMAGE)


class Computed(Exception):
    """Raised by the patched attack: a check came too late."""


def _refuse(*args: Any, **kwargs: Any) -> Any:
    raise Computed("the attack started before the input was checked")


@pytest.fixture
def no_attack(monkeypatch: pytest.MonkeyPatch) -> None:
    """Bad input must be refused before either attack (or the demo's training) starts."""
    # the commands run the attacks through experiments.pipeline, which runs each attack's facade
    monkeypatch.setattr("unlearnleak.attacks.feature_recovery.recover", _refuse)
    monkeypatch.setattr("unlearnleak.attacks.feature_recovery.facade.recover", _refuse)
    monkeypatch.setattr("unlearnleak.attacks.label_inference.generate_probes", _refuse)
    monkeypatch.setattr("unlearnleak.attacks.label_inference.infer_label", _refuse)
    monkeypatch.setattr("unlearnleak.attacks.label_inference.facade.generate_probes", _refuse)
    monkeypatch.setattr("unlearnleak.attacks.label_inference.facade.infer_label", _refuse)
    monkeypatch.setattr("unlearnleak.experiments.pipeline.build_scenario", _refuse)


PAIR_FILES = {"manifest.json", "weights.safetensors", "knowledge.json", "record.json", "ground_truth.safetensors"}


def _entries(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


@pytest.mark.parametrize("args, needles", [
    (["--k", "0"], ["--k"]),
    (["--k", "500"], ["--k 500", "N = 16"]),
    (["--k", "16"], ["--k 16"]),
    (["--time-budget", "nan"], ["--time-budget", "finite"]),
    (["--time-budget", "-1"], ["--time-budget"]),
    (["--time-budget", "inf"], ["--time-budget"]),
    (["--iterations", "-1"], ["--iterations"]),
    (["--iterations", "0"], ["--iterations"]),
    (["--restarts", "0"], ["--restarts"]),
    (["--lpips", "/nonexistent/lpips.safetensors"], ["--lpips", "/nonexistent/lpips.safetensors"]),
    (["--mode", "sideways"], ["--mode", "'auto', 'approximate' or 'exact'"]),
    (["--preset", "fastest"], ["--preset", "best"]),
    (["--labels", "4,99"], ["--labels", "[0, 10)"]),
    (["--labels", "4"], ["--labels", "1 labels given for k = 2"]),
    (["--labels", "a,b"], ["--labels"]),
    (["--set", "lr=-1"], ["--set", "lr"]),
    (["--set", "colour=3"], ["--set", "colour"]),
    (["--set", "race_pick=smoothest"], ["--set", "race_pick", "'tv' or 'agreement'"]),
    (["--device", "tpu"], ["--device"]),
    (["--seed", "x"], ["--seed"]),
])
def test_recover_bad_options(args: list[str], needles: list[str], pair_dir: Path, tmp_path: Path,
                             no_attack: None) -> None:
    one_error(runner.invoke(app, ["recover", str(pair_dir), "--out", str(tmp_path / "out"), *args]), *needles)
    assert _entries(tmp_path) == {"pair"}
    assert _entries(pair_dir) == PAIR_FILES


def test_recover_bad_ground_truth_is_refused_before_the_attack(pair_dir: Path, tmp_path: Path,
                                                               no_attack: None) -> None:
    (pair_dir / "ground_truth.safetensors").write_bytes(b"not safetensors")
    one_error(runner.invoke(app, ["recover", str(pair_dir), "--out", str(tmp_path / "o")]),
              "ground_truth.safetensors")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("command", ["recover", "infer-label"])
def test_output_folder_checks(command: str, pair_dir: Path, tmp_path: Path, no_attack: None) -> None:
    a_file = tmp_path / "file"
    a_file.write_text("x")
    one_error(runner.invoke(app, [command, str(pair_dir), "--out", str(a_file)]), "--out", "existing file")
    one_error(runner.invoke(app, [command, str(pair_dir), "--out", str(a_file / "sub")]), "--out")
    old = tmp_path / "old"
    old.mkdir()
    (old / "results.json").write_text("{}")
    one_error(runner.invoke(app, [command, str(pair_dir), "--out", str(old)]), "--out", "--overwrite")
    assert _entries(old) == {"results.json"}
    assert _entries(tmp_path) == {"pair", "file", "old"}


def test_recover_overwrite_replaces_a_stale_image_run(tmp_path: Path) -> None:
    """A tabular pair recovered into a folder that held an image run lists only its own files."""
    pair = make_pair(tmp_path / "tab", TABLE, k=1)
    out = tmp_path / "out"
    out.mkdir()
    (out / "grid.png").write_bytes(b"an earlier image run")
    (out / "results.json").write_text("{}")
    refused = runner.invoke(app, ["recover", str(pair), "--out", str(out)])
    one_error(refused, "--overwrite")
    result = runner.invoke(app, ["recover", str(pair), "--out", str(out), "--overwrite"])
    assert result.exit_code == 0, result.output
    assert _entries(out) == {"reconstruction.safetensors", "results.json", "results.jsonl", "run.json", "cells"}
    assert _entries(out / "cells" / "recover") == {"reconstruction.safetensors"}  # no grid.png of the image run
    assert json.loads((out / "results.json").read_text())["reconstruction"]["method"] == "analytic"
    assert _entries(tmp_path) == {"tab", "out"}


def test_recover_failing_mid_write_leaves_nothing(pair_dir: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise OSError(28, "No space left on device", "grid.png")

    monkeypatch.setattr("unlearnleak.report.grids.save_reconstruction_grid", broken)
    out = tmp_path / "out"
    result = runner.invoke(app, ["recover", str(pair_dir), "--out", str(out), "--iterations", "2",
                                 "--restarts", "1", "--set", "bn_prior=0"])
    one_error(result, "No space left", "grid.png")
    assert _entries(tmp_path) == {"pair"}


@pytest.fixture
def three_class_pair(tmp_path: Path) -> Path:
    spec = ModelSpec("mlp", (3, 8, 8), 3, (0.5,) * 3, (0.25,) * 3, {"hidden": [16]})
    torch.manual_seed(0)
    state = state_of(build_model(spec))
    return ModelPair(spec=spec, original=state, unlearned=dict(state)).save(tmp_path / "pair3")


@pytest.mark.parametrize("args, needles", [
    (["--top-k", "99"], ["--top-k 99", "3 classes"]),
    (["--top-k", "3"], ["--top-k 3"]),
    (["--top-k", "0"], ["--top-k"]),
    (["--per-class", "0"], ["--per-class"]),
    (["--per-class", "-5"], ["--per-class"]),
    (["--per-class", "200000"], ["--per-class", "100000", "200000"]),
    (["--max-seconds", "nan"], ["--max-seconds", "finite"]),
    (["--max-seconds", "inf"], ["--max-seconds"]),
    (["--max-seconds", "0"], ["--max-seconds"]),
    (["--budget", "0"], ["--budget"]),
    (["--seed", "-1"], ["--seed"]),
    (["--generator", "nope"], ["--generator", "nes"]),
    (["--statistic", "median"], ["--statistic"]),
    (["--level", "0"], ["--level"]),
    (["--level", "1.5"], ["--level"]),
    (["--calibration", "magic"], ["--calibration", "null_pairs"]),
    (["--test", "wilcoxon"], ["--test", "robust"]),
    (["--set", "threshold=2"], ["--set", "threshold"]),
    (["--device", "tpu"], ["--device"]),
    (["--probes", "/nonexistent/probes"], ["--probes", "probes.safetensors", "--out DIR"]),
    (["--generator", "public"], ["--generator public", "dataset"]),
])
def test_infer_label_bad_options(args: list[str], needles: list[str], three_class_pair: Path, tmp_path: Path,
                                 no_attack: None) -> None:
    one_error(runner.invoke(app, ["infer-label", str(three_class_pair), "--out", str(tmp_path / "o"), *args]),
              *needles)
    assert _entries(tmp_path) == {"pair3"}


def test_infer_label_refuses_probes_of_another_model(three_class_pair: Path, pair_dir: Path, tmp_path: Path) -> None:
    made = runner.invoke(app, ["infer-label", str(pair_dir), "--per-class", "1", "--out", str(tmp_path / "run")])
    assert made.exit_code == 0, made.output
    reuse = runner.invoke(app, ["infer-label", str(three_class_pair), "--probes", str(tmp_path / "run" / "probes"),
                                "--out", str(tmp_path / "again")])
    one_error(reuse, "--probes", "(3, 16, 16)", "10 classes")
    assert not (tmp_path / "again").exists()


@pytest.mark.parametrize("args, needles", [
    (["--iterations", "-1"], ["--iterations"]),
    (["--iterations", "0"], ["--iterations"]),
    (["--device", "tpu"], ["--device"]),
])
def test_demo_bad_options(args: list[str], needles: list[str], tmp_path: Path, no_attack: None) -> None:
    one_error(runner.invoke(app, ["demo", "--out", str(tmp_path / "demo"), *args]), *needles)
    assert list(tmp_path.iterdir()) == []


def test_demo_refuses_existing_results_before_training(tmp_path: Path, no_attack: None) -> None:
    (tmp_path / "demo").mkdir()
    (tmp_path / "demo" / "summary.json").write_text("{}")
    one_error(runner.invoke(app, ["demo", "--out", str(tmp_path / "demo")]), "--out", "--overwrite")
    a_file = tmp_path / "file"
    a_file.write_text("x")
    one_error(runner.invoke(app, ["demo", "--out", str(a_file)]), "--out", "existing file")
    assert _entries(tmp_path) == {"demo", "file"} and _entries(tmp_path / "demo") == {"summary.json"}


def test_demo_failing_midway_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise OSError(28, "No space left on device", "label_inference")

    monkeypatch.setattr("unlearnleak.commands.demo.run_label_inference", broken)
    monkeypatch.setattr("unlearnleak.commands.demo.run_feature_recovery",
                        lambda out, *a, **k: (out.mkdir(parents=True), {})[1])
    one_error(runner.invoke(app, ["demo", "--out", str(tmp_path / "demo")]), "No space left")
    assert list(tmp_path.iterdir()) == []


# ---- hostile or corrupt pair folders (the loading itself is hardened in pair.py / models, issue 6/9) -------


def test_a_manifest_model_name_is_never_run_as_code(pair_dir: Path, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    manifest = json.loads((pair_dir / "manifest.json").read_text())
    manifest["model"]["name"] = "os:system"
    manifest["model"]["kwargs"] = {"command": f"touch {marker}"}
    (pair_dir / "manifest.json").write_text(json.dumps(manifest))
    result = runner.invoke(app, ["recover", str(pair_dir), "--out", str(tmp_path / "o")])
    assert not marker.exists(), "the manifest's model name was run as code"
    one_error(result, "manifest.json")


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                    lambda children: st.lists(children, max_size=3)
                    | st.dictionaries(st.text(max_size=6), children, max_size=3), max_leaves=6)
MANIFEST_FIELDS = ["format", "model", "has_base", "n_train", "n_forget", "metadata", "model.name",
                   "model.input_shape", "model.num_classes", "model.mean", "model.std", "model.kwargs"]


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(edits=st.lists(st.tuples(st.sampled_from(MANIFEST_FIELDS), JSON), min_size=1, max_size=3),
       top=st.booleans())
def test_fuzzed_manifests_exit_2(edits: list[tuple[str, Any]], top: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("unlearnleak.attacks.feature_recovery.recover", _refuse)
    monkeypatch.setattr("unlearnleak.attacks.feature_recovery.facade.recover", _refuse)
    with tempfile.TemporaryDirectory() as tmp:
        monkeypatch.chdir(tmp)
        pair = make_pair(Path(tmp) / "pair", IMAGE)
        manifest: Any = json.loads((pair / "manifest.json").read_text())
        for key, value in edits:
            section, _, name = key.rpartition(".")
            node = manifest.get(section) if section else manifest
            if isinstance(node, dict):
                node[name] = value
        if not top:  # the whole manifest replaced by another JSON value
            manifest = edits[0][1]
        (pair / "manifest.json").write_text(json.dumps(manifest))
        result = runner.invoke(app, ["recover", str(pair), "--out", str(Path(tmp) / "o")])
        if isinstance(result.exception, Computed):  # a manifest that is still valid
            return
        one_error(result)
        assert not (Path(tmp) / "o").exists()


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_weights_are_refused(value: float, pair_dir: Path, tmp_path: Path, no_attack: None) -> None:
    from safetensors.torch import load_file

    tensors = load_file(str(pair_dir / "weights.safetensors"))
    first = next(k for k in tensors if k.startswith("unlearned.") and tensors[k].is_floating_point())
    tensors[first].view(-1)[0] = value
    save_file(tensors, str(pair_dir / "weights.safetensors"))
    for command in ("recover", "infer-label"):
        one_error(runner.invoke(app, [command, str(pair_dir), "--out", str(tmp_path / "o")]), "weights")
    assert not (tmp_path / "o").exists()


def test_umask_is_followed_by_recover(pair_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = runner.invoke(app, ["recover", str(pair_dir), "--out", str(out), "--iterations", "2",
                                 "--restarts", "1", "--set", "bn_prior=0"])
    assert result.exit_code == 0, result.output
    mask = os.umask(0)
    os.umask(mask)
    assert {p.stat().st_mode & 0o777 for p in out.rglob("*") if p.is_file()} == {0o666 & ~mask}
    assert {p.stat().st_mode & 0o777 for p in [out, *out.rglob("*")] if p.is_dir()} == {0o777 & ~mask}
