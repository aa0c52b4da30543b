"""The CLI as a user runs it: exit codes, clear errors, files written."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from unlearnleak.cli import app

runner = CliRunner()

DIGITS = ["--dataset", "digits", "--model", "lenet", "--set", "model_kwargs={}", "--set", "holdout=300",
          "--set", "pretrain.epochs=1", "--n-train", "32", "--k", "2"]


def test_scenario_writes_a_run_folder(tmp_path: Path) -> None:
    result = runner.invoke(app, ["scenario", *DIGITS, "--method", "exact", "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    assert "θ_u (unlearned)" in result.output
    knowledge = json.loads((tmp_path / "run" / "knowledge.json").read_text())
    assert knowledge["n_train"] == 32 and knowledge["n_forget"] == 2 and knowledge["unlearning"] == "exact"
    record = json.loads((tmp_path / "run" / "record.json").read_text())
    assert record["config"]["unlearning"]["method"] == "exact"
    assert {p.name for p in (tmp_path / "run").iterdir()} == {
        "weights.safetensors", "manifest.json", "knowledge.json", "base.safetensors", "record.json",
        "config.json", "ground_truth.safetensors"}


def test_bad_input_exits_2_with_a_clear_message(tmp_path: Path) -> None:
    cases = [
        (["scenario", *DIGITS, "--method", "forgetful"], "unknown unlearning method"),
        (["scenario", "--dataset", "nosuchset", "--set", "model=lenet"], "unknown dataset 'nosuchset'"),
        (["scenario", "--config", str(tmp_path / "missing.yaml")], "does not exist"),
        (["scenario", *DIGITS, "--set", "pretrain.epochz=1"], "pretrain.epochz"),
        (["scenario", "--dataset", "cifar10", "--data-dir", str(tmp_path)], "cifar-10-batches-py"),
        (["scenario", *DIGITS, "--device", "tpu"], "device"),
    ]
    for args, message in cases:
        result = runner.invoke(app, [*args, "--out", str(tmp_path / "x")])
        assert result.exit_code == 2, (args, result.output)
        assert message in result.output, (args, result.output)
        assert "Traceback" not in result.output
    assert not (tmp_path / "x").exists()  # nothing half-written


def test_version() -> None:
    """Whatever torch the declared range installed: the version the package metadata says, and ours."""
    from importlib.metadata import version

    from unlearnleak import __version__

    result = runner.invoke(app, ["version", "--verbose"])
    assert result.exit_code == 0, result.output
    assert f"unlearnleak {__version__}" in result.output and f"torch {version('torch')}" in result.output


def test_threads_option_sets_torch_threads_and_rejects_zero() -> None:
    import torch

    before = torch.get_num_threads()
    try:
        assert runner.invoke(app, ["--threads", "1", "version"]).exit_code == 0
        assert torch.get_num_threads() == 1
        bad = runner.invoke(app, ["--threads", "0", "version"])
        assert bad.exit_code == 2 and "--threads" in bad.output
    finally:
        torch.set_num_threads(before)
