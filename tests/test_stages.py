"""The scenario's cached stages θ0 → θ → θ_u on real (scikit-learn digits) data: hits, misses, refused entries,
bit-identical weights, and a sweep over methods that fine-tunes θ once."""

from __future__ import annotations

import json
import shutil
import types
from pathlib import Path

import pytest
import torch

from unlearnleak import stages
from unlearnleak.scenario import Scenario, ScenarioConfig, build_scenario, finetune, pretrained_base, server_view
from unlearnleak.unlearning.sisa import SisaParams, affected_shards, member_state, shard_pair


def _config(cache: Path, **overrides: object) -> ScenarioConfig:
    base: dict = {"dataset": "digits", "model": "lenet", "model_kwargs": {}, "holdout": 400, "n_train": 64,
                  "pretrain": {"epochs": 2, "lr": 0.05, "momentum": 0.9, "batch_size": 64},
                  "finetune": {"epochs": 1, "lr": 1e-2, "batch_size": 16, "freeze_bn": True},
                  "forget": {"kind": "samples", "positions": [3]}, "unlearning": {"method": "gradient_ascent"},
                  "cache_dir": str(cache)}
    base.update(overrides)
    return ScenarioConfig.model_validate(base)


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _cached(scn: Scenario) -> dict[str, bool]:
    return {name: bool(stage["cached"]) for name, stage in scn.stages.items()}


def _entry(cache: Path, stage: str) -> Path:
    (path,) = (cache / stages.FOLDERS[stage]).glob("*.safetensors")  # type: ignore[index]
    return path


def test_a_second_build_reads_every_stage_back_bit_for_bit(tmp_path: Path) -> None:
    cold = build_scenario(_config(tmp_path))
    warm = build_scenario(_config(tmp_path))
    assert _cached(cold) == {"base": False, "original": False, "unlearned": False}
    assert _cached(warm) == {"base": True, "original": True, "unlearned": True}
    assert _same(cold.pair.original, warm.pair.original) and _same(cold.pair.unlearned, warm.pair.unlearned)
    assert warm.record.metrics == cold.record.metrics
    # the record says which stages came from the cache, with the cost measured when they were computed
    saved = json.loads((warm.save(tmp_path / "run") / "record.json").read_text())
    assert saved["stages"]["unlearned"]["cached"] is True
    assert saved["stages"]["unlearned"]["sample_gradients"] == cold.stages["unlearned"]["sample_gradients"] > 0
    assert saved["stages"]["original"]["key"] == cold.stages["original"]["key"]


def test_cached_stages_equal_a_recomputation_from_scratch(tmp_path: Path) -> None:
    """Same seed, same numbers: what the cache gives equals what an empty cache computes, and θ equals the plain
    fine-tune of θ0 on D_ft."""
    first = build_scenario(_config(tmp_path / "a"))
    again = build_scenario(_config(tmp_path / "a"))
    fresh = build_scenario(_config(tmp_path / "b"))
    assert _cached(again)["unlearned"] and not _cached(fresh)["unlearned"]
    for other in (again, fresh):
        assert _same(first.pair.original, other.pair.original) and _same(first.pair.unlearned, other.pair.unlearned)
        assert _same(first.knowledge.base or {}, other.knowledge.base or {})
    config = _config(tmp_path / "a")
    spec, base = pretrained_base(config)
    x, y = first.train.x[first.ft_indices], first.train.y[first.ft_indices]
    assert _same(finetune(spec, base, x, y, config.finetune, seed=config.seed), again.pair.original)


def test_a_sweep_over_methods_and_forget_sets_fine_tunes_theta_once(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real = stages.finetune

    def counted(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(stages, "finetune", counted)
    built = [build_scenario(_config(tmp_path, unlearning={"method": method}, forget={"positions": [p]}))
             for method in ("gradient_ascent", "exact", "first_order") for p in (3, 7)]
    assert len(calls) == 1
    assert [_cached(s)["original"] for s in built] == [False] + [True] * 5
    assert not any(_cached(s)["unlearned"] for s in built)  # each (method, forget set) is its own θ_u
    assert len({s.stages["unlearned"]["key"] for s in built}) == 6
    assert all(_same(built[0].pair.original, s.pair.original) for s in built)


def test_a_defense_or_attack_sweep_unlearns_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Cells that differ only after θ_u (defense, attack) share the scenario's stages entirely."""
    from unlearnleak.experiments.pipeline import prepare_cell
    from unlearnleak.experiments.schema import load_experiment

    calls: list[str] = []
    real = stages.unlearn

    def counted(method, ctx):  # type: ignore[no-untyped-def]
        calls.append(method)
        return real(method, ctx)

    monkeypatch.setattr(stages, "unlearn", counted)
    scenario = _config(tmp_path).model_dump(mode="json")
    scenario.pop("seed"), scenario.pop("device")
    for sigma in (0.0, 0.01, 0.1):
        config = load_experiment(None, [f"scenario={json.dumps(scenario)}", "defense.name=noise",
                                        f"defense.params.sigma={sigma}"])
        prepare_cell(config)
    assert calls == ["gradient_ascent"]


@pytest.mark.parametrize("damage", ["flip a byte", "truncate", "another key"])
def test_a_corrupt_or_foreign_entry_is_refused_and_recomputed(tmp_path: Path, damage: str) -> None:
    first = build_scenario(_config(tmp_path))
    path = _entry(tmp_path, "unlearned")
    if damage == "flip a byte":
        data = bytearray(path.read_bytes())
        data[-5] ^= 0xFF  # inside the last tensor: safetensors still parses it, the checksum does not match
        path.write_bytes(bytes(data))
    elif damage == "truncate":
        path.write_bytes(path.read_bytes()[:100])
    else:  # another forget set's θ_u under this entry's name: a readable file with the wrong key
        other = build_scenario(_config(tmp_path, forget={"positions": [7]}))
        other_path = next(p for p in (tmp_path / "unlearned").glob("*.safetensors") if p != path)
        assert other.stages["unlearned"]["key"] in other_path.name
        shutil.copyfile(other_path, path)
    again = build_scenario(_config(tmp_path))
    record = again.stages["unlearned"]
    assert record["cached"] is False
    reason = {"flip a byte": "checksum", "truncate": "cannot be read", "another key": "another key"}[damage]
    assert reason in record["refused"]
    assert _same(first.pair.unlearned, again.pair.unlearned)
    assert _cached(build_scenario(_config(tmp_path)))["unlearned"]  # the recomputed entry is good again


def test_a_changed_input_is_a_new_entry(tmp_path: Path) -> None:
    a = build_scenario(_config(tmp_path))
    b = build_scenario(_config(tmp_path, finetune={"epochs": 1, "lr": 2e-2, "batch_size": 16, "freeze_bn": True}))
    c = build_scenario(_config(tmp_path, unlearning={"method": "gradient_ascent", "params": {"lr": 1e-2}}))
    d = build_scenario(_config(tmp_path, unlearning={"method": "gradient_ascent", "params": {"lr": 1e-3}}))
    assert _cached(b) == {"base": True, "original": False, "unlearned": False}
    assert _cached(c) == {"base": True, "original": True, "unlearned": False}
    assert _cached(d)["unlearned"]  # lr 1e-3 is the default: the validated parameters name the entry
    assert d.stages["unlearned"]["key"] == a.stages["unlearned"]["key"]
    assert not _same(a.pair.original, b.pair.original)


def test_a_method_whose_code_cannot_be_read_is_never_cached() -> None:
    module = types.ModuleType("made_at_runtime")
    exec("def method(ctx):\n    return {}\n", module.__dict__)  # a function without a source file
    assert stages._code(module.method) is None
    assert stages._code(stages.finetune) is not None


def test_sisa_trains_its_own_theta_cached_like_any_other(tmp_path: Path) -> None:
    """SISA's ensemble is its θ (a stage of its own, shared by every forget set); the server attacks the member
    whose weights moved, which is the shard that held the deleted row."""
    params = {"shards": 2, "slices": 2, "lr": 0.05}
    a = build_scenario(_config(tmp_path, unlearning={"method": "sisa", "params": params}))
    b = build_scenario(_config(tmp_path, unlearning={"method": "sisa", "params": params}, forget={"positions": [7]}))
    assert a.pair.spec.name == "sisa_ensemble" and a.stages["original"]["trained_by"] == "sisa"
    assert _cached(b)["original"] and not _cached(b)["unlearned"]
    assert _same(a.pair.original, b.pair.original)
    assert a.knowledge.base is not None and set(a.knowledge.base) == set(a.pair.original)
    pair, knowledge, attacked = server_view(a.pair, a.knowledge)
    from unlearnleak.unlearning import UnlearningContext

    mask = torch.zeros(64, dtype=torch.bool)
    mask[3] = True
    ctx = UnlearningContext(spec=a.pair.spec, original=a.pair.original, base=a.knowledge.base,
                            x_train=a.train.x[a.ft_indices], y_train=a.train.y[a.ft_indices], forget_mask=mask,
                            finetune=a.config.finetune, seed=0)
    (shard,) = affected_shards(ctx, SisaParams(**params))
    expected = shard_pair(a.pair.spec, a.pair.original, a.pair.unlearned, shard)
    assert attacked is not None and attacked.startswith(f"member {shard} ")
    assert pair.spec == expected[0] and _same(pair.original, expected[1]) and _same(pair.unlearned, expected[2])
    assert knowledge.base is not None and _same(knowledge.base, member_state(a.knowledge.base, shard))
    assert knowledge.unlearning == "approximate" and knowledge.n_train is None
    assert server_view(b.pair, b.knowledge)[2] is not None
    plain = build_scenario(_config(tmp_path))
    assert server_view(plain.pair, plain.knowledge)[0] is plain.pair


def test_a_sisa_cell_attacks_the_member_that_moved(tmp_path: Path) -> None:
    """Through the pipeline (what `run` and `recover` call), the server's attack on a SISA scenario targets the
    retrained member, and the row says so; a plain scenario's row names no member."""
    from unlearnleak.experiments.pipeline import execute_cell
    from unlearnleak.experiments.schema import load_experiment

    rows = {}
    for method, params in (("sisa", {"shards": 2, "slices": 2, "lr": 0.05}), ("gradient_ascent", {})):
        scenario = _config(tmp_path, unlearning={"method": method, "params": params}).model_dump(mode="json")
        scenario.pop("seed"), scenario.pop("device")
        config = load_experiment(None, [f"scenario={json.dumps(scenario)}", "metrics=[psnr]",
                                        'attacks.feature_recovery={"preset": "best", "iterations": 3}'])
        result = execute_cell(config, tmp_path / method, attacks=("feature_recovery",))
        rows[method] = result.row()["feature_recovery"]
    assert rows["sisa"]["attacked"].startswith("member ") and rows["sisa"]["mode"] == "approximate"
    assert "attacked" not in rows["gradient_ascent"]


def test_folders_and_theta0_entries_written_before_the_stages_still_load(tmp_path: Path) -> None:
    """A run folder without `stages` in its record loads; a θ0 entry in the earlier layout (its key and its
    seconds as metadata, no checksum) is used as it is, not pretrained again."""
    from safetensors.torch import save_file

    from unlearnleak.record import RunRecord

    first = build_scenario(_config(tmp_path / "cache"))
    folder = first.save(tmp_path / "run")
    data = json.loads((folder / "record.json").read_text())
    del data["stages"]
    (folder / "record.json").write_text(json.dumps(data))
    old = RunRecord.load(folder)
    assert old is not None and old.stages == {} and old.forget_indices == first.record.forget_indices

    path = _entry(tmp_path / "cache", "base")
    meta = {"key": json.dumps(json.loads(_stored_key(path))), "seconds": "1.0"}  # unsorted, as it was written
    save_file(dict(first.knowledge.base or {}), str(path), meta)  # the earlier writer's layout
    again = build_scenario(_config(tmp_path / "cache"))
    assert again.stages["base"]["cached"] is True and again.stages["base"]["seconds"] == "1.0"
    assert _same(again.pair.unlearned, first.pair.unlearned)


def _stored_key(path: Path) -> str:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        return (handle.metadata() or {})["key"]


@pytest.mark.parametrize("method", ["gradient_ascent", "exact"])
def test_theta_stages_give_the_weights_of_the_direct_calls(tmp_path: Path, method: str) -> None:
    """Same seed, same numbers: (θ, θ_u) from the stages — computed, then read back — are bit-identical to
    fine-tuning θ0 and calling the method directly, as the benchmarks did before they called the stages."""
    from unlearnleak.scenario import base_of
    from unlearnleak.unlearning import UnlearningContext, unlearn

    config = _config(tmp_path)
    scn = build_scenario(config)
    train = scn.train
    base = base_of(config, train)
    rows = torch.randperm(config.holdout, generator=torch.Generator().manual_seed(123))[:40]  # a benchmark's draw
    x, y, positions = train.x[rows], train.y[rows], torch.tensor([5, 11])
    mask = torch.zeros(40, dtype=torch.bool)
    mask[positions] = True
    direct_theta = finetune(base.spec, base.state, x, y, config.finetune, seed=7)
    ctx = UnlearningContext(spec=base.spec, original=direct_theta, base=base.state, x_train=x, y_train=y,
                            forget_mask=mask, finetune=config.finetune, seed=7)
    direct_unlearned = unlearn(method, ctx)
    for expect_cached in (False, True):
        theta, unlearned = stages.theta_stages(tmp_path, base, x, y, rows, positions, config.finetune, method,
                                               seed=7)
        assert theta.cached is unlearned.cached is expect_cached
        assert _same(theta.state, direct_theta) and _same(unlearned.state, direct_unlearned)
    assert scn.stages["original"]["key"] != theta.key  # another D_ft: another entry
