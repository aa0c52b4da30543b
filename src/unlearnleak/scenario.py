"""The paper's scenario (PAPER.md §2.3, §3, §5): pretrain θ0, fine-tune θ on D_ft, unlearn D_u → ModelPair.

Public part of the training split → θ0 (cached by config hash). A private pool (the first ``holdout``
training rows, as the official code's ``exclude_num``) supplies D_ft of N rows; D_u is k single samples
or a fraction of one class's rows in D_ft. The ground truth (D_u) is kept beside the pair, never in it.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from safetensors import SafetensorError
from safetensors.torch import load_file

from unlearnleak.cache import cache_dir
from unlearnleak.data import Dataset, load_dataset
from unlearnleak.devices import check_device
from unlearnleak.errors import ConfigError
from unlearnleak.models import ModelSpec, build_model, load_weights
from unlearnleak.pair import ModelPair, StateDict, Which
from unlearnleak.storage import environment_record, save_tensors_atomic, write_json_atomic
from unlearnleak.training import TrainConfig, evaluate, train
from unlearnleak.unlearning import UNLEARNING, UnlearningContext, check_params, state_of, unlearn
from unlearnleak.unlearning.base import SCENARIO_UNSUPPORTED

GROUND_TRUTH_FILE = "ground_truth.safetensors"


class ForgetConfig(BaseModel):
    """Which rows of D_ft are deleted: ``k`` random samples, given positions, or a fraction of one class."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["samples", "class"] = "samples"
    k: int = Field(1, ge=1)  # kind="samples": how many
    positions: tuple[int, ...] | None = None  # kind="samples": explicit positions in D_ft (overrides k)
    class_id: int | None = Field(None, ge=0)  # kind="class"
    fraction: float = Field(1.0, gt=0, le=1)  # kind="class": p_u, the first ⌊n_c·p_u⌋ (at least 1) rows

    @model_validator(mode="after")
    def _check(self) -> ForgetConfig:
        if self.kind == "class" and self.class_id is None:
            raise ValueError("forget.kind='class' needs forget.class_id")
        return self


class UnlearningConfig(BaseModel):
    """The unlearning method (a registry name) and its parameters, validated by the method's own model.

    A typo in ``params`` fails here, when the config is loaded, not after pretraining.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    method: str = "gradient_ascent"
    params: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check_params(self) -> UnlearningConfig:
        try:
            check_params(self.method, self.params)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        if self.method in SCENARIO_UNSUPPORTED:
            raise ValueError(f"unlearning.method={self.method!r}: {SCENARIO_UNSUPPORTED[self.method]}")
        return self


def _default_pretrain() -> TrainConfig:
    # Paper: 120 epochs, lr 0.1, wd 5e-4, batch 128, no momentum, augmentation, steps at 44/74/105.
    return TrainConfig(epochs=30, lr=0.1, weight_decay=5e-4, batch_size=128, augment=True, drop_last=True,
                       milestones=(15, 25))


class ScenarioConfig(BaseModel):
    """Everything that determines a ModelPair; its hash names cached artefacts."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dataset: str = "cifar10"
    data_dir: str | None = None
    dataset_options: dict[str, Any] = Field(default_factory=dict)
    train_split: str = "train"  # the split that holds the private pool and the public pretraining rows
    test_split: str | None = "test"  # None: no held-out accuracy (e.g. the 20-image embedded set)
    model: str = "convnet"
    model_kwargs: dict[str, Any] = Field(default_factory=lambda: {"width": 16})
    holdout: int = Field(4000, ge=1)  # first rows of the train split: the private pool D_ft is drawn from
    pretrain: TrainConfig = Field(default_factory=_default_pretrain)
    finetune: TrainConfig = Field(default_factory=lambda: TrainConfig(freeze_bn=True))
    n_train: int = Field(32, ge=1)  # N = |D_ft|
    forget: ForgetConfig = Field(default_factory=ForgetConfig)
    unlearning: UnlearningConfig = Field(default_factory=UnlearningConfig)
    seed: int = 0
    device: str = "cpu"
    cache_dir: str | None = None

    @model_validator(mode="after")
    def _check(self) -> ScenarioConfig:
        if self.unlearning.method not in UNLEARNING:
            raise ValueError(f"unknown unlearning method {self.unlearning.method!r}; "
                             f"choose one of {UNLEARNING.names()}")
        check_device(self.device)
        if self.n_train > self.holdout:
            raise ValueError(f"n_train={self.n_train} exceeds the private pool holdout={self.holdout}")
        return self


@dataclass(frozen=True)
class Scenario:
    """A built scenario: the pair (what attackers see) and the ground truth (what evaluation sees)."""

    config: ScenarioConfig
    pair: ModelPair
    forget_x: torch.Tensor  # (k, ...) D_u inputs
    forget_y: torch.Tensor  # (k,)
    ft_indices: torch.Tensor  # train-split rows of D_ft, in D_ft order
    forget_positions: torch.Tensor  # positions of D_u within D_ft
    train: Dataset  # the full train split (public part = rows ≥ holdout)
    test: Dataset | None

    @property
    def forget_indices(self) -> torch.Tensor:
        """Train-split rows of D_u."""
        return self.ft_indices[self.forget_positions]

    def public_indices(self) -> torch.Tensor:
        """Train rows of the private pool outside D_ft: real data a user may hold (e.g. for `public` probes)."""
        pool = torch.ones(min(self.config.holdout, len(self.train)), dtype=torch.bool)
        pool[self.ft_indices] = False
        return torch.nonzero(pool).flatten()

    @property
    def public(self) -> Dataset:
        """The rows of :meth:`public_indices`."""
        return self.train.subset(self.public_indices())

    def save(self, folder: str | Path) -> Path:
        """Write the pair, the ground truth and the effective config into ``folder``."""
        folder = Path(folder)
        self.pair.save(folder)
        save_tensors_atomic(folder / GROUND_TRUTH_FILE, {
            "forget_x": self.forget_x, "forget_y": self.forget_y, "ft_indices": self.ft_indices,
            "forget_positions": self.forget_positions})
        write_json_atomic(folder / "config.json", self.config.model_dump(mode="json"))
        return folder


def _hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def model_spec(config: ScenarioConfig, data: Dataset) -> ModelSpec:
    """The architecture for ``config`` on ``data``."""
    return ModelSpec(name=config.model, input_shape=data.input_shape, num_classes=data.num_classes,
                     mean=data.mean, std=data.std, kwargs=dict(config.model_kwargs))


def _load_splits(config: ScenarioConfig) -> tuple[Dataset, Dataset | None]:
    train_set = load_dataset(config.dataset, config.train_split, config.data_dir, **config.dataset_options)
    test_set = None
    if config.test_split is not None:
        test_set = load_dataset(config.dataset, config.test_split, config.data_dir, **config.dataset_options)
    if config.holdout >= len(train_set):
        raise ConfigError(f"holdout={config.holdout} leaves no public pretraining rows in the "
                          f"{len(train_set)}-row train split of {config.dataset!r}; lower `holdout`")
    return train_set, test_set


def pretrained_base(config: ScenarioConfig, train_set: Dataset | None = None) -> tuple[ModelSpec, StateDict]:
    """θ0: the model pretrained on the public rows (train rows ≥ holdout), cached by config hash."""
    if train_set is None:
        train_set, _ = _load_splits(config)
    spec = model_spec(config, train_set)
    key = {"dataset": config.dataset, "split": config.train_split, "options": config.dataset_options,
           "holdout": config.holdout,
           "files": [f.sha256 for f in train_set.provenance.files], "n": len(train_set),
           "spec": spec.to_dict(), "pretrain": config.pretrain.model_dump(mode="json"), "seed": config.seed,
           "version": 1}
    digest = _hash(key)
    path = cache_dir(config.cache_dir) / "pretrained" / f"{config.dataset}-{config.model}-{digest}.safetensors"
    if path.is_file():
        try:
            state = load_file(str(path))
            model = build_model(spec)
            load_weights(model, state, what=f"cached base model {path}")
            return spec, state
        except (SafetensorError, OSError, ConfigError):
            path.unlink(missing_ok=True)  # a corrupt cache entry is rebuilt, not trusted
    torch.manual_seed(config.seed)  # parameter initialisation
    model = build_model(spec)
    public = train_set.subset(torch.arange(config.holdout, len(train_set)))
    started = time.perf_counter()
    train(model, public.x, public.y, config.pretrain, seed=config.seed, device=config.device, desc="pretraining θ0")
    state = state_of(model)
    save_tensors_atomic(path, state, {"key": json.dumps(key, default=str),
                                      "seconds": f"{time.perf_counter() - started:.1f}"})
    return spec, state


def finetune(spec: ModelSpec, base: StateDict, x: torch.Tensor, y: torch.Tensor, config: TrainConfig, *,
             seed: int, device: str = "cpu", keep: torch.Tensor | None = None) -> StateDict:
    """θ = θ0 fine-tuned on (x, y) (optionally only the ``keep`` rows, in the same order)."""
    model = build_model(spec)
    load_weights(model, {k: v.clone() for k, v in base.items()})
    train(model, x, y, config, seed=seed, device=device, keep=keep, desc="fine-tuning θ")
    return state_of(model)


def choose_forget(config: ForgetConfig, y_ft: torch.Tensor, seed: int) -> torch.Tensor:
    """Positions of D_u within D_ft (sorted)."""
    n = y_ft.shape[0]
    if config.kind == "class":
        rows = torch.nonzero(torch.as_tensor(y_ft == config.class_id)).flatten()
        if rows.numel() == 0:
            raise ConfigError(f"class {config.class_id} has no rows in D_ft; choose another class or a larger n_train")
        count = max(1, int(rows.numel() * config.fraction))
        return rows[:count]
    if config.positions is not None:
        pos = torch.tensor(sorted(set(config.positions)), dtype=torch.long)
        if pos.numel() and (pos.min() < 0 or pos.max() >= n):
            raise ConfigError(f"forget positions must lie in [0, {n}), got {list(config.positions)}")
        return pos
    if config.k > n:
        raise ConfigError(f"cannot forget k={config.k} samples from D_ft of N={n}")
    generator = torch.Generator().manual_seed(seed + 1)
    return torch.randperm(n, generator=generator)[:config.k].sort().values


def build_scenario(config: ScenarioConfig) -> Scenario:
    """Pretrain (or load) θ0, fine-tune θ on D_ft, unlearn D_u, and measure both models."""
    train_set, test_set = _load_splits(config)
    spec, base = pretrained_base(config, train_set)
    generator = torch.Generator().manual_seed(config.seed)
    pool = torch.randperm(config.holdout, generator=generator)
    ft_indices = pool[:config.n_train]
    x_ft, y_ft = train_set.x[ft_indices], train_set.y[ft_indices]
    original = finetune(spec, base, x_ft, y_ft, config.finetune, seed=config.seed, device=config.device)
    positions = choose_forget(config.forget, y_ft, config.seed)
    mask = torch.zeros(config.n_train, dtype=torch.bool)
    mask[positions] = True
    ctx = UnlearningContext(spec=spec, original=original, base=base, x_train=x_ft, y_train=y_ft,
                            forget_mask=mask, finetune=config.finetune, params=config.unlearning.params,
                            seed=config.seed, device=config.device)
    unlearned = unlearn(config.unlearning.method, ctx)
    pair = ModelPair(spec=spec, original=original, unlearned=unlearned, base=base, n_train=config.n_train,
                     n_forget=int(positions.numel()), metadata={})
    metadata = {
        "config": config.model_dump(mode="json"),
        "dataset": {"name": config.dataset, "provenance": {
            "source": train_set.provenance.source,
            "files": [f.__dict__ for f in train_set.provenance.files]}},
        "ft_indices": ft_indices.tolist(),
        "forget_indices": ft_indices[positions].tolist(),
        "forget_labels": y_ft[positions].tolist(),
        "metrics": _measure(pair, x_ft, y_ft, mask, test_set, config.device),
        "environment": environment_record(),
    }
    pair = ModelPair(spec=spec, original=original, unlearned=unlearned, base=base, n_train=config.n_train,
                     n_forget=int(positions.numel()), metadata=metadata)
    return Scenario(config=config, pair=pair, forget_x=x_ft[positions], forget_y=y_ft[positions],
                    ft_indices=ft_indices, forget_positions=positions, train=train_set, test=test_set)


def _measure(pair: ModelPair, x_ft: torch.Tensor, y_ft: torch.Tensor, mask: torch.Tensor,
             test: Dataset | None, device: str) -> dict[str, float]:
    out: dict[str, float] = {}
    whiches: tuple[Which, ...] = ("base", "original", "unlearned")
    for which in whiches:
        model = pair.model(which, device)
        if test is not None:
            out[f"{which}_test_accuracy"] = evaluate(model, test.x, test.y, device=device)
        out[f"{which}_forget_accuracy"] = evaluate(model, x_ft[mask], y_ft[mask], device=device)
        out[f"{which}_retain_accuracy"] = evaluate(model, x_ft[~mask], y_ft[~mask], device=device)
    return out
