"""The one config of the user attack: the library's ``LabelInference``, the experiment config's
``attacks.label_inference`` section, ``unlearnleak infer-label`` and ``unlearnleak audit`` all build this model,
so each setting has one name, one default and one check (docs/label_inference.md)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from unlearnleak.attacks.label_inference.calibration import CALIBRATORS, Test
from unlearnleak.attacks.label_inference.decision import MIN_PER_CLASS, DecisionConfig, Statistic
from unlearnleak.attacks.label_inference.probes import PROBE_GENERATORS
from unlearnleak.registry import registered

# Settings of one run, not of the attack: an experiment sets them from its `seeds` and its `device`, so they
# are left out of dumps (a cell's hash and experiment.yaml name them once, elsewhere).
RUN_SETTINGS = ("seed", "device")
MAX_PER_CLASS = 100_000


class LabelInferenceConfig(BaseModel):
    """The user's black-box attack: probe generator and its parameters, probes per class, the calibrated
    decision rule, and the run settings (seed, device) that an experiment sets itself."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    generator: str = "nes"  # nes | zoo (queries only), public (real held-out samples), gradient (θ's weights)
    per_class: int = Field(10, ge=1, le=MAX_PER_CLASS)
    top_k: int = Field(1, ge=1)  # how many deleted classes to name
    statistic: Statistic = "log_odds"  # "probability": the paper's Eq. 11
    level: float = Field(0.05, gt=0, lt=1)  # false-detection rate of the "detected" verdict
    calibration: str = "auto"  # registered calibrator (calibration.CALIBRATORS) giving the threshold
    test: Test = "student"  # centre/spread of the other classes' changes: mean/std, median/MAD, lower
    min_per_class: int = Field(MIN_PER_CLASS, ge=1)  # fewer probes for any class: no verdict
    max_seconds: float | None = Field(None, gt=0, allow_inf_nan=False)  # stop making probes after this long
    params: dict[str, Any] = Field(default_factory=dict)  # the generator's parameters (e.g. threshold)
    # run settings (RUN_SETTINGS): in an experiment, its seeds and its device
    seed: int = Field(0, ge=0, lt=2**63 - 1, exclude=True)  # seeds the probe generator
    device: str = Field("cpu", exclude=True)  # where θ runs for gradient probes

    @field_validator("generator")
    @classmethod
    def _known_generator(cls, value: str) -> str:
        return registered(PROBE_GENERATORS, value)

    @field_validator("calibration")
    @classmethod
    def _known_calibration(cls, value: str) -> str:
        return registered(CALIBRATORS, value)

    @field_validator("params")
    @classmethod
    def _generator_params(cls, value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        generator = info.data.get("generator")
        if not value or generator is None:  # an unknown generator is reported on its own
            return value
        settings = PROBE_GENERATORS.get(generator).Config
        try:
            settings.model_validate(value)
        except ValidationError as exc:
            problems = []
            for error in exc.errors():
                key = ".".join(str(p) for p in error["loc"])
                if error["type"] == "extra_forbidden":
                    problems.append(f"{key}: not a parameter of the {generator} generator (known: "
                                    f"{', '.join(sorted(settings.model_fields))})")
                else:
                    problems.append(f"{key}: {error['msg'].removeprefix('Value error, ')}, "
                                    f"got {error.get('input')!r}")
            raise ValueError("; ".join(problems)) from None
        return value

    def decision(self) -> DecisionConfig:
        """The decision rule's part of this config."""
        return DecisionConfig(top_k=self.top_k, statistic=self.statistic, level=self.level,
                              calibration=self.calibration, test=self.test, min_per_class=self.min_per_class)
