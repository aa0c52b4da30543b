"""The setting both studies share: one cached θ0, two private sets D_ft, the same forget sets for every method.

Feature recovery deletes k = 1 sample from a small D_ft (N = ``n_recovery``; the attack works best there);
label inference deletes a fraction of one class from a larger D_ft (N = ``n_label``). θ is fine-tuned from
θ0 on each with the paper's fine-tune (one epoch, lr 1e-3). Sized for a CPU: LeNet, a 10-epoch θ0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

import torch
from pydantic import BaseModel, ConfigDict, Field, Strict, field_validator, model_validator

from unlearnleak.data import Dataset
from unlearnleak.errors import ConfigError
from unlearnleak.models import ModelSpec
from unlearnleak.registry import registered
from unlearnleak.scenario import ScenarioConfig, _load_splits, finetune, pretrained_base
from unlearnleak.training import TrainConfig, evaluate
from unlearnleak.unlearning import StateDict, UnlearningContext

STUDY_PRETRAIN = TrainConfig(epochs=10, lr=0.05, momentum=0.9, weight_decay=5e-4, batch_size=128, augment=True,
                             drop_last=True, milestones=(6, 9), gamma=0.1)


Index = Annotated[int, Strict(), Field(ge=0)]  # a position or a class: a true integer (not `true`), ≥ 0


class StudySetting(BaseModel):
    """Data, model, θ0/θ training and the forget sets; every field has a CPU-sized default."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    dataset: str = "cifar10"
    data_dir: str | None = None
    model: str = "lenet"
    model_kwargs: dict[str, Any] = Field(default_factory=dict)
    holdout: int = Field(4000, ge=1)
    pretrain: TrainConfig = STUDY_PRETRAIN
    finetune: TrainConfig = Field(default_factory=lambda: TrainConfig(freeze_bn=True))  # recovery D_ft (paper)
    # label D_ft: 5 epochs so that θ fits D_ft and forgetting is measurable (the paper's step barely moves θ0)
    finetune_label: TrainConfig = Field(default_factory=lambda: TrainConfig(
        epochs=5, lr=0.01, momentum=0.9, batch_size=64, freeze_bn=True))
    n_recovery: int = Field(32, ge=2)  # N of the feature-recovery D_ft
    recovery_positions: tuple[Index, ...] = Field((8, 9, 6, 27), min_length=1)  # each a k = 1 forget set in it
    n_label: int = Field(500, ge=2)  # N of the label-inference D_ft
    label_classes: tuple[Index, ...] = Field((3, 5, 8, 1), min_length=1)  # each a deletion of part of that class
    label_fraction: float = Field(0.5, gt=0, le=1)
    seed: Annotated[int, Strict(), Field(ge=0, lt=2**63 - 1)] = 0
    device: str = "cpu"
    cache_dir: str | None = None

    @field_validator("recovery_positions", "label_classes")
    @classmethod
    def _distinct(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if len(set(value)) != len(value):
            raise ValueError(f"lists {list(value)} with repeats; each must appear once (a repeat would count twice)")
        return value

    @field_validator("dataset")
    @classmethod
    def _known_dataset(cls, value: str) -> str:
        from unlearnleak.data import DATASETS
        from unlearnleak.data.base import DATASET_INFO

        registered(DATASETS, value)
        missing = [split for split in ("train", "test") if split not in DATASET_INFO[value].splits]
        if missing:
            raise ValueError(f"{value!r} has no {' or '.join(missing)} split; the studies fine-tune on train rows "
                             "and measure utility on the test split")
        return value

    @field_validator("model")
    @classmethod
    def _known_model(cls, value: str) -> str:
        from unlearnleak.models import MODELS
        from unlearnleak.models.base import names_code

        if value not in MODELS and not names_code(value):
            raise ValueError(f"unknown model {value!r}; choose one of: {', '.join(MODELS.names())}, or name your "
                             "own as path/to/file.py:Class (with --model-def)")
        return value

    @field_validator("device")
    @classmethod
    def _device_syntax(cls, value: str) -> str:
        try:  # syntax only: whether the device exists is checked where the study runs
            kind = torch.device(value).type
        except RuntimeError:
            kind = ""
        if kind not in ("cpu", "cuda"):
            raise ValueError("device must be 'cpu', 'cuda' or 'cuda:N'")
        return value

    @model_validator(mode="after")
    def _check(self) -> StudySetting:
        """What can be checked without the data: the sizes against the pool, the positions against N."""
        for key in ("n_recovery", "n_label"):
            if getattr(self, key) > self.holdout:
                raise ValueError(f"{key}={getattr(self, key)} exceeds the private pool holdout={self.holdout}; "
                                 f"lower {key} or raise holdout")
        outside = [p for p in self.recovery_positions if p >= self.n_recovery]
        if outside:
            raise ValueError(f"recovery_positions {outside} lie outside the recovery D_ft of "
                             f"n_recovery={self.n_recovery} (positions 0..{self.n_recovery - 1})")
        return self

    def scenario(self) -> ScenarioConfig:
        """The ScenarioConfig that names (and caches) the same θ0."""
        return ScenarioConfig(dataset=self.dataset, data_dir=self.data_dir, model=self.model,
                              model_kwargs=dict(self.model_kwargs), holdout=self.holdout, pretrain=self.pretrain,
                              finetune=self.finetune, n_train=max(self.n_recovery, self.n_label), seed=self.seed,
                              device=self.device, cache_dir=self.cache_dir)


@dataclass(frozen=True)
class Private:
    """One D_ft with θ fine-tuned on it."""

    x: torch.Tensor
    y: torch.Tensor
    original: StateDict  # θ
    finetune: TrainConfig  # how θ was fine-tuned from θ0 (exact unlearning repeats it)


@dataclass(frozen=True)
class Prepared:
    """θ0, the two private sets with their θ, the test set and the public pool rows (for probes)."""

    setting: StudySetting
    spec: ModelSpec
    base: StateDict
    recovery: Private
    label: Private
    test: Dataset
    public: Dataset  # private-pool rows outside the label D_ft: real data a user may hold
    base_test_accuracy: float

    def recovery_mask(self, position: int) -> torch.Tensor:
        """D_u = the sample at ``position`` of the recovery D_ft."""
        mask = torch.zeros(self.setting.n_recovery, dtype=torch.bool)
        mask[position] = True
        return mask

    def label_mask(self, class_id: int) -> torch.Tensor:
        """D_u = the first ⌊n_c·p_u⌋ (at least 1) rows of class ``class_id`` in the label D_ft."""
        rows = torch.nonzero(self.label.y == class_id).flatten()
        mask = torch.zeros(self.setting.n_label, dtype=torch.bool)
        mask[rows[:max(1, int(rows.numel() * self.setting.label_fraction))]] = True
        return mask

    def context(self, which: Private, mask: torch.Tensor, method_params: dict[str, Any]) -> UnlearningContext:
        """The provider's view for one deletion from ``which``."""
        return UnlearningContext(spec=self.spec, original=which.original, base=self.base, x_train=which.x,
                                 y_train=which.y, forget_mask=mask, finetune=which.finetune,
                                 params=method_params, seed=self.setting.seed, device=self.setting.device)


Splits = tuple[Dataset, Dataset]  # (train, test) as loaded and checked by check_setting


def check_setting(setting: StudySetting) -> Splits:
    """Load the data and check what needs it, training nothing: the model fits the inputs and returns one output
    per class, each label class exists and has rows in the label D_ft, the cache folder is writable.

    Returns the (train, test) splits for :func:`prepare`.
    """
    from unlearnleak.scenario import _check_cache_dir, check_model_fits, model_spec

    config = setting.scenario()
    train_set, test_set = _load_splits(config)
    if test_set is None:
        raise ConfigError("the studies measure utility on a test split; this setting has none")
    check_model_fits(model_spec(config, train_set), setting.dataset)
    classes = train_set.num_classes
    outside = [c for c in setting.label_classes if c >= classes]
    if outside:
        raise ConfigError(f"setting.label_classes {outside} are not classes of {setting.dataset!r}, which has "
                          f"classes 0..{classes - 1}; choose among them")
    label_rows = _pool(setting)[:setting.n_label]
    absent = [c for c in setting.label_classes if not bool((train_set.y[label_rows] == c).any())]
    if absent:
        raise ConfigError(f"setting.label_classes {absent} have no rows in the label D_ft of n_label="
                          f"{setting.n_label}; raise n_label or choose other classes")
    _check_cache_dir(config)
    return train_set, test_set


def _pool(setting: StudySetting) -> torch.Tensor:
    """The private pool's rows in the order both D_ft are drawn from (seeded)."""
    return torch.randperm(setting.holdout, generator=torch.Generator().manual_seed(setting.seed))


def prepare(setting: StudySetting, splits: Splits | None = None) -> Prepared:
    """Load the data, pretrain (or load) θ0 and fine-tune θ on both private sets (checked first, unless
    ``splits`` come from :func:`check_setting` already)."""
    config = setting.scenario()
    train_set, test_set = splits if splits is not None else check_setting(setting)
    spec, base = pretrained_base(config, train_set)
    pool = _pool(setting)
    privates = []
    for n, schedule in ((setting.n_recovery, setting.finetune), (setting.n_label, setting.finetune_label)):
        rows = pool[:n]
        x, y = train_set.x[rows], train_set.y[rows]
        privates.append(Private(x, y, finetune(spec, base, x, y, schedule, seed=setting.seed,
                                               device=setting.device), schedule))
    public = train_set.subset(pool[setting.n_label:])
    from unlearnleak.models import build_model, load_weights

    model = build_model(spec)
    load_weights(model, base)
    base_acc = evaluate(model, test_set.x, test_set.y, device=setting.device)
    return Prepared(setting=setting, spec=spec, base=base, recovery=privates[0], label=privates[1],
                    test=test_set, public=public, base_test_accuracy=base_acc)
