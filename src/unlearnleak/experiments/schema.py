"""The experiment config: one YAML file names a whole experiment (data, model, scenario, unlearning, defense,
attacks, metrics, seeds, device, and the grid of a sweep); it expands into cells keyed by a config hash.

A config is valid on any machine: the device is only checked for syntax here, and for existence when a cell
runs. ``--quick`` applies the config's own ``quick`` overrides (a minutes-long variant on the shared subsets);
``--set a.b=c`` overrides win over both the file and ``quick``.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from unlearnleak.errors import ConfigError
from unlearnleak.experiments.config import (
    apply_override,
    fill_section_defaults,
    read_yaml_mapping,
    set_path,
    validation_message,
)
from unlearnleak.registry import registered
from unlearnleak.scenario import ScenarioConfig

ImageMetric = Literal["psnr", "ssim", "lpips"]
_ALL_METRICS: tuple[ImageMetric, ...] = ("psnr", "ssim", "lpips")
TargetMode = Literal["auto", "approximate", "exact"]
# Fields that name or describe an experiment but change no number: left out of the cell hash.
_PRESENTATION = ("name", "description", "expected_runtime")


class DefenseSpec(BaseModel):
    """A registered defense applied to θ_u before release, with its parameters (checked when loaded)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    params: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check(self) -> DefenseSpec:
        from unlearnleak.defenses import defense_params

        try:
            defense_params(self.name, self.params)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        return self


class FeatureRecoverySpec(BaseModel):
    """The server's white-box attack: preset, budget, target mode and inversion overrides."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    preset: str = "best"
    iterations: int | None = Field(None, ge=1)  # None: the preset's
    restarts: int | None = Field(None, ge=1)
    mode: TargetMode = "auto"  # auto: exact when the scenario's unlearning is exact, else approximate
    time_budget: float | None = Field(None, gt=0, allow_inf_nan=False)  # seconds per attack
    overrides: dict[str, Any] = Field(default_factory=dict)  # InversionConfig fields (e.g. total_variation)

    @field_validator("preset")
    @classmethod
    def _known_preset(cls, value: str) -> str:
        from unlearnleak.attacks.feature_recovery import PRESETS

        return registered(PRESETS, value)


class LabelInferenceSpec(BaseModel):
    """The user's black-box attack: probe generator, probes per class and the calibrated decision rule."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    generator: str = "public"
    per_class: int = Field(10, ge=1, le=100_000)
    top_k: int = Field(1, ge=1)
    statistic: Literal["log_odds", "probability"] = "log_odds"
    level: float = Field(0.05, gt=0, lt=1)  # false-detection rate of the "detected" verdict
    calibration: str = "auto"
    test: Literal["student", "robust", "lower"] = "student"  # centre/spread of the other classes' changes
    min_per_class: int = Field(3, ge=1)  # fewer probes for any class: no verdict (decision.MIN_PER_CLASS)
    max_seconds: float | None = Field(None, gt=0, allow_inf_nan=False)
    params: dict[str, Any] = Field(default_factory=dict)  # generator parameters

    @field_validator("generator")
    @classmethod
    def _known_generator(cls, value: str) -> str:
        from unlearnleak.attacks.label_inference import PROBE_GENERATORS

        return registered(PROBE_GENERATORS, value)

    @field_validator("calibration")
    @classmethod
    def _known_calibration(cls, value: str) -> str:
        from unlearnleak.attacks.label_inference import CALIBRATORS

        return registered(CALIBRATORS, value)


class AttacksConfig(BaseModel):
    """Which attacks run on each cell (null switches one off)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    feature_recovery: FeatureRecoverySpec | None = Field(default_factory=FeatureRecoverySpec)
    label_inference: LabelInferenceSpec | None = None


class ExperimentConfig(BaseModel):
    """A whole experiment; ``sweep`` (dotted key → values) × ``seeds`` spans its cells."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    name: str = "experiment"
    description: str = ""
    expected_runtime: str | None = None  # measured on the reference 2-core CPU, e.g. "25 min (quick: 2 min)"
    scenario: ScenarioConfig = Field(default_factory=ScenarioConfig)
    defense: DefenseSpec | None = None
    attacks: AttacksConfig = Field(default_factory=AttacksConfig)
    metrics: list[ImageMetric] = Field(default_factory=lambda: list(_ALL_METRICS))
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    device: str = "cpu"
    sweep: dict[str, list[Any]] = Field(default_factory=dict)
    quick: dict[str, Any] = Field(default_factory=dict)

    @field_validator("device")
    @classmethod
    def _device_syntax(cls, value: str) -> str:
        try:
            kind = torch.device(value).type
        except RuntimeError:
            kind = ""
        if kind not in ("cpu", "cuda"):
            raise ValueError("device must be 'cpu', 'cuda' or 'cuda:N'")
        return value

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, value: list[int]) -> list[int]:
        if len(set(value)) != len(value):
            raise ValueError("seeds must be distinct")
        if any(s < 0 for s in value):
            raise ValueError("seeds must be ≥ 0")
        return value

    @field_validator("sweep")
    @classmethod
    def _sweep(cls, value: dict[str, list[Any]]) -> dict[str, list[Any]]:
        for key, values in value.items():
            parts = _sweep_keys(key)
            for part in parts:
                if part in ("seeds", "sweep", "quick") or part.startswith(("sweep.", "quick.")):
                    raise ValueError(f"sweep key {key!r}: seeds go in `seeds`; sweep and quick cannot be swept")
            if not values:
                raise ValueError(f"sweep key {key!r} lists no values")
            if len(parts) > 1:
                for v in values:
                    if not isinstance(v, list) or len(v) != len(parts):
                        raise ValueError(f"sweep key {key!r} sets {len(parts)} keys together: each value must be "
                                         f"a list of {len(parts)} values, got {v!r}")
        return value

    @model_validator(mode="after")
    def _something_to_run(self) -> ExperimentConfig:
        if self.attacks.feature_recovery is None and self.attacks.label_inference is None:
            raise ValueError("attacks: both attacks are null; enable attacks.feature_recovery or "
                             "attacks.label_inference")
        return self

    def cell_seed(self) -> int:
        """The seed of a cell (an expanded config holds exactly one)."""
        if len(self.seeds) != 1:
            raise ConfigError(f"a cell holds one seed, this config lists {self.seeds}; expand it first")
        return self.seeds[0]

    def scenario_for_run(self) -> ScenarioConfig:
        """The cell's ScenarioConfig with the experiment's seed and device (checked to exist now)."""
        from unlearnleak.devices import check_device

        check_device(self.device)
        return self.scenario.model_copy(update={"seed": self.cell_seed(), "device": self.device})


@dataclass(frozen=True)
class Cell:
    """One point of the grid: the swept values (and seed) that name it, and its full config."""

    params: dict[str, Any]
    config: ExperimentConfig

    @property
    def hash(self) -> str:
        """Its key in results.jsonl and its folder under cells/."""
        return cell_hash(self.config)


def _validate(data: dict[str, Any], what: str) -> ExperimentConfig:
    data = fill_section_defaults(ExperimentConfig, data)
    try:
        return ExperimentConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(validation_message(exc, what, model=ExperimentConfig)) from exc


SHIPPED_CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def shipped_configs() -> list[str]:
    """Names of the configs shipped with the package (e.g. "paper/fig3_cifar10"), for listings and errors."""
    return sorted(p.relative_to(SHIPPED_CONFIGS).with_suffix("").as_posix() for p in SHIPPED_CONFIGS.rglob("*.yaml"))


def resolve_config_path(path: str | Path) -> Path:
    """``path`` if it is a file, else the shipped config of that name ("paper/fig3_cifar10"), else an error."""
    p = Path(path)
    if p.is_file():
        return p
    if not p.suffix or p.suffix in (".yaml", ".yml"):
        name = Path(str(path).removeprefix("configs/"))
        shipped = SHIPPED_CONFIGS / name.with_suffix(".yaml")
        if shipped.is_file():
            return shipped
    names = shipped_configs()
    raise ConfigError(f"experiment config {path} does not exist; give a YAML file or a shipped config name "
                      f"({', '.join(names[:6])}{', …' if len(names) > 6 else ''}; all: unlearnleak run --list)")


def load_experiment(path: str | Path | None, sets: list[str] | None = None, quick: bool = False
                    ) -> ExperimentConfig:
    """The experiment in YAML ``path`` (None: all defaults) ← its ``quick`` section if asked ← ``--set``s.

    Every cell of the sweep is validated too, so that a bad sweep value fails now, naming its key.
    """
    path = resolve_config_path(path) if path is not None else None
    data = read_yaml_mapping(path, "experiment config") if path is not None else {}
    what = f"experiment config {path}" if path is not None else "experiment config"
    if quick:
        section = data.get("quick")
        if not isinstance(section, dict) or not section:
            raise ConfigError(f"--quick: {what} has no `quick:` section of overrides; run it without --quick "
                              "or add one (dotted key: value)")
        for key, value in section.items():
            set_path(data, str(key), copy.deepcopy(value), f"quick: {key}")
    for assignment in sets or []:
        apply_override(data, assignment)
    scenario = data.get("scenario")
    for key, where in (("device", "the top-level `device` (one device per experiment)"),
                       ("seed", "the top-level `seeds` list")):
        if isinstance(scenario, dict) and key in scenario:
            raise ConfigError(f"{what}: scenario.{key} is set by the experiment; use {where} instead")
    config = _validate(data, what)
    expand_cells(config)
    return config


def _sweep_keys(key: str) -> list[str]:
    """The dotted keys a sweep entry sets: "a.b" alone, or "a.b,c.d" set together (zipped values)."""
    return [part.strip() for part in key.split(",")]


def expand_cells(config: ExperimentConfig) -> list[Cell]:
    """The sweep's grid (keys in file order; "a,b" keys zipped) × seeds, each cell validated, with one seed."""
    keys = list(config.sweep)
    base = config.model_dump(mode="json")
    base["sweep"], base["quick"] = {}, {}
    cells = []
    for values in itertools.product(*(config.sweep[k] for k in keys)):
        data = copy.deepcopy(base)
        params: dict[str, Any] = {}
        for key, value in zip(keys, values, strict=True):
            parts = _sweep_keys(key)
            for part, v in zip(parts, value if len(parts) > 1 else [value], strict=True):
                set_path(data, part, copy.deepcopy(v), f"sweep: {part}")
                params[part] = v
        if "scenario.model" in params and "scenario.model_kwargs" not in params \
                and "model_kwargs" not in config.scenario.model_fields_set:
            data["scenario"].pop("model_kwargs", None)  # each swept model gets its own default kwargs
        shown = ", ".join(f"{k}={v!r}" for k, v in params.items())
        for seed in config.seeds:
            data["seeds"] = [seed]
            cell_config = _validate(copy.deepcopy(data), f"sweep cell ({shown or 'no sweep'}, seed={seed})")
            cells.append(Cell(params={**params, "seed": seed}, config=cell_config))
    return cells


def cell_hash(config: ExperimentConfig) -> str:
    """sha256 (16 hex) of the canonical JSON of everything in ``config`` that can change a number."""
    data = config.model_dump(mode="json", exclude=set(_PRESENTATION))
    data["scenario"].pop("cache_dir", None)  # where θ0 is cached changes nothing
    text = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
