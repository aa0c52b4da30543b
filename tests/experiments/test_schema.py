"""The experiment config: errors that name the key, --quick and --set, sweep expansion, cell hashes, shipped configs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from unlearnleak.errors import ConfigError
from unlearnleak.experiments.schema import (
    cell_hash,
    expand_cells,
    load_experiment,
    resolve_config_path,
    shipped_configs,
)

SMALL = """
name: small
scenario: {dataset: digits, model: lenet, model_kwargs: {}, holdout: 500, n_train: 32}
seeds: [0, 1]
sweep:
  scenario.forget.k: [1, 4]
quick:
  scenario.pretrain.epochs: 1
  seeds: [0]
"""


@pytest.fixture
def small(tmp_path: Path) -> Path:
    path = tmp_path / "small.yaml"
    path.write_text(SMALL, encoding="utf-8")
    return path


def _error(path: Path | None, sets: list[str], quick: bool = False) -> str:
    with pytest.raises(ConfigError) as info:
        load_experiment(path, sets, quick=quick)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_unknown_key_is_named_with_the_known_ones(small: Path) -> None:
    message = _error(small, ["scenario.n_trian=8"])
    assert "scenario.n_trian: unknown key" in message and "n_train" in message


def test_wrong_type_is_named(small: Path) -> None:
    message = _error(small, ["scenario.n_train=many"])
    assert "scenario.n_train" in message and "'many'" in message
    assert "attacks.feature_recovery.iterations" in _error(small, ["attacks.feature_recovery.iterations=[1]"])


def test_unknown_key_in_a_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("attacks: {label_inference: {generatr: zoo}}\n", encoding="utf-8")
    message = _error(path, [])
    assert "attacks.label_inference.generatr: unknown key" in message and str(path) in message


def test_bad_sweep_value_fails_at_load_naming_the_cell(small: Path) -> None:
    message = _error(small, ["sweep={scenario.forget.k: [1, 40]}"])
    assert "scenario.forget.k=40" in message and "n_train=32" in message


def test_seed_and_device_belong_to_the_experiment(small: Path) -> None:
    assert "top-level `seeds`" in _error(small, ["scenario.seed=3"])
    assert "top-level `device`" in _error(small, ["scenario.device=cpu"])
    assert "device" in _error(small, ["device=tpu"])


def test_a_cuda_config_loads_anywhere_and_fails_when_it_runs(small: Path) -> None:
    config = load_experiment(small, ["device=cuda"])  # valid on any machine
    cell = expand_cells(config)[0]
    if torch.cuda.is_available():
        assert cell.config.scenario_for_run().device == "cuda"
    else:
        with pytest.raises(ConfigError, match="no CUDA GPU"):
            cell.config.scenario_for_run()


def test_quick_then_set_precedence(small: Path) -> None:
    assert load_experiment(small).scenario.pretrain.epochs == 30
    quick = load_experiment(small, quick=True)
    assert quick.scenario.pretrain.epochs == 1 and quick.seeds == [0]
    assert quick.scenario.pretrain.lr == 0.1  # the rest of the section keeps its defaults
    assert load_experiment(small, ["scenario.pretrain.epochs=2"], quick=True).scenario.pretrain.epochs == 2


def test_quick_without_a_quick_section_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "plain.yaml"
    path.write_text("name: plain\n", encoding="utf-8")
    assert "no `quick:` section" in _error(path, [], quick=True)


def test_grid_times_seeds_each_cell_validated(small: Path) -> None:
    cells = expand_cells(load_experiment(small))
    assert [c.params for c in cells] == [
        {"scenario.forget.k": 1, "seed": 0}, {"scenario.forget.k": 1, "seed": 1},
        {"scenario.forget.k": 4, "seed": 0}, {"scenario.forget.k": 4, "seed": 1}]
    assert [c.config.scenario.forget.k for c in cells] == [1, 1, 4, 4]
    assert [c.config.scenario_for_run().seed for c in cells] == [0, 1, 0, 1]
    assert all(c.config.sweep == {} and len(c.config.seeds) == 1 for c in cells)
    assert len({c.hash for c in cells}) == 4


def test_zipped_sweep_keys_are_set_together(tmp_path: Path) -> None:
    path = tmp_path / "zip.yaml"
    path.write_text('sweep: {"scenario.model,scenario.model_kwargs": [[lenet, {}], [convnet, {width: 8}]]}\n',
                    encoding="utf-8")
    cells = expand_cells(load_experiment(path))
    assert [(c.config.scenario.model, c.config.scenario.model_kwargs) for c in cells] == [
        ("lenet", {}), ("convnet", {"width": 8})]
    path.write_text('sweep: {"scenario.model,scenario.model_kwargs": [lenet, convnet]}\n', encoding="utf-8")
    assert "each value must be a list of 2 values" in _error(path, [])


def test_hash_is_stable_and_ignores_names_but_not_numbers(small: Path) -> None:
    a = expand_cells(load_experiment(small))[0]
    renamed = expand_cells(load_experiment(small, ["name=other", "description=x"]))[0]
    changed = expand_cells(load_experiment(small, ["scenario.finetune.lr=0.01"]))[0]
    assert a.hash == renamed.hash == cell_hash(a.config)
    assert len(a.hash) == 16 and a.hash != changed.hash


@pytest.mark.parametrize("name", shipped_configs())
def test_every_shipped_config_loads_in_both_variants(name: str) -> None:
    full, quick = load_experiment(name), load_experiment(name, quick=True)
    assert full.description and full.expected_runtime
    assert 0 < len(expand_cells(quick)) <= len(expand_cells(full))


def test_paper_configs_cover_the_issue_list() -> None:
    names = set(shipped_configs())
    for needed in ("paper/fig3_cifar10", "paper/fig3_cifar100", "paper/fig3_stl10", "paper/fig4_probe_changes",
                   "paper/fig5_n8", "paper/label_inference_pu", "paper/ablation_k", "paper/ablation_n",
                   "paper/architectures", "paper/medical_retinamnist", "paper/medical_breast_cancer",
                   "paper/financial_credit", "paper/defense_noise", "paper/defense_prune",
                   "paper/defense_finetune", "paper/unlearning_methods"):
        assert needed in names


def test_missing_config_names_the_shipped_ones() -> None:
    with pytest.raises(ConfigError, match="paper/ablation_k.*unlearnleak run --list"):
        resolve_config_path("paper/no_such_experiment")


def test_sweeping_the_model_alone_gives_each_model_its_default_kwargs(tmp_path: Path) -> None:
    path = tmp_path / "models.yaml"
    path.write_text("scenario: {model: lenet}\nsweep: {scenario.model: [convnet, lenet]}\n", encoding="utf-8")
    assert load_experiment(path).scenario.model_kwargs == {}  # lenet: no width of the default convnet
    cells = expand_cells(load_experiment(path))
    assert [c.config.scenario.model_kwargs for c in cells] == [{"width": 16}, {}]
