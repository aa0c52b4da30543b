"""The typed rows of results.jsonl: a cell, each attack's result, and the baselines printed beside its numbers.

One model per part of a row, so that the runner and the one-cell commands write, the report reads and the tests
build the same shape; `run_folder` validates every line through :class:`CellRow` when it reads or writes one.
Keys a model does not name are kept (rows written by earlier versions carry some: ``mean_colour``, ``thumbnail``,
a flat tabular baseline), never required. A number that was not finite is stored as the string "nan"/"inf"
(``storage.to_json``) and read back as that float.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

__all__ = ["BASELINE_NAMES", "CHANCE", "Baselines", "CellResults", "CellRow", "FeatureRecoveryResult",
           "FeatureRecoverySample", "LabelInferenceResult", "RowError", "Scores", "parse_row"]

Scores = dict[str, float | None]  # metric name → its value (None: not measured)
# Image baselines, as ``unlearnleak.metrics.baselines`` names and defines them (a test keeps the two equal), and
# the tabular one (the feature-mean row of data the attacker may hold). Labels are read beside ``chance``.
BASELINE_NAMES = ("dataset_mean_colour", "own_mean_colour", "thumbnail_4x4")
TABULAR_BASELINE = "feature_mean"
CHANCE = "chance"
CELL_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"  # a cell key (a hash, or a command's name): safe as a folder name


class _Part(BaseModel):
    """Lax on keys it does not name (older rows), strict on the types of those it does."""

    model_config = ConfigDict(extra="allow", frozen=True)

    def to_dict(self) -> dict[str, Any]:
        """The JSON-able dict this part was built from (keys never set are left out, extra keys kept)."""
        return self.model_dump(mode="python", exclude_unset=True)


# Rows written before the baselines were named apart called the dataset's mean colour "mean_colour" (the same
# number); their "thumbnail" was another definition (bilinear) and keeps its own name.
LEGACY_NAMES = {"mean_colour": "dataset_mean_colour"}


class Baselines(_Part):
    """What an attacker gets without the pair, scored with the attack's own metrics (name → metric → value).

    Read from older rows: ``mean_colour`` becomes ``dataset_mean_colour``; metrics given flat (the tabular form
    of earlier rows) become ``feature_mean``.
    """

    dataset_mean_colour: Scores | None = None
    own_mean_colour: Scores | None = None
    thumbnail_4x4: Scores | None = None
    feature_mean: Scores | None = None

    @model_validator(mode="before")
    @classmethod
    def _named(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        def scalar(key: str, value: Any) -> bool:  # a metric of the flat form, not a baseline's scores
            return key not in cls.model_fields and (value is None or isinstance(value, int | float | str))

        named = {LEGACY_NAMES.get(k, k) if LEGACY_NAMES.get(k, k) not in data else k: v
                 for k, v in data.items() if not scalar(k, v)}
        flat = {k: v for k, v in data.items() if scalar(k, v)}
        if flat:
            named.setdefault(TABULAR_BASELINE, flat)
        return named

    def named(self) -> dict[str, Scores]:
        """Every baseline this row scored, by name (those it did not score left out)."""
        return {name: scores for name, scores in self.to_dict().items() if isinstance(scores, dict)}


class FeatureRecoverySample(_Part):
    """One sample of D_u: its scores against the reconstruction matched to it, its true and recovered label."""

    index: int
    reconstruction: int | None = None
    psnr: float | None = None
    ssim: float | None = None
    lpips: float | None = None
    mse: float | None = None
    max_abs_error: float | None = None
    true_label: int | None = None
    label: int | None = None


class FeatureRecoveryResult(_Part):
    """The server attack's section of a row: means and per-sample scores, baselines, the race, its files.

    ``scored`` is False when there was no ground truth to score against (`recover --no-eval`, a pair without
    ``ground_truth.safetensors``): then ``metrics`` and ``baselines`` are None. ``learned_prior`` and
    ``decoder_alone`` record the decoder race (None when it was off).
    """

    preset: str | None = None
    mode: str | None = None
    method: str | None = None
    iterations: int | None = None
    seconds: float | None = None
    target_cosine: float | None = None
    image: bool = True
    label_source: str | None = None
    scored: bool = True
    metrics: Scores | None = None
    samples: list[FeatureRecoverySample] = Field(default_factory=list)
    baselines: Baselines | None = None
    artifacts: dict[str, str | None] = Field(default_factory=dict)
    learned_prior: dict[str, Any] | None = None
    decoder_alone: Scores | None = None
    attacked: str | None = None


class LabelInferenceResult(_Part):
    """The user attack's section of a row: the guess, the deleted class's rank, the test, the queries spent.

    ``correct`` (argmin names a deleted class) is None without ground truth or without a verdict; ``chance`` is
    the baseline: the probability that a uniformly random class is a deleted one.
    """

    generator: str | None = None
    per_class: int | None = None
    statistic: str | None = None
    deleted: list[int] | None = None
    best: int | None = None
    ranked: list[int] = Field(default_factory=list)
    changes: list[float | None] = Field(default_factory=list)
    correct: bool | None = None
    detected: bool | None = None
    detected_correct: bool | None = None
    verdict: str | None = None
    reason: str | None = None
    lacking: list[int] = Field(default_factory=list)
    min_per_class: int | None = None
    deleted_rank: int | None = None
    predicted: list[int] = Field(default_factory=list)
    level: float | None = None
    p_value: float | None = None
    chance: float | None = None
    calibration: str | dict[str, Any] | None = None
    # own null pairs: {pairs, public_rows, seconds, cached, computed_seconds}; otherwise {note: why not}
    calibration_info: dict[str, Any] | None = None
    probes: int | None = None
    probe_counts: list[int] = Field(default_factory=list)
    queries_original: int | None = None
    queries_unlearned: int | None = None
    artifacts: dict[str, str | None] = Field(default_factory=dict)


class CellResults(_Part):
    """What a cell computed, as its function returns it: the setting (dataset, model, method, k, seed), the
    models' utility and forgetting, and the results of the attacks it ran (None: not run)."""

    seed: int | None = None
    dataset: str | None = None
    model: str | None = None
    method: str | None = None
    kind: str | None = None
    n_train: int | None = None
    k: int | None = None
    forget: dict[str, Any] | None = None
    defense: dict[str, Any] | str | None = None  # a string: the defense name alone, in older rows
    utility: Scores | None = None
    forgetting: Scores | None = None
    feature_recovery: FeatureRecoveryResult | None = None
    label_inference: LabelInferenceResult | None = None

    def section(self, attack: str) -> FeatureRecoveryResult | LabelInferenceResult | None:
        """The result of ``attack`` ("feature_recovery" or "label_inference"), None when it did not run."""
        value = getattr(self, attack)
        assert value is None or isinstance(value, FeatureRecoveryResult | LabelInferenceResult)
        return value


_HEAD = ("cell", "status", "params", "config", "seconds", "error")


class CellRow(CellResults):
    """One line of results.jsonl: a cell (its id, status, swept params, config, time, error) and its results."""

    cell: str = Field(pattern=CELL_PATTERN)
    status: Literal["ok", "error"]
    params: dict[str, Any] | None = None
    config: dict[str, Any] | None = None
    seconds: float | None = None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The row as JSON-able dict, the cell's id and status first (as a reader of the file expects them)."""
        data = super().to_dict()
        return {**{key: data.pop(key) for key in _HEAD if key in data}, **data}


class RowError(ValueError):
    """A JSON object that is not a row; the message names the first wrong key in one line."""


def parse_row(data: Any) -> CellRow:
    """``data`` (a decoded JSON line) as a :class:`CellRow`; RowError naming the first wrong key otherwise."""
    if not isinstance(data, dict):
        raise RowError(f"is a JSON {type(data).__name__}, not an object (a row)")
    try:
        return CellRow.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "the row"
        given = first.get("input")
        shown = repr(given) if not isinstance(given, dict | list) else f"a {type(given).__name__}"
        if len(shown) > 60:
            shown = shown[:57] + "..."
        message = first["msg"][:1].lower() + first["msg"][1:]
        raise RowError(f"`{where}`: {message} (got {shown})") from None
