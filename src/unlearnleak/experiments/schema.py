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
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import torch
import yaml
from pydantic import BaseModel, ConfigDict, Field, Strict, ValidationError, field_validator, model_validator

from unlearnleak.attacks.feature_recovery.config import RUN_SETTINGS as FR_RUN_SETTINGS
from unlearnleak.attacks.feature_recovery.config import FeatureRecoveryConfig
from unlearnleak.attacks.label_inference.config import RUN_SETTINGS as LI_RUN_SETTINGS
from unlearnleak.attacks.label_inference.config import LabelInferenceConfig
from unlearnleak.errors import ConfigError
from unlearnleak.experiments.config import (
    apply_override,
    fill_section_defaults,
    read_yaml_mapping,
    set_path,
    validation_message,
)
from unlearnleak.scenario import ScenarioConfig

ImageMetric = Literal["psnr", "ssim", "lpips"]
_ALL_METRICS: tuple[ImageMetric, ...] = ("psnr", "ssim", "lpips")
# Fields that name or describe an experiment but change no number: left out of the cell hash.
_PRESENTATION = ("name", "description", "expected_runtime")
# The most cells one config may expand to (grid × seeds): each is validated before the first runs, and each
# runs for minutes; a bigger study is several run folders.
MAX_CELLS = 1000
# A seed: a true integer (not `true`), as torch generators take it (64-bit signed, with room for seed + 1).
Seed = Annotated[int, Strict(), Field(ge=0, lt=2**63 - 1)]


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


class AttacksConfig(BaseModel):
    """Which attacks run on each cell (null switches one off), each section the attack's own config (the same
    model the library and the commands use); its run settings (seed, device, k) come from the experiment."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    feature_recovery: FeatureRecoveryConfig | None = Field(default_factory=FeatureRecoveryConfig)
    label_inference: LabelInferenceConfig | None = None

    @model_validator(mode="after")
    def _run_settings_from_the_experiment(self) -> AttacksConfig:
        for name, run_settings, where in (
                ("feature_recovery", FR_RUN_SETTINGS, "the top-level `seeds` and `device`; k is the scenario's"),
                ("label_inference", LI_RUN_SETTINGS, "the top-level `seeds` and `device`")):
            section = getattr(self, name)
            if section is None:
                continue
            default = type(section)()
            for key in run_settings:
                if getattr(section, key) != getattr(default, key):
                    raise ValueError(f"attacks.{name}.{key} is set by the experiment ({where}); remove it")
        return self


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
    seeds: list[Seed] = Field(default_factory=lambda: [0], min_length=1)
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

    @model_validator(mode="after")
    def _registered_names(self) -> ExperimentConfig:
        """The dataset, its splits and the model must be known here (a model may also name code)."""
        from unlearnleak.data import DATASETS
        from unlearnleak.data.base import DATASET_INFO
        from unlearnleak.models import MODELS
        from unlearnleak.models.base import names_code

        scenario = self.scenario
        if scenario.dataset not in DATASETS:
            raise ValueError(f"scenario.dataset: unknown dataset {scenario.dataset!r}; choose one of: "
                             f"{', '.join(DATASETS.names())} (see `unlearnleak data list`)")
        splits = DATASET_INFO[scenario.dataset].splits
        for key in ("train_split", "test_split"):
            split = getattr(scenario, key)
            if split is not None and split not in splits:
                raise ValueError(f"scenario.{key}: dataset {scenario.dataset!r} has no split {split!r}; choose one "
                                 f"of: {', '.join(splits)}")
        if scenario.model not in MODELS and not names_code(scenario.model):
            raise ValueError(f"scenario.model: unknown model {scenario.model!r}; choose one of: "
                             f"{', '.join(MODELS.names())}, or name your own as path/to/file.py:Class "
                             "(with --model-def)")
        return self

    @model_validator(mode="after")
    def _finite(self) -> ExperimentConfig:
        """No NaN or ±inf anywhere, free-form parameter sections included (a defense σ = inf is refused)."""
        from unlearnleak.experiments.config import finite_values

        data = self.model_dump(mode="python", exclude={"quick"})
        for key, value in data.items():
            try:
                finite_values(value, key)
            except ConfigError as exc:
                raise ValueError(str(exc)) from None
        return self

    @model_validator(mode="after")
    def _grid_size(self) -> ExperimentConfig:
        cells = grid_size(self.sweep, len(self.seeds))
        if cells > MAX_CELLS:
            sizes = " × ".join(str(len(v)) for v in self.sweep.values())
            raise ValueError(f"the grid has {cells:,} cells ({sizes + ' values × ' if sizes else ''}"
                             f"{len(self.seeds)} seeds), more than the {MAX_CELLS} one run folder takes; split "
                             "the sweep into several configs (each its own --out), or sweep fewer values")
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


def load_experiment(path: str | Path | None, sets: list[str] | None = None, quick: bool = False, *,
                    grid: Sequence[str] = (), model_defs: Sequence[str] = (), trust_model_code: bool = False
                    ) -> ExperimentConfig:
    """The experiment in YAML ``path`` (None: all defaults) ← its ``quick`` section if asked ← ``--set``s ←
    ``grid`` ("key=[v1, v2]": adds or replaces a swept key).

    Every cell of the sweep is validated too, so that a bad sweep value fails now, naming its key. A model that
    names code (``file.py:Class``) is refused unless ``model_defs`` names the same code (``--model-def``) or
    ``trust_model_code`` is set (Python only): a config, like a manifest, never runs code by itself.
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
    if grid:
        config = with_grid(config, grid)
    else:
        expand_cells(config)
    if not trust_model_code:
        check_model_code(config, model_defs, what=what)
    return config


def with_grid(config: ExperimentConfig, grid: Sequence[str]) -> ExperimentConfig:
    """``config`` with each ``key=[v1, v2]`` of ``grid`` added to (or replacing) its sweep; cells validated."""
    from unlearnleak.errors import one_line
    from unlearnleak.experiments.config import parse_yaml

    sweep = dict(config.sweep)
    given: set[str] = set()
    for item in grid:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--grid {item!r} must look like key=[v1, v2], e.g. --grid scenario.n_train=[8,32]")
        if key in given:
            raise ConfigError(f"--grid {key} is given twice; give its values once, in one list")
        given.add(key)
        try:
            values = parse_yaml(raw)
        except yaml.YAMLError as exc:
            raise ConfigError(f"--grid {item!r}: cannot parse the values ({one_line(str(exc))}); write a YAML "
                              f"list, e.g. {key}=[8, 32]") from exc
        if not isinstance(values, list) or not values:
            raise ConfigError(f"--grid {item!r}: the values must be a non-empty YAML list, e.g. {key}=[8, 32]")
        sweep[key] = values
    try:  # the sweep's own checks (reserved keys, zipped lengths, grid size)
        ExperimentConfig.model_validate({**config.model_dump(mode="json"), "sweep": sweep})
    except ValidationError as exc:
        raise ConfigError(validation_message(exc, "--grid", model=ExperimentConfig)) from exc
    updated = config.model_copy(update={"sweep": sweep})  # keeps which fields were set (e.g. model_kwargs)
    expand_cells(updated)  # a bad value fails now, naming its key
    return updated


def grid_size(sweep: dict[str, list[Any]], seeds: int) -> int:
    """How many cells ``sweep`` × ``seeds`` spans (computed, not expanded)."""
    return math.prod(len(values) for values in sweep.values()) * seeds


def check_model_code(config: ExperimentConfig, model_defs: Sequence[str] = (), *, what: str = "experiment config"
                     ) -> None:
    """Refuse a config whose cells name model code unless the user named the same code (``--model-def``).

    A config is data, like a pair folder's manifest: a run folder's experiment.yaml from someone else must
    not run code on resume. Each ``--model-def`` must be used by some cell (a typo is refused, not ignored).
    """
    from unlearnleak.experiments.config import check_named_code

    named = sorted({cell.config.scenario.model for cell in expand_cells(config)})
    check_named_code([("scenario.model", name) for name in named], model_defs, what)


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
    if data["scenario"].get("pretrain_rows") is None:  # unset: the hash of cells from before the field existed
        data["scenario"].pop("pretrain_rows", None)
    text = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
