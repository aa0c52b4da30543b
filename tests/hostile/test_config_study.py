"""Hostile study configs (`study methods|defenses`): every option applies or is refused, every value is checked
before any training — one `error:` line, exit 2, no output folder (not even a hidden staged one).

The data-dependent checks use scikit-learn's digits (shipped with it: no files, no download).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from cli_checks import one_error
from unlearnleak.cli import app

runner = CliRunner()
DIGITS = ["--set", "setting.dataset=digits", "--set", "setting.model=mlp", "--set", "setting.holdout=500",
          "--set", "setting.n_label=100"]


def refused(tmp_path: Path, args: list[str], *needles: str) -> str:
    before = sorted(p.name for p in tmp_path.iterdir())
    line = one_error(runner.invoke(app, ["study", *args, "--out", str(tmp_path / "out")]), *needles)
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    return line


@pytest.mark.parametrize("sets, needles", [
    (["sweeps={noise: [0.0, .inf]}"], ["sweeps.noise.1", "finite number"]),
    (["sweeps={finetune: [0, 0.5]}"], ["defense 'finetune'", "epochs", "fractional part"]),
    (["sweeps={noise: [0.01, 0.01]}"], ["sweeps.noise", "repeats"]),
    (["sweeps={}"], ["sweeps", "at least 1"]),
    (["sweeps={noise: []}"], ["sweeps.noise lists no strengths"]),
    (["sweeps={nope: [1]}"], ["unknown defense 'nope'"]),
    (["defense_params={noise: {relative: false}, prune: {}}", "sweeps={noise: [0.1]}"], ["prune", "no sweep"]),
    (["method_params={lr: .inf}"], ["method_params.lr", "finite"]),
])
def test_defenses_study_values(tmp_path: Path, sets: list[str], needles: list[str]) -> None:
    args = ["defenses"] + [part for s in sets for part in ("--set", s)]
    refused(tmp_path, args, *needles)


@pytest.mark.parametrize("sets, needles", [
    (["methods={}"], ["methods", "at least 1"]),
    (["methods={exact: {}, nope: {}}"], ["unknown unlearning method 'nope'"]),
    (["methods={gradient_ascent: {lr: .inf}}"], ["methods.gradient_ascent.lr", "finite"]),
])
def test_methods_study_values(tmp_path: Path, sets: list[str], needles: list[str]) -> None:
    refused(tmp_path, ["methods"] + [part for s in sets for part in ("--set", s)], *needles)


@pytest.mark.parametrize("study", ["methods", "defenses"])
@pytest.mark.parametrize("sets, needles", [
    (["setting.recovery_positions=[8, 8]"], ["setting.recovery_positions", "repeats"]),
    (["setting.recovery_positions=[]"], ["setting.recovery_positions", "at least 1"]),
    (["setting.recovery_positions=[40]"], ["recovery_positions [40]", "n_recovery=32"]),
    (["setting.label_classes=[3, 3]"], ["setting.label_classes", "repeats"]),
    (["setting.label_classes=[]"], ["setting.label_classes", "at least 1"]),
    (["setting.label_classes=[true]"], ["setting.label_classes.0", "valid integer"]),
    (["setting.seed=true"], ["setting.seed", "valid integer"]),
    (["setting.n_label=5000"], ["n_label=5000 exceeds the private pool holdout=4000"]),
    (["setting.dataset=imagenet"], ["setting.dataset", "unknown dataset 'imagenet'"]),
    (["setting.dataset=embedded_cifar10"], ["setting.dataset", "no train split"]),
    (["setting.model=vgg99"], ["setting.model", "unknown model 'vgg99'"]),
    (["setting.device=tpu"], ["setting.device", "'cpu', 'cuda'"]),
    (["attack.preset=nope"], ["attack.preset", "unknown inversion preset 'nope'"]),
    (["attack.generator=nope"], ["attack.generator", "nope"]),
    (["attack.iterations=0"], ["attack.iterations"]),
    (["setting.label_fraction=.nan"], ["setting.label_fraction"]),
])
def test_setting_and_attack_values(tmp_path: Path, study: str, sets: list[str], needles: list[str]) -> None:
    refused(tmp_path, [study] + [part for s in sets for part in ("--set", s)], *needles)


@pytest.mark.parametrize("study", ["methods", "defenses"])
@pytest.mark.parametrize("sets, needles", [
    (["setting.label_classes=[3, 55]"], ["setting.label_classes [55]", "classes 0..9"]),
    (["setting.model=convnet"], ["does not fit 'digits'"]),
    (["setting.cache_dir={tmp}/file"], ["cache_dir", "is a file"]),
    (["setting.holdout=5000", "setting.n_label=100"], ["holdout=5000", "no public pretraining rows"]),
])
def test_data_dependent_values_before_training(tmp_path: Path, study: str, sets: list[str],
                                               needles: list[str]) -> None:
    (tmp_path / "file").write_text("not a folder")
    args = [study, *DIGITS] + [part for s in sets for part in ("--set", s.format(tmp=tmp_path))]
    refused(tmp_path, args, *needles)


def test_missing_data_is_one_line_before_anything(tmp_path: Path) -> None:
    refused(tmp_path, ["methods", "--data-dir", str(tmp_path / "no-data")], "missing file", "data download")


def test_device_and_data_dir_flags_apply_or_are_refused(tmp_path: Path) -> None:
    """--device is no longer a default that overrides the config's device; given twice it is refused."""
    refused(tmp_path, ["methods", "--device", "cpu", "--set", "setting.device=cpu"], "--device", "give it once")
    refused(tmp_path, ["methods", "--data-dir", "x", "--set", "setting.data_dir=y"], "--data-dir", "give it once")
    if not torch.cuda.is_available():
        config = tmp_path / "study.yaml"
        config.write_text("setting:\n  device: cuda\n", encoding="utf-8")
        refused(tmp_path, ["methods", "--config", str(config)], "cuda", "no CUDA GPU")
        refused(tmp_path, ["defenses", "--device", "cuda"], "cuda", "no CUDA GPU")
