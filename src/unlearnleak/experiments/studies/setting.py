"""The setting both studies share: one cached θ0, two private sets D_ft, the same forget sets for every method.

Feature recovery deletes k = 1 sample from a small D_ft (N = ``n_recovery``; the attack works best there);
label inference deletes a fraction of one class from a larger D_ft (N = ``n_label``). θ is fine-tuned from
θ0 on each with the paper's fine-tune (one epoch, lr 1e-3). Sized for a CPU: LeNet, a 10-epoch θ0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field

from unlearnleak.data import Dataset
from unlearnleak.errors import ConfigError
from unlearnleak.models import ModelSpec
from unlearnleak.scenario import ScenarioConfig, _load_splits, finetune, pretrained_base
from unlearnleak.training import TrainConfig, evaluate
from unlearnleak.unlearning import StateDict, UnlearningContext

STUDY_PRETRAIN = TrainConfig(epochs=10, lr=0.05, momentum=0.9, weight_decay=5e-4, batch_size=128, augment=True,
                             drop_last=True, milestones=(6, 9), gamma=0.1)


class StudySetting(BaseModel):
    """Data, model, θ0/θ training and the forget sets; every field has a CPU-sized default."""

    model_config = ConfigDict(extra="forbid", frozen=True)

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
    recovery_positions: tuple[int, ...] = (8, 9, 6, 27)  # each one k = 1 forget set within it
    n_label: int = Field(500, ge=2)  # N of the label-inference D_ft
    label_classes: tuple[int, ...] = (3, 5, 8, 1)  # each one deletion of `label_fraction` of that class
    label_fraction: float = Field(0.5, gt=0, le=1)
    seed: int = 0
    device: str = "cpu"
    cache_dir: str | None = None

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


def prepare(setting: StudySetting) -> Prepared:
    """Load the data, pretrain (or load) θ0 and fine-tune θ on both private sets."""
    config = setting.scenario()
    train_set, test_set = _load_splits(config)
    if test_set is None:
        raise ConfigError("the studies measure utility on a test split; this setting has none")
    spec, base = pretrained_base(config, train_set)
    pool = torch.randperm(setting.holdout, generator=torch.Generator().manual_seed(setting.seed))
    privates = []
    for n, schedule in ((setting.n_recovery, setting.finetune), (setting.n_label, setting.finetune_label)):
        rows = pool[:n]
        x, y = train_set.x[rows], train_set.y[rows]
        privates.append(Private(x, y, finetune(spec, base, x, y, schedule, seed=setting.seed,
                                               device=setting.device), schedule))
    for position in setting.recovery_positions:
        if not 0 <= position < setting.n_recovery:
            raise ConfigError(f"recovery position {position} is outside D_ft of N={setting.n_recovery}")
    public = train_set.subset(pool[setting.n_label:])
    from unlearnleak.models import build_model, load_weights

    model = build_model(spec)
    load_weights(model, base)
    base_acc = evaluate(model, test_set.x, test_set.y, device=setting.device)
    return Prepared(setting=setting, spec=spec, base=base, recovery=privates[0], label=privates[1],
                    test=test_set, public=public, base_test_accuracy=base_acc)
