"""The one config of the server attack: the library's ``FeatureRecovery``, the experiment config's
``attacks.feature_recovery`` section, ``unlearnleak recover`` and ``unlearnleak audit`` all build this model, so
each setting has one name, one default and one check (docs/feature_recovery.md)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from unlearnleak.attacks.feature_recovery.decoder import DecoderConfig
from unlearnleak.attacks.feature_recovery.target_gradient import TargetMode
from unlearnleak.registry import registered

# overrides may also name ``method``: closed form where it applies (auto), or force one (attack.recover)
METHODS = ("auto", "analytic", "inversion")

# Settings of one run, not of the attack: an experiment sets them from its `seeds`, its `device` and the
# scenario's k, so they are left out of dumps (a cell's hash and experiment.yaml name them once, elsewhere).
RUN_SETTINGS = ("seed", "device", "k")


class LearnedPriorSpec(BaseModel):
    """The learned prior of feature recovery (docs/feature_recovery.md, "Learned prior (decoder)"): the server's
    own images a decoder is trained on, and its settings."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # "pretraining": the scenario's θ0 pretraining rows (train rows >= holdout, the server's own data); or a
    # registered dataset NAME (its train split, optionally rows NAME[start:stop]) read from the scenario's
    # data_dir; or a folder of image files (docs/feature_recovery.md).
    public_data: str = "pretraining"
    decoder: DecoderConfig = Field(default_factory=DecoderConfig)
    train_on: Literal["auto", "base", "attacked"] = "auto"  # auto: θ0 when the server knows it
    weights: tuple[float, ...] | None = None  # raced weights of the decoded prior (None: the default)

    @field_validator("public_data")
    @classmethod
    def _source(cls, value: str) -> str:
        from unlearnleak.attacks.feature_recovery.public_data import names_dataset

        text = value.strip()
        if text == "pretraining" or names_dataset(text) or Path(text).expanduser().is_dir():
            return text
        raise ValueError(f"public_data {value!r} is neither 'pretraining', a registered dataset (e.g. cifar10 or "
                         "cifar10[8000:]) nor an existing folder of images (no such folder); check the name or path")

    @field_validator("weights")
    @classmethod
    def _weights(cls, value: tuple[float, ...] | None) -> tuple[float, ...] | None:
        if value is not None and (not value or any(w < 0 for w in value) or len(set(value)) != len(value)):
            raise ValueError(f"weights must be distinct numbers >= 0, got {list(value)}")
        return value


class FeatureRecoveryConfig(BaseModel):
    """The server's white-box attack: preset, budget, target mode, inversion overrides, learned prior, and the
    run settings (seed, device, k) that an experiment sets itself."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    preset: str = "best"  # best races paper, modern and smooth (tabular rows: tabular)
    iterations: int | None = Field(None, ge=1)  # None: the preset's
    restarts: int | None = Field(None, ge=1)  # None: the preset's
    mode: TargetMode = "auto"  # auto: exact when the knowledge allows it (θ0, N, k, exact unlearning)
    time_budget: float | None = Field(None, gt=0, allow_inf_nan=False)  # seconds for the optimisation
    overrides: dict[str, Any] = Field(default_factory=dict)  # InversionConfig fields (e.g. total_variation)
    learned_prior: LearnedPriorSpec | None = None  # None: off ("learned prior: off — no public data given")
    # run settings (RUN_SETTINGS): in an experiment, its seeds, its device and the scenario's k
    seed: int = Field(0, ge=0, lt=2**63 - 1, exclude=True)  # seeds the restarts' starting points
    device: str = Field("cpu", exclude=True)
    k: int | None = Field(None, ge=1, exclude=True)  # unlearned samples; None: the knowledge's

    @field_validator("preset")
    @classmethod
    def _known_preset(cls, value: str) -> str:
        from unlearnleak.attacks.feature_recovery.inversion import PRESETS

        return registered(PRESETS, value)

    @field_validator("overrides")
    @classmethod
    def _known_overrides(cls, value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        from unlearnleak.attacks.feature_recovery.inversion import PRESETS

        preset = info.data.get("preset")
        for key, given in value.items():  # NaN and ±inf first: the bounds of a setting would hide them
            if any(isinstance(v, float) and not math.isfinite(v) for v in _leaves(given)):
                raise ValueError(f"{key}: not a finite number, got {given!r}")
        method = value.get("method", "auto")  # not an inversion setting: recover()'s choice of analytic/inversion
        if method not in METHODS:
            raise ValueError(f"method: choose one of {', '.join(METHODS)}, got {method!r}")
        settings = {k: v for k, v in value.items() if k != "method"}
        if not settings or preset is None:  # an unknown preset is reported on its own
            return value
        try:
            PRESETS.get(preset).with_overrides(**settings)
        except ValidationError as exc:
            raise ValueError(_inversion_problems(exc)) from None
        return value

    @model_validator(mode="after")
    def _prior_in_best(self) -> FeatureRecoveryConfig:
        if self.learned_prior is not None and self.preset != "best":
            raise ValueError(f"learned_prior.public_data={self.learned_prior.public_data} races the decoded image "
                             f"beside the default's recipes, not inside preset={self.preset}; use the default preset "
                             "(best) with public data, or drop the public data to run that preset")
        return self


def _leaves(value: Any) -> list[Any]:
    """The scalars inside ``value`` (lists, tuples and mappings opened)."""
    if isinstance(value, dict):
        return [leaf for v in value.values() for leaf in _leaves(v)]
    if isinstance(value, (list, tuple)):
        return [leaf for v in value for leaf in _leaves(v)]
    return [value]


def _inversion_problems(exc: ValidationError) -> str:
    """One clause per bad inversion setting: its name, what is wrong, the value given."""
    from unlearnleak.attacks.feature_recovery.inversion import InversionConfig

    problems = []
    for error in exc.errors():
        key = ".".join(str(p) for p in error["loc"])
        if error["type"] == "extra_forbidden":
            known = ", ".join(sorted(InversionConfig.model_fields))
            problems.append(f"{key}: not an inversion setting (known: {known})")
        else:
            problems.append(f"{key}: {error['msg'].removeprefix('Value error, ')}, got {error.get('input')!r}")
    return "; ".join(problems)
