"""The scenario end to end on real (scikit-learn digits) data: determinism, manifest, exact retrain."""

from __future__ import annotations

import json
from importlib.metadata import version
from pathlib import Path

import pytest
import torch

from unlearnleak.errors import ConfigError
from unlearnleak.experiments.config import load_config
from unlearnleak.pair import load_pair_folder
from unlearnleak.record import RunRecord
from unlearnleak.scenario import ScenarioConfig, build_scenario, finetune, pretrained_base, recorded_public
from unlearnleak.training import TrainConfig


def _config(**overrides: object) -> ScenarioConfig:
    base: dict = {"dataset": "digits", "model": "lenet", "model_kwargs": {}, "holdout": 400, "n_train": 64,
                  "pretrain": {"epochs": 6, "lr": 0.05, "momentum": 0.9, "batch_size": 64},
                  "finetune": {"epochs": 1, "lr": 1e-2, "batch_size": 16, "freeze_bn": True},
                  "forget": {"kind": "samples", "k": 3}, "unlearning": {"method": "exact"}}
    base.update(overrides)
    return ScenarioConfig.model_validate(base)


def test_same_seed_same_pair_and_cache_reuse() -> None:
    a, b = build_scenario(_config()), build_scenario(_config())
    for key in a.pair.original:
        assert torch.equal(a.pair.original[key], b.pair.original[key])
        assert torch.equal(a.pair.unlearned[key], b.pair.unlearned[key])
    assert torch.equal(a.ft_indices, b.ft_indices) and torch.equal(a.forget_positions, b.forget_positions)
    c = build_scenario(_config(seed=1))
    assert not torch.equal(a.ft_indices, c.ft_indices)


def test_exact_scenario_matches_finetune_on_retain_set(tmp_path: Path) -> None:
    cfg = _config()
    scn = build_scenario(cfg)
    spec, base = pretrained_base(cfg)
    keep = torch.ones(cfg.n_train, dtype=torch.bool)
    keep[scn.forget_positions] = False
    x, y = scn.train.x[scn.ft_indices], scn.train.y[scn.ft_indices]
    expected = finetune(spec, base, x, y, cfg.finetune, seed=cfg.seed, keep=keep)
    assert all(torch.equal(expected[k], scn.pair.unlearned[k]) for k in expected)
    assert torch.equal(scn.forget_x, scn.train.x[scn.forget_indices])
    assert scn.forget_positions.numel() == 3 and scn.knowledge.n_forget == 3 and scn.knowledge.n_train == 64
    # D_ft comes from the private pool only; the public rows (≥ holdout) trained θ0
    assert int(scn.ft_indices.max()) < cfg.holdout
    assert not set(scn.public_indices().tolist()) & set(scn.ft_indices.tolist())
    # the saved folder's run record rebuilds the same public rows (infer-label's own null pairs are made on them)
    rebuilt = recorded_public(RunRecord.load(scn.save(tmp_path / "pair"), ground_truth=False))
    assert torch.equal(rebuilt.x, scn.public.x) and torch.equal(rebuilt.y, scn.public.y)
    assert len(rebuilt) == cfg.holdout - cfg.n_train


def test_class_forget_set_takes_the_first_fraction_of_the_class() -> None:
    scn = build_scenario(_config(forget={"kind": "class", "class_id": 3, "fraction": 0.5},
                                 unlearning={"method": "gradient_ascent", "params": {"lr": 1e-3}}))
    y_ft = scn.train.y[scn.ft_indices]
    rows = torch.nonzero(y_ft == 3).flatten()
    assert torch.equal(scn.forget_positions, rows[: max(1, int(rows.numel() * 0.5))])
    assert (scn.forget_y == 3).all()


def test_saved_run_has_manifest_and_ground_truth(tmp_path: Path) -> None:
    scn = build_scenario(_config())
    scn.save(tmp_path)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert set(manifest) == {"format", "model"}  # the pair carries no ground truth, no provenance
    meta = json.loads((tmp_path / "record.json").read_text())
    assert meta["ft_indices"] == scn.ft_indices.tolist()
    assert meta["forget_indices"] == scn.forget_indices.tolist()
    assert {"original_test_accuracy", "unlearned_test_accuracy", "original_forget_accuracy"} <= set(meta["metrics"])
    assert meta["metrics"]["base_test_accuracy"] > 0.5  # six epochs on real digits already learn something
    assert meta["environment"]["versions"]["torch"] == version("torch")  # whichever the declared range installed
    assert meta["config"]["seed"] == 0
    pair, knowledge = load_pair_folder(tmp_path)
    assert knowledge.base is not None and knowledge.n_train == 64 and knowledge.unlearning == "exact"
    assert torch.equal(pair.unlearned[next(iter(pair.unlearned))], next(iter(scn.pair.unlearned.values())))
    assert (tmp_path / "ground_truth.safetensors").is_file()
    assert not list(tmp_path.glob("*.tmp"))


def test_config_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="n_train"):
        load_config(ScenarioConfig, None, ["n_train=5000", "holdout=100"])
    with pytest.raises(ConfigError, match="unknown unlearning method"):
        load_config(ScenarioConfig, None, ["unlearning.method=forgetful"])
    bad = tmp_path / "c.yaml"
    bad.write_text("pretrain:\n  epochz: 3\n")
    with pytest.raises(ConfigError, match="pretrain.epochz"):
        load_config(ScenarioConfig, bad)
    with pytest.raises(ConfigError, match="no CUDA"):
        load_config(ScenarioConfig, None, ["device=cuda"]) if not torch.cuda.is_available() else (
            _raise_cuda())
    with pytest.raises(ConfigError, match="holdout"):
        build_scenario(_config(holdout=5000, n_train=10))


def _raise_cuda() -> None:
    raise ConfigError("no CUDA (skipped: a GPU is present)")


def test_finetune_config_defaults_are_the_papers() -> None:
    cfg = ScenarioConfig()
    assert cfg.finetune == TrainConfig(epochs=1, lr=1e-3, momentum=0.0, weight_decay=0.0, batch_size=128,
                                       freeze_bn=True)


def test_pretrain_seed_shares_one_theta0_across_seeds(tmp_path) -> None:
    """Seeds draw D_ft and D_u; with pretrain_seed set, every seed starts from the same θ0 (the official s0)."""
    from unlearnleak.scenario import ScenarioConfig, pretrained_base
    from unlearnleak.training import TrainConfig

    def base(seed: int, pretrain_seed: int | None) -> dict:
        config = ScenarioConfig(dataset="digits", model="lenet", holdout=500, pretrain=TrainConfig(epochs=0),
                                seed=seed, pretrain_seed=pretrain_seed, cache_dir=str(tmp_path))
        return pretrained_base(config)[1]

    shared = [base(s, 0) for s in (0, 1, 2)]
    assert all(all(torch.equal(shared[0][k], other[k]) for k in shared[0]) for other in shared[1:])
    assert all(torch.equal(shared[0][k], base(0, None)[k]) for k in shared[0])  # None: θ0 seeded by `seed`
    own = base(1, None)
    assert any(not torch.equal(shared[0][k], own[k]) for k in own)


def test_parallel_cells_pretrain_a_shared_theta0_once(tmp_path, monkeypatch) -> None:
    """Two workers asking for the same θ0 at once: one trains it, the other waits for the lock and loads it."""
    import threading

    from unlearnleak import stages as stages_module
    from unlearnleak.scenario import ScenarioConfig, pretrained_base
    from unlearnleak.training import TrainConfig

    calls: list[int] = []
    gate = threading.Event()
    real_train = stages_module.train

    def slow_train(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(1)
        gate.wait(5)  # hold the lock until the second worker is surely waiting
        return real_train(*args, **kwargs)

    monkeypatch.setattr(stages_module, "train", slow_train)
    config = ScenarioConfig(dataset="digits", model="lenet", holdout=500, pretrain=TrainConfig(epochs=1),
                            cache_dir=str(tmp_path))
    results: list[dict] = []
    workers = [threading.Thread(target=lambda: results.append(pretrained_base(config)[1])) for _ in range(2)]
    for w in workers:
        w.start()
    workers[1].join(1.0)
    assert len(calls) == 1 and not results  # the second one is waiting, not training
    gate.set()
    for w in workers:
        w.join(30)
    assert len(calls) == 1 and len(results) == 2
    assert all(torch.equal(results[0][k], results[1][k]) for k in results[0])
