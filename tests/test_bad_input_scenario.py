"""`unlearnleak scenario` on bad input: one `error:` line naming the flag or file, exit 2, nothing computed or
written; partial overrides keep the scenario's defaults; run folders are published whole (or not at all)."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from cli_checks import one_error
from unlearnleak.cli import app
from unlearnleak.experiments.config import load_config
from unlearnleak.scenario import ScenarioConfig
from unlearnleak.training import TrainConfig

runner = CliRunner()

DIGITS = ["--dataset", "digits", "--model", "lenet", "--set", "holdout=300", "--set", "pretrain.epochs=1",
          "--n-train", "32", "--k", "2"]


class Computed(Exception):
    """Raised by the patched computation: a check came too late."""


@pytest.fixture
def no_training(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any bad input must be refused before θ0 is pretrained."""
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise Computed("pretraining started before the input was checked")

    monkeypatch.setattr("unlearnleak.scenario.pretrained_base", refuse)


def test_partial_overrides_keep_the_scenarios_defaults() -> None:
    cfg = load_config(ScenarioConfig, None, ["finetune.lr=0.01", "pretrain.epochs=1"])
    default = ScenarioConfig()
    assert cfg.finetune == default.finetune.model_copy(update={"lr": 0.01})
    assert cfg.finetune.freeze_bn is True  # the paper's fine-tuning setting, not TrainConfig's default
    assert cfg.pretrain == default.pretrain.model_copy(update={"epochs": 1})
    assert (cfg.pretrain.lr, cfg.pretrain.augment, cfg.pretrain.drop_last) == (0.1, True, True)
    assert cfg.pretrain.weight_decay == 5e-4 and cfg.pretrain.milestones == (15, 25)
    assert cfg.forget == default.forget and cfg.unlearning == default.unlearning


def test_partial_section_in_a_yaml_file_keeps_the_defaults(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("finetune: {lr: 0.01}\nforget: {k: 3}\n")
    cfg = load_config(ScenarioConfig, path, ["finetune.epochs=2"])
    assert cfg.finetune == ScenarioConfig().finetune.model_copy(update={"lr": 0.01, "epochs": 2})
    assert cfg.forget.k == 3 and cfg.forget.kind == "samples"


def test_set_finetune_lr_keeps_freeze_bn_in_config_json(tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = runner.invoke(app, ["scenario", *DIGITS, "--set", "finetune.lr=0.01", "--out", str(out)])
    assert result.exit_code == 0, result.output
    written = json.loads((out / "config.json").read_text())
    expected = ScenarioConfig().finetune.model_copy(update={"lr": 0.01}).model_dump(mode="json")
    assert written["finetune"] == expected and written["finetune"]["freeze_bn"] is True
    assert set(written) == set(ScenarioConfig.model_fields)  # every field, not only the ones given
    assert written["model_kwargs"] == {}  # lenet's defaults, not convnet's width
    mask = os.umask(0)
    os.umask(mask)
    for path in out.iterdir():  # files follow the umask (not mkstemp's 0600)
        assert path.stat().st_mode & 0o777 == 0o666 & ~mask, path


@pytest.mark.parametrize("args, needles", [
    (["--k", "0"], ["--k"]),
    (["--k", "32"], ["--k", "smaller than n_train"]),
    (["--k", "40"], ["--k"]),
    (["--n-train", "0"], ["--n-train"]),
    (["--set", "finetune.lr=.nan"], ["finetune.lr", "finite"]),
    (["--set", "finetune.lr=.inf"], ["finetune.lr", "finite"]),
    (["--set", "finetune.epochs=-1"], ["finetune.epochs"]),
    (["--set", "forget.fraction=2", "--set", "forget.kind=class", "--set", "forget.class_id=1"], ["forget.fraction"]),
    (["--set", "finetune.epochz=1"], ["finetune.epochz", "unknown key", "epochs"]),
    (["--set", "seed=-1"], ["seed"]),
    (["--set", "holdout=0"], ["holdout"]),
    (["--set", "forget.kind=class", "--set", "forget.class_id=12"], ["forget.class_id", "0..9"]),
    (["--set", "forget.positions=[0, 99]"], ["forget.positions", "[0, 32)"]),
    (["--set", "forget.positions=[]"], ["forget.positions"]),
    (["--set", "forget.positions=[1000000000000000000000000]"], ["forget.positions"]),
    (["--model", "convnet"], ["'convnet'", "(1, 8, 8)", "choose another model"]),
    (["--model", "mlp", "--set", "model_kwargs={width: 16}"], ["model_kwargs", "hidden", "model_kwargs={}"]),
    (["--model", "lenet", "--set", "model_kwargs={channels: -3}"], ["model_kwargs", "does not fit"]),
    (["--method", "forgetful"], ["unknown unlearning method"]),
    (["--device", "tpu"], ["--device tpu", "cpu"]),
    (["--set", "device=tpu"], ["device", "cpu"]),
    (["--set", "dataset_options={colour: 1}"], ["colour"]),
    (["--set", "test_split=validation"], ["validation"]),
    (["--set", "nokey"], ["--set", "key.subkey=value"]),
    (["--set", "holdout.x=3"], ["holdout"]),
])
def test_bad_options_fail_before_training(args: list[str], needles: list[str], tmp_path: Path,
                                          no_training: None) -> None:
    out = tmp_path / "run"
    one_error(runner.invoke(app, ["scenario", *DIGITS, *args, "--out", str(out)]), *needles)
    assert list(tmp_path.iterdir()) == []  # no output folder, no temporary sibling


def test_mlp_with_default_kwargs_builds(tmp_path: Path) -> None:
    result = runner.invoke(app, ["scenario", *DIGITS, "--model", "mlp", "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "run" / "config.json").read_text())["model_kwargs"] == {}


@pytest.mark.parametrize("content, needles", [
    (b"finetune:\n  lr: 0.01\n  # caf\xe9\n", ["not UTF-8", "c.yaml"]),
    (b"- 1\n- 2\n", ["mapping", "c.yaml"]),
    (b"finetune: [\n", ["not valid YAML", "c.yaml"]),
    (b"finetune: {lr: fast}\n", ["finetune.lr", "c.yaml"]),
    (b"!!python/object/apply:os.system ['true']\n", ["not valid YAML"]),
])
def test_bad_config_files(content: bytes, needles: list[str], tmp_path: Path, no_training: None) -> None:
    path = tmp_path / "c.yaml"
    path.write_bytes(content)
    one_error(runner.invoke(app, ["scenario", "--config", str(path), "--out", str(tmp_path / "run")]), *needles)
    assert not (tmp_path / "run").exists()


def test_bad_output_folders_are_refused_before_training(tmp_path: Path, no_training: None) -> None:
    a_file = tmp_path / "file"
    a_file.write_text("x")
    one_error(runner.invoke(app, ["scenario", *DIGITS, "--out", str(a_file)]), "--out", "existing file")
    one_error(runner.invoke(app, ["scenario", *DIGITS, "--out", str(a_file / "run")]), "--out", "not a writable")
    results = tmp_path / "results"
    results.mkdir()
    (results / "manifest.json").write_text("{}")
    one_error(runner.invoke(app, ["scenario", *DIGITS, "--out", str(results)]), "--out", "--overwrite")
    assert [p.name for p in results.iterdir()] == ["manifest.json"]  # untouched


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_output_parent(tmp_path: Path, no_training: None) -> None:
    parent = tmp_path / "ro"
    parent.mkdir()
    parent.chmod(0o500)
    try:
        one_error(runner.invoke(app, ["scenario", *DIGITS, "--out", str(parent / "run")]), "--out")
    finally:
        parent.chmod(0o700)


def test_overwrite_replaces_the_whole_folder(tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "grid.png").write_bytes(b"stale result of an earlier run")
    result = runner.invoke(app, ["scenario", *DIGITS, "--out", str(out), "--overwrite"])
    assert result.exit_code == 0, result.output
    assert {p.name for p in out.iterdir()} == {"weights.safetensors", "manifest.json", "config.json",
                                                "knowledge.json", "base.safetensors", "record.json",
                                                "ground_truth.safetensors"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no temporary siblings left


def test_a_failed_save_leaves_no_half_written_pair(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import unlearnleak.scenario as scenario

    def broken(path: Any, obj: Any) -> Any:
        raise OSError(28, "No space left on device", str(path))

    monkeypatch.setattr(scenario, "write_json_atomic", broken)  # weights are written, then config.json fails
    out = tmp_path / "run"
    one_error(runner.invoke(app, ["scenario", *DIGITS, "--out", str(out)]), "No space left", "config.json")
    assert list(tmp_path.iterdir()) == []
    again = runner.invoke(app, ["recover", str(out)])
    one_error(again, "manifest.json")


def test_ctrl_c_while_saving_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import unlearnleak.scenario as scenario

    def interrupted(path: Any, obj: Any) -> Any:
        raise KeyboardInterrupt

    monkeypatch.setattr(scenario, "write_json_atomic", interrupted)
    result = runner.invoke(app, ["scenario", *DIGITS, "--out", str(tmp_path / "run")])
    assert result.exit_code == 130, (result.exit_code, result.output)
    assert list(tmp_path.iterdir()) == []


def test_typer_usage_errors_are_one_line(tmp_path: Path) -> None:
    one_error(runner.invoke(app, ["scenario", *DIGITS]), "--out", "unlearnleak scenario --help")
    one_error(runner.invoke(app, ["scenario", "--n-train", "many", "--out", str(tmp_path / "r")]), "--n-train")
    one_error(runner.invoke(app, ["scenario", "--colour", "red"]), "--colour")
    assert not (tmp_path / "r").exists()


# ---- fuzzing the config file: every field gets random JSON; exit 2 with one line, or a valid run ------------

JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                    lambda children: st.lists(children, max_size=3)
                    | st.dictionaries(st.text(max_size=6), children, max_size=3), max_leaves=6)
BASE = {"dataset": "digits", "model": "lenet", "holdout": 300, "n_train": 32, "pretrain": {"epochs": 1},
        "forget": {"k": 2}}
FIELDS = ([name for name in ScenarioConfig.model_fields]
          + [f"{section}.{name}" for section in ("pretrain", "finetune") for name in TrainConfig.model_fields]
          + ["forget.kind", "forget.k", "forget.positions", "forget.class_id", "forget.fraction",
             "unlearning.method", "unlearning.params"])


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(edits=st.lists(st.tuples(st.sampled_from(FIELDS), JSON), min_size=1, max_size=3))
def test_fuzzed_config_files_exit_2_or_run(edits: list[tuple[str, Any]], monkeypatch: pytest.MonkeyPatch) -> None:
    def reached(*args: Any, **kwargs: Any) -> Any:
        raise Computed("the config passed every check")

    monkeypatch.setattr("unlearnleak.commands.scenario.build_scenario", reached)
    data: dict[str, Any] = json.loads(json.dumps(BASE))
    for key, value in edits:
        section, _, name = key.rpartition(".")
        node = data.setdefault(section, {}) if section else data
        if not isinstance(node, dict):
            continue
        node[name] = value
    with tempfile.TemporaryDirectory() as tmp:
        monkeypatch.chdir(tmp)  # a fuzzed relative cache_dir or data_dir stays inside tmp
        path = Path(tmp) / "fuzz.yaml"
        path.write_text(yaml.safe_dump(data))
        result = runner.invoke(app, ["scenario", "--config", str(path), "--out", str(Path(tmp) / "run")])
        if isinstance(result.exception, Computed):
            return
        one_error(result)
        assert not (Path(tmp) / "run").exists()
