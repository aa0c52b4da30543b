"""The paper's scenario (docs/paper.md §2.3, §3, §5): pretrain θ0, fine-tune θ on D_ft, unlearn D_u → ModelPair.

Public part of the training split → θ0. A private pool (the first ``holdout`` training rows, as the official
code's ``exclude_num``) supplies D_ft of N rows; D_u is k single samples or a fraction of one class's rows in
D_ft. The ground truth (D_u) is kept beside the pair, never in it. Each stage (θ0, θ, θ_u) is cached under the
hash of its inputs (unlearnleak.stages), and the run record says which came from the cache.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from unlearnleak.cache import cache_dir
from unlearnleak.data import Dataset, load_dataset
from unlearnleak.devices import check_device
from unlearnleak.errors import ConfigError, UnlearnleakError, one_line
from unlearnleak.knowledge import ServerKnowledge
from unlearnleak.models import MODELS, ModelSpec, build_model
from unlearnleak.pair import ModelPair, StateDict, Which
from unlearnleak.record import GROUND_TRUTH_FILE as GROUND_TRUTH_FILE
from unlearnleak.record import RunRecord
from unlearnleak.stages import Stage, base_key, base_stage, theta_stages
from unlearnleak.stages import finetune as finetune
from unlearnleak.storage import check_creatable, environment_record, write_json_atomic
from unlearnleak.training import TrainConfig, evaluate
from unlearnleak.unlearning import UNLEARNING, check_params


# The kind of unlearning each registered method performs (declared to the server attacker by the scenario).
def unlearning_kind(method: str) -> Literal["exact", "approximate"]:
    """The kind of unlearning a scenario declares to the server: only ``exact`` (the retrained fine-tune from θ0)
    has the θ0/N/k closed form of the exact target; every other method (retraining from scratch, gradient
    ascent, the closed-form updates, fine-tuning, …) is attacked through the plain difference θ_u − θ."""
    return "exact" if method == "exact" else "approximate"


class ForgetConfig(BaseModel):
    """Which rows of D_ft are deleted: ``k`` random samples, given positions, or a fraction of one class."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    kind: Literal["samples", "class"] = "samples"
    k: int = Field(1, ge=1)  # kind="samples": how many
    positions: tuple[int, ...] | None = None  # kind="samples": explicit positions in D_ft (overrides k)
    class_id: int | None = Field(None, ge=0, strict=True)  # kind="class" (a true integer, not `true`)
    fraction: float = Field(1.0, gt=0, le=1)  # kind="class": p_u, the first ⌊n_c·p_u⌋ (at least 1) rows

    @field_validator("positions")
    @classmethod
    def _distinct(cls, value: tuple[int, ...] | None) -> tuple[int, ...] | None:
        if value is not None and not value:
            raise ValueError("forget.positions lists no position; give at least one (or drop it and set forget.k)")
        if value is not None and len(set(value)) != len(value):
            raise ValueError(f"forget.positions lists {list(value)} with repeats; each position must appear once")
        return value

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
        return self


def _default_pretrain() -> TrainConfig:
    # Paper: 120 epochs, lr 0.1, wd 5e-4, batch 128, no momentum, augmentation, steps at 44/74/105.
    return TrainConfig(epochs=30, lr=0.1, weight_decay=5e-4, batch_size=128, augment=True, drop_last=True,
                       milestones=(15, 25))


# model_kwargs used when a config names a model but not its kwargs (each model has its own arguments).
DEFAULT_MODEL_KWARGS: dict[str, dict[str, Any]] = {"convnet": {"width": 16}}


class ScenarioConfig(BaseModel):
    """Everything that determines a ModelPair; its hash names cached artefacts."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    dataset: str = "cifar10"
    data_dir: str | None = None
    dataset_options: dict[str, Any] = Field(default_factory=dict)
    train_split: str = "train"  # the split that holds the private pool and the public pretraining rows
    test_split: str | None = "test"  # None: no held-out accuracy (e.g. the 20-image embedded set)
    model: str = "convnet"
    model_kwargs: dict[str, Any] = Field(default_factory=dict)  # default: DEFAULT_MODEL_KWARGS[model] or {}
    holdout: int = Field(4000, ge=1)  # first rows of the train split: the private pool D_ft is drawn from
    # at most this many public rows (the first ones after the holdout) pretrain θ0; None: all of them
    pretrain_rows: int | None = Field(None, ge=1)
    pretrain: TrainConfig = Field(default_factory=_default_pretrain)
    finetune: TrainConfig = Field(default_factory=lambda: TrainConfig(freeze_bn=True))
    n_train: int = Field(32, ge=1)  # N = |D_ft|
    forget: ForgetConfig = Field(default_factory=ForgetConfig)
    unlearning: UnlearningConfig = Field(default_factory=UnlearningConfig)
    seed: int = Field(0, ge=0, lt=2**63 - 1)  # torch generators take 64-bit seeds
    # θ0's seed (initialisation and pretraining order); None: ``seed``. Set it to share one θ0 across seeds, as
    # the official code does (one θ0 saved with --save_name s0, D_ft and D_u drawn per seed).
    pretrain_seed: int | None = Field(None, ge=0, lt=2**63 - 1)
    device: str = "cpu"
    cache_dir: str | None = None

    @model_validator(mode="after")
    def _model_kwargs_default(self) -> ScenarioConfig:
        """Without ``model_kwargs``, use the named model's defaults (convnet: width 16; others: none).

        Resolved after validation, so the field stays "unset": a config section that changes only ``model``
        is not merged onto another model's kwargs (experiments.config.fill_section_defaults).
        """
        if "model_kwargs" not in self.model_fields_set:
            self.__dict__["model_kwargs"] = dict(DEFAULT_MODEL_KWARGS.get(self.model, {}))
        return self

    @model_validator(mode="after")
    def _check(self) -> ScenarioConfig:
        if self.unlearning.method not in UNLEARNING:
            raise ValueError(f"unknown unlearning method {self.unlearning.method!r}; "
                             f"choose one of {UNLEARNING.names()}")
        check_device(self.device)
        if self.n_train > self.holdout:
            raise ValueError(f"n_train={self.n_train} exceeds the private pool holdout={self.holdout}; "
                             "lower n_train or raise holdout")
        if self.forget.kind == "samples" and self.forget.positions is None and self.forget.k >= self.n_train:
            raise ValueError(f"forget.k={self.forget.k} must be smaller than n_train={self.n_train} "
                             "(unlearning all of D_ft leaves nothing to retrain on); lower k or raise n_train")
        outside = [p for p in self.forget.positions or () if p >= self.n_train]
        if self.forget.kind == "samples" and outside:
            raise ValueError(f"forget.positions {outside} lie outside D_ft of n_train={self.n_train} (each must be "
                             f"in [0, {self.n_train})); choose positions below n_train or raise n_train")
        return self


@dataclass(frozen=True)
class Scenario:
    """A built scenario: the pair (what attackers see) and the ground truth (what evaluation sees)."""

    config: ScenarioConfig
    pair: ModelPair  # what every attacker sees
    knowledge: ServerKnowledge  # what the scenario declares the server attacker knows (θ0, N, k, kind)
    record: RunRecord  # provenance and ground truth, for evaluation and reports only
    forget_x: torch.Tensor  # (k, ...) D_u inputs
    forget_y: torch.Tensor  # (k,)
    ft_indices: torch.Tensor  # train-split rows of D_ft, in D_ft order
    forget_positions: torch.Tensor  # positions of D_u within D_ft
    train: Dataset  # the full train split (public part = rows ≥ holdout)
    test: Dataset | None
    stages: Mapping[str, Any] = field(default_factory=dict)  # per stage (base, original, unlearned): key, cached

    @property
    def forget_indices(self) -> torch.Tensor:
        """Train-split rows of D_u."""
        return self.ft_indices[self.forget_positions]

    def public_indices(self) -> torch.Tensor:
        """Train rows of the private pool outside D_ft: real data a user may hold (e.g. for `public` probes)."""
        return pool_outside(self.config.holdout, len(self.train), self.ft_indices)

    @property
    def public(self) -> Dataset:
        """The rows of :meth:`public_indices`."""
        return self.train.subset(self.public_indices())

    def save(self, folder: str | Path) -> Path:
        """Write the pair, the declared knowledge, the record (with the ground truth) and the effective config."""
        folder = Path(folder)
        self.pair.save(folder)
        self.knowledge.save(folder)
        self.record.save(folder)
        write_json_atomic(folder / "config.json", self.config.model_dump(mode="json"))
        return folder


def pool_outside(holdout: int, rows: int, ft_indices: torch.Tensor | tuple[int, ...]) -> torch.Tensor:
    """The private pool's rows (the first ``holdout`` of ``rows``) that are not in D_ft (``Scenario.public``)."""
    pool = torch.ones(min(holdout, rows), dtype=torch.bool)
    pool[torch.as_tensor(ft_indices, dtype=torch.long)] = False
    return torch.nonzero(pool).flatten()


def recorded_public(record: RunRecord, data_dir: str | None = None) -> Dataset:
    """A saved scenario's ``Scenario.public`` rebuilt from its run record (dataset, split, holdout, D_ft's rows):
    the labelled rows ``run`` makes the audited model's own null pairs on. ``data_dir`` overrides the record's.

    Raises:
        ConfigError / DataError: the record does not name them, or the dataset cannot be read; the message says
            what is missing and how to fix it.
    """
    config = dict(record.config)
    if not config.get("dataset") or not record.ft_indices:
        raise ConfigError("its run record (record.json) does not name the scenario's dataset and D_ft's rows (a "
                          "folder from `unlearnleak scenario` does)")
    try:
        scenario = ScenarioConfig.model_validate({**config, **({"data_dir": data_dir} if data_dir else {})})
    except Exception as exc:
        raise ConfigError(f"its run record's config is not a valid scenario config ({one_line(str(exc))})") from None
    try:
        train = load_dataset(scenario.dataset, scenario.train_split, scenario.data_dir, **scenario.dataset_options)
    except UnlearnleakError as exc:
        raise type(exc)(f"{one_line(str(exc)).rstrip('.')}; pass --data-dir with the scenario's dataset") from exc
    if max(record.ft_indices) >= min(scenario.holdout, len(train)):
        raise ConfigError(f"its run record's D_ft rows lie outside the {scenario.dataset} {scenario.train_split} "
                          f"split's private pool of {min(scenario.holdout, len(train))} rows; is --data-dir the "
                          "dataset the pair was made from?")
    return train.subset(pool_outside(scenario.holdout, len(train), record.ft_indices))


def model_spec(config: ScenarioConfig, data: Dataset) -> ModelSpec:
    """The architecture for ``config`` on ``data``."""
    return ModelSpec(name=config.model, input_shape=data.input_shape, num_classes=data.num_classes,
                     mean=data.mean, std=data.std, kwargs=dict(config.model_kwargs))


def _load_splits(config: ScenarioConfig, loaded: tuple[Dataset, Dataset | None] | None = None
                 ) -> tuple[Dataset, Dataset | None]:
    if loaded is not None:  # already loaded for another config of the same data (a sweep's preflight)
        train_set, test_set = loaded
    else:
        train_set = load_dataset(config.dataset, config.train_split, config.data_dir, **config.dataset_options)
        test_set = None
        if config.test_split is not None:
            test_set = load_dataset(config.dataset, config.test_split, config.data_dir, **config.dataset_options)
    if config.holdout >= len(train_set):
        raise ConfigError(f"holdout={config.holdout} leaves no public pretraining rows in the "
                          f"{len(train_set)}-row train split of {config.dataset!r}; lower `holdout`")
    return train_set, test_set


def pretrained_base(config: ScenarioConfig, train_set: Dataset | None = None) -> tuple[ModelSpec, StateDict]:
    """θ0: the model pretrained on the public rows (train rows ≥ holdout), cached by the hash of its inputs."""
    stage = base_of(config, train_set)
    return stage.spec, stage.state


def base_of(config: ScenarioConfig, train_set: Dataset | None = None) -> Stage:
    """θ0's stage (unlearnleak.stages.base_stage) for ``config``."""
    if train_set is None:
        train_set, _ = _load_splits(config)
    spec = model_spec(config, train_set)
    seed = config.seed if config.pretrain_seed is None else config.pretrain_seed
    key = base_key(config.dataset, config.train_split, config.dataset_options, config.holdout, train_set, spec,
                   config.pretrain, seed, config.pretrain_rows)
    end = len(train_set) if config.pretrain_rows is None else min(len(train_set),
                                                                   config.holdout + config.pretrain_rows)
    public = train_set.subset(torch.arange(config.holdout, end))
    return base_stage(cache_dir(config.cache_dir), key, spec, public, config.pretrain, seed=seed,
                      device=config.device)


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
        if not config.positions or min(config.positions) < 0 or max(config.positions) >= n:
            raise ConfigError(f"forget.positions must be a non-empty list of positions in D_ft, each in [0, {n}), "
                              f"got {list(config.positions)[:10]}")
        return torch.tensor(sorted(set(config.positions)), dtype=torch.long)
    if config.k >= n:
        raise ConfigError(f"cannot forget k={config.k} samples from D_ft of N={n}: k must be smaller than N")
    generator = torch.Generator().manual_seed(seed + 1)
    return torch.randperm(n, generator=generator)[:config.k].sort().values


@dataclass(frozen=True)
class ScenarioPlan:
    """A config checked against its data before any training: the splits, the architecture, D_ft and D_u."""

    train: Dataset
    test: Dataset | None
    spec: ModelSpec
    ft_indices: torch.Tensor  # train-split rows of D_ft, in D_ft order
    positions: torch.Tensor  # positions of D_u within D_ft (sorted)


def plan_scenario(config: ScenarioConfig, splits: tuple[Dataset, Dataset | None] | None = None) -> ScenarioPlan:
    """Load the data and check every choice that could fail later (model fit, forget set, cache), training nothing.

    ``splits``: the (train, test) datasets when already loaded for ``config``'s data (else they are loaded).

    Raises:
        ConfigError / DataError: naming the key to change and how.
    """
    train_set, test_set = _load_splits(config, splits)
    spec = model_spec(config, train_set)
    check_model_fits(spec, config.dataset)
    generator = torch.Generator().manual_seed(config.seed)
    ft_indices = torch.randperm(config.holdout, generator=generator)[:config.n_train]
    if config.forget.kind == "class" and config.forget.class_id is not None \
            and config.forget.class_id >= train_set.num_classes:
        raise ConfigError(f"forget.class_id={config.forget.class_id} is not a class of {config.dataset!r}, "
                          f"which has classes 0..{train_set.num_classes - 1}; choose one of them")
    positions = choose_forget(config.forget, train_set.y[ft_indices], config.seed)
    if positions.numel() >= config.n_train:
        raise ConfigError(f"the forget set would hold all {config.n_train} rows of D_ft, leaving nothing to "
                          "retrain on; forget fewer rows (forget.k, forget.positions, forget.fraction) or raise "
                          "n_train")
    _check_cache_dir(config)
    return ScenarioPlan(train=train_set, test=test_set, spec=spec, ft_indices=ft_indices, positions=positions)


def _unfit(what: str, dataset: str, spec: ModelSpec, exc: BaseException) -> ConfigError:
    return ConfigError(f"{what} does not fit {dataset!r} inputs of shape {tuple(spec.input_shape)} "
                       f"({type(exc).__name__}: {one_line(str(exc))}); choose another model (e.g. lenet or mlp "
                       "for small images) or other model_kwargs")


def check_model_fits(spec: ModelSpec, dataset: str) -> None:
    """Build ``spec`` and run one zero input through it, so that a model unfit for the data fails before training."""
    if spec.name in MODELS:
        accepted = [n for n in inspect.signature(MODELS.get(spec.name)).parameters
                    if n not in ("input_shape", "num_classes")]
        unknown = sorted(set(spec.kwargs) - set(accepted))
        if unknown:
            raise ConfigError(f"model {spec.name!r} does not take model_kwargs {unknown}; its arguments are "
                              f"{', '.join(accepted) or '(none)'}: set e.g. --set model_kwargs={{}} "
                              f"(given: {dict(spec.kwargs)})")
    what = f"model {spec.name!r} with model_kwargs {dict(spec.kwargs)}"
    try:
        model = build_model(spec).eval()
        with torch.no_grad():
            out = model(torch.zeros(1, *spec.input_shape))
    except UnlearnleakError as exc:
        cause = exc.__cause__  # build_model wraps what the architecture raised while being built
        if cause is None:
            raise
        raise _unfit(what, dataset, spec, cause) from exc
    except Exception as exc:  # any failure of the user's architecture choice is reported, not raised
        raise _unfit(what, dataset, spec, exc) from exc
    if tuple(out.shape) != (1, spec.num_classes):
        raise ConfigError(f"{what} returns outputs of shape {tuple(out.shape)} for one input, not (1, "
                          f"{spec.num_classes}) for the {spec.num_classes} classes of {dataset!r}; fix the model")


def _check_cache_dir(config: ScenarioConfig) -> None:
    """The cache folder (θ0 is stored there) must be a folder we can create or write."""
    root = cache_dir(config.cache_dir)
    if root.exists() and not root.is_dir():
        raise ConfigError(f"cache_dir {root} is a file; set cache_dir (or $UNLEARNLEAK_CACHE_DIR) to a folder")
    check_creatable(root, f"cache_dir {root}:", "set cache_dir (or $UNLEARNLEAK_CACHE_DIR) to a folder you can write")


def build_scenario(config: ScenarioConfig, plan: ScenarioPlan | None = None) -> Scenario:
    """Pretrain θ0, fine-tune θ on D_ft, unlearn D_u (each stage read from the cache when it holds it), and
    measure the three models.

    ``plan`` (from :func:`plan_scenario`, which runs first if not given) holds the checked data and choices.
    """
    plan = plan if plan is not None else plan_scenario(config)
    train_set, test_set, ft_indices, positions = plan.train, plan.test, plan.ft_indices, plan.positions
    root = cache_dir(config.cache_dir)
    x_ft, y_ft = train_set.x[ft_indices], train_set.y[ft_indices]
    method, params = config.unlearning.method, config.unlearning.params
    base = base_of(config, train_set)
    original, unlearned = theta_stages(root, base, x_ft, y_ft, ft_indices, positions, config.finetune, method,
                                       params, seed=config.seed, device=config.device)
    pair = ModelPair(spec=original.spec, original=original.state, unlearned=unlearned.state)
    knowledge = ServerKnowledge(base=original.base, n_train=config.n_train, n_forget=int(positions.numel()),
                                unlearning=unlearning_kind(method), batch_size=config.finetune.batch_size)
    stages: dict[str, Any] = {stage.name: stage.record() for stage in (base, original, unlearned)}
    mask = torch.zeros(config.n_train, dtype=torch.bool)
    mask[positions] = True
    record = RunRecord(
        config=config.model_dump(mode="json"),
        dataset={"name": config.dataset, "classes": list(train_set.classes), "provenance": {
            "source": train_set.provenance.source,
            "files": [f.__dict__ for f in train_set.provenance.files]}},
        ft_indices=tuple(ft_indices.tolist()),
        forget_indices=tuple(ft_indices[positions].tolist()),
        forget_labels=tuple(y_ft[positions].tolist()),
        metrics=_measure(pair, knowledge, x_ft, y_ft, mask, test_set, config.device),
        environment=environment_record(),
        forget_x=x_ft[positions], forget_y=y_ft[positions], forget_positions=positions, stages=stages,
    )
    return Scenario(config=config, pair=pair, knowledge=knowledge, record=record, forget_x=x_ft[positions],
                    forget_y=y_ft[positions], ft_indices=ft_indices, forget_positions=positions, train=train_set,
                    test=test_set, stages=stages)


def server_view(pair: ModelPair, knowledge: ServerKnowledge | None
                ) -> tuple[ModelPair, ServerKnowledge | None, str | None]:
    """What the white-box server attacks: the pair itself, or, when θ is a served ensemble (SISA), the pair of the
    member whose weights moved most — only the shards holding a deleted row are retrained, and the server, which
    holds both ensembles, sees which. Returns the pair, the knowledge that goes with it and what was attacked."""
    from unlearnleak.unlearning.sisa import ENSEMBLE, changed_member, member_spec, member_state

    if pair.spec.name != ENSEMBLE:
        return pair, knowledge, None
    shard = changed_member(pair.spec, pair.original, pair.unlearned)
    member = ModelPair(spec=member_spec(pair.spec), original=member_state(pair.original, shard),
                       unlearned=member_state(pair.unlearned, shard))
    # the member was trained on its shard only: N is not the ensemble's, and its exact target does not apply
    view = None if knowledge is None else replace(
        knowledge, base=None if knowledge.base is None else member_state(knowledge.base, shard), n_train=None,
        unlearning="approximate")
    return member, view, f"member {shard} of the {int(pair.spec.kwargs['shards'])}-shard ensemble (moved most)"


def _measure(pair: ModelPair, knowledge: ServerKnowledge, x_ft: torch.Tensor, y_ft: torch.Tensor, mask: torch.Tensor,
             test: Dataset | None, device: str) -> dict[str, float]:
    out: dict[str, float] = {}
    whiches: tuple[Which, ...] = ("base", "original", "unlearned")
    for which in whiches:
        model = pair.model(which, device, knowledge)
        if test is not None:
            out[f"{which}_test_accuracy"] = evaluate(model, test.x, test.y, device=device)
        out[f"{which}_forget_accuracy"] = evaluate(model, x_ft[mask], y_ft[mask], device=device)
        out[f"{which}_retain_accuracy"] = evaluate(model, x_ft[~mask], y_ft[~mask], device=device)
    return out
