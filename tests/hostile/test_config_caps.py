"""Hostile experiment configs (`run`, `sweep`): checked whole before any compute.

YAML caps (size, depth, aliases counted as expanded), the grid's size, seeds, registry names, non-finite
numbers, the data, the model's fit and the cache folder: each refused once, up front, as one `error:` line with
exit 2, and no run folder (or any sibling) written.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from runfolder_cells import CELL_FN
from typer.testing import CliRunner

from cli_checks import one_error
from unlearnleak.cli import app
from unlearnleak.experiments.config import MAX_YAML_BYTES

runner = CliRunner()


def alias_bomb(indent: str) -> str:
    """Nine levels of ten aliases each: 10⁹ values once expanded, a few hundred bytes of YAML."""
    lines = [f"{indent}l0: &l0 [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]"]
    for i in range(1, 9):
        lines.append(f"{indent}l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 10) + "]")
    return "\n".join(lines) + "\n"


def refused(tmp_path: Path, args: list[str], *needles: str) -> str:
    """Run ``args`` (the run folder is tmp_path/out): one error line, exit 2, nothing written beside it."""
    before = sorted(p.name for p in tmp_path.iterdir())
    line = one_error(runner.invoke(app, [*args, "--out", str(tmp_path / "out")]), *needles)
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no out/, no hidden sibling
    return line


def config(tmp_path: Path, text: str, name: str = "experiment.yaml") -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


# ----- YAML ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, args", [
    ("scenario:\n  holdout: 50\nquick:\n" + alias_bomb("  "), ["--quick"]),
    ("scenario:\n  model_kwargs:\n" + alias_bomb("    "), []),
    ("description: x\nsweep:\n" + alias_bomb("  "), []),
])
def test_an_alias_bomb_is_refused_before_it_expands(tmp_path: Path, text: str, args: list[str]) -> None:
    started = time.monotonic()
    refused(tmp_path, ["run", config(tmp_path, text), *args], "expands to more than 100000 values", "aliases")
    assert time.monotonic() - started < 60  # expanding it would take hours and all memory


def test_an_alias_bomb_in_a_set_or_grid_value_is_refused(tmp_path: Path) -> None:
    bomb = "{" + alias_bomb("").replace("\n", ", ").rstrip(", ") + "}"
    path = config(tmp_path, "scenario:\n  holdout: 50\n")
    refused(tmp_path, ["run", path, "--set", f"scenario.model_kwargs={bomb}"], "--set", "expands to more than")
    refused(tmp_path, ["sweep", path, "--grid", f"scenario.model_kwargs=[{bomb}]"], "--grid", "expands to more")


@pytest.mark.parametrize("text, needles", [
    ("a: &a [*a]\n", ["recursive"]),
    ("scenario:\n  model_kwargs:\n    x: " + "[" * 40 + "]" * 40 + "\n", ["more than 32 levels deep"]),
    ("seeds: [" + "7" * 5000 + "]\n", ["4300 digits"]),
    ("description: '" + "x" * (MAX_YAML_BYTES + 10) + "'\n", ["larger than 256 KiB"]),
    ("!!python/object/apply:os.system ['touch PWNED']\n", ["not valid YAML", "python/object/apply"]),
])
def test_yaml_over_a_cap_or_with_python_tags_is_refused(tmp_path: Path, text: str, needles: list[str]) -> None:
    refused(tmp_path, ["run", config(tmp_path, text)], *needles)
    assert not (tmp_path / "PWNED").exists()


# ----- the grid ----------------------------------------------------------------------------------------------


def test_a_million_cell_grid_is_refused_at_once(tmp_path: Path) -> None:
    ten = "[" + ", ".join(str(i) for i in range(1, 11)) + "]"
    text = (f"seeds: {ten}\nsweep:\n  scenario.n_train: {ten}\n  attacks.feature_recovery.iterations: {ten}\n"
            f"  attacks.feature_recovery.restarts: {ten}\n  scenario.pretrain.epochs: {ten}\n"
            f"  scenario.finetune.epochs: {ten}\n")
    started = time.monotonic()
    refused(tmp_path, ["run", config(tmp_path, text)], "1,000,000 cells", "10 × 10 × 10 × 10 × 10 values × 10 seeds",
            "split the sweep")
    small = config(tmp_path, f"seeds: {ten}\nsweep:\n  scenario.n_train: {ten}\n", "small.yaml")
    refused(tmp_path, ["sweep", small, "--grid", f"scenario.pretrain.epochs={ten}", "--grid",
                       f"scenario.finetune.epochs={ten}"], "--grid", "10,000 cells")
    assert time.monotonic() - started < 60


# ----- values ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, needles", [
    ("seeds: [true]\n", ["seeds.0", "valid integer", "True"]),
    ("seeds: [9223372036854775807]\n", ["seeds.0", "less than 9223372036854775807"]),
    ("seeds: [-1]\n", ["seeds.0", "greater than or equal to 0"]),
    ("seeds: ['3']\n", ["seeds.0", "valid integer"]),
    ("scenario:\n  dataset: imagenet\n", ["scenario.dataset", "unknown dataset 'imagenet'", "cifar10"]),
    ("scenario:\n  model: vgg99\n", ["scenario.model", "unknown model 'vgg99'", "convnet"]),
    ("scenario:\n  test_split: validation\n", ["scenario.test_split", "no split 'validation'"]),
    ("defense:\n  name: noise\n  params: {sigma: .inf}\n", ["defense.params.sigma", "not a finite number"]),
    ("scenario:\n  unlearning:\n    method: gradient_ascent\n    params: {lr: .inf}\n",
     ["scenario.unlearning.params.lr", "not a finite number"]),
    ("attacks:\n  feature_recovery:\n    overrides: {total_variation: -.inf}\n", ["total_variation", "finite"]),
])
def test_bad_values_are_refused_at_load(tmp_path: Path, text: str, needles: list[str]) -> None:
    refused(tmp_path, ["run", config(tmp_path, text)], *needles)


def test_a_grid_key_given_twice_is_refused(tmp_path: Path) -> None:
    path = config(tmp_path, "scenario:\n  holdout: 50\n")
    refused(tmp_path, ["sweep", path, "--grid", "scenario.n_train=[4]", "--grid", "scenario.n_train=[6]"],
            "--grid scenario.n_train is given twice")


def test_list_takes_no_other_argument(tmp_path: Path) -> None:
    line = one_error(runner.invoke(app, ["run", "--list", "--out", str(tmp_path / "out")]), "--list", "--out")
    assert "runs nothing" in line and not (tmp_path / "out").exists()


# ----- data, model, cache: once, before any cell -----------------------------------------------------------

DIGITS = "scenario:\n  dataset: digits\n  model: mlp\n  holdout: 200\n  n_train: 8\n"


@pytest.mark.parametrize("text, needles", [
    ("scenario:\n  data_dir: {tmp}/no-data\n  holdout: 50\n  n_train: 4\nseeds: [0, 1, 2]\n"
     "sweep:\n  scenario.unlearning.method: [exact, gradient_ascent]\n",
     ["cell (scenario.unlearning.method='exact', seed=0)", "missing file", "unlearnleak data download cifar10"]),
    (DIGITS + "  cache_dir: {tmp}/experiment.yaml\n", ["cache_dir", "is a file"]),
    (DIGITS + "  forget: {{kind: class, class_id: 55}}\n", ["forget.class_id=55", "classes 0..9"]),
    (DIGITS + "  holdout: 5000\n", ["holdout=5000", "leaves no public pretraining rows"]),
    (DIGITS.replace("mlp", "convnet"), ["does not fit 'digits' inputs of shape (1, 8, 8)"]),
])
def test_what_would_fail_every_cell_fails_once_before_any(tmp_path: Path, text: str, needles: list[str]) -> None:
    """The default cell function: data, model fit, forget set and cache folder are checked in the driver."""
    path = config(tmp_path, text.format(tmp=tmp_path))
    refused(tmp_path, ["run", path, "--workers", "1"], *needles)


def test_a_custom_cell_function_is_not_preflighted(tmp_path: Path) -> None:
    """--cell-fn replaces the pipeline, so the pipeline's data checks do not apply to it (its cells run)."""
    path = config(tmp_path, f"scenario:\n  data_dir: {tmp_path}/no-data\n  holdout: 50\n  n_train: 4\n")
    result = runner.invoke(app, ["run", path, "--out", str(tmp_path / "out"), "--cell-fn", CELL_FN])
    assert result.exit_code == 0, result.output
