"""Study: how much each unlearning method leaks — feature recovery and label inference against every method,
on the same forget sets, one table (issue 10). SISA is attacked where it can be: the affected shard's weights
(feature recovery) and the served ensemble's outputs (label inference).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from unlearnleak.errors import ConfigError
from unlearnleak.experiments.config import finite_values
from unlearnleak.experiments.studies.attacks import (
    AttackSettings,
    image_baselines,
    infer_and_score,
    make_probes,
    recover_and_score,
)
from unlearnleak.experiments.studies.setting import Prepared, Private, Splits, StudySetting, prepare
from unlearnleak.metrics import LPIPS
from unlearnleak.models import ModelSpec, build_model, load_weights
from unlearnleak.registry import registered
from unlearnleak.unlearning import StateDict, check_params, unlearn_measured
from unlearnleak.unlearning.sisa import SisaParams, affected_shards, shard_pair, train_sisa

DEFAULT_METHODS: dict[str, dict[str, Any]] = {
    "exact": {}, "gradient_ascent": {}, "retrain": {}, "sisa": {}, "finetune": {}, "neggrad_plus": {},
    "first_order": {}, "second_order": {}, "random_label": {},
}
EXACT_TARGET = {"exact"}  # methods whose θ_u is a retrain of θ's fine-tune from θ0: the exact ∇* applies


class AttackConfig(BaseModel):
    """Attack strength (the `best` inversion preset; black-box `public` probes)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    preset: str = "best"
    iterations: int = Field(300, ge=1, le=1_000_000)
    restarts: int = Field(1, ge=1, le=1000)
    generator: str = "public"
    per_class: int = Field(10, ge=1, le=100_000)

    @field_validator("preset")
    @classmethod
    def _known_preset(cls, value: str) -> str:
        from unlearnleak.attacks.feature_recovery import PRESETS

        return registered(PRESETS, value)

    @field_validator("generator")
    @classmethod
    def _known_generator(cls, value: str) -> str:
        from unlearnleak.attacks.label_inference import PROBE_GENERATORS

        return registered(PROBE_GENERATORS, value)

    def settings(self, seed: int, device: str) -> AttackSettings:
        return AttackSettings(preset=self.preset, iterations=self.iterations, restarts=self.restarts,
                              generator=self.generator, per_class=self.per_class, seed=seed, device=device)


class MethodsStudyConfig(BaseModel):
    """Which methods (with their params) to attack, in which setting, at which attack strength."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    setting: StudySetting = Field(default_factory=StudySetting)
    attack: AttackConfig = Field(default_factory=AttackConfig)
    methods: dict[str, dict[str, Any]] = Field(default_factory=lambda: dict(DEFAULT_METHODS), min_length=1)

    @model_validator(mode="after")
    def _check(self) -> MethodsStudyConfig:
        for name, params in self.methods.items():
            try:
                check_params(name, params)
                finite_values(params, f"methods.{name}")
            except ConfigError as exc:  # → a pydantic error naming the method
                raise ValueError(str(exc)) from None
        return self


Row = dict[str, Any]


def _model(spec: ModelSpec, state: StateDict) -> torch.nn.Module:
    model = build_model(spec)
    load_weights(model, state)
    return model.eval()


def run_methods_study(config: MethodsStudyConfig, lpips: LPIPS | None,
                      log: Callable[[str], None] = print, *, splits: Splits | None = None) -> Iterator[Row]:
    """Yield one JSON-able row per (method, attack, forget set); the first row holds the baselines."""
    prep = prepare(config.setting, splits)
    seed, device = config.setting.seed, config.setting.device
    attack = config.attack.settings(seed, device)
    positions = config.setting.recovery_positions
    forget_x = torch.cat([prep.recovery.x[[p]] for p in positions])
    yield {"kind": "baselines", "image": image_baselines(forget_x, prep.spec.mean, lpips),
           "label_chance": 1 / prep.spec.num_classes, "base_test_accuracy": prep.base_test_accuracy}
    probes = make_probes(_model(prep.spec, prep.label.original), prep.spec, prep.public, attack)
    for method, params in config.methods.items():
        log(f"method {method}")
        if method == "sisa":  # SISA serves its own ensemble as θ: attacked on the shard and the vote
            yield from _sisa_rows(prep, SisaParams(**params), attack, lpips)
            continue
        for position in positions:
            yield _recovery_row(prep, method, params, position, attack, lpips)
        for class_id in config.setting.label_classes:
            mask = prep.label_mask(class_id)
            outcome = unlearn_measured(method, prep.context(prep.label, mask, params),
                                       (prep.test.x, prep.test.y))
            result = infer_and_score(_model(prep.spec, prep.label.original), _model(prep.spec, outcome.state),
                                     prep.spec, probes, class_id, attack)
            yield {"kind": "label", "method": method, "class_id": class_id, "k": int(mask.sum()),
                   **outcome.record(), **result}


def _recovery_row(prep: Prepared, method: str, params: dict[str, Any], position: int, attack: AttackSettings,
                  lpips: LPIPS | None) -> Row:
    mask = prep.recovery_mask(position)
    outcome = unlearn_measured(method, prep.context(prep.recovery, mask, params), (prep.test.x, prep.test.y))
    mode: Literal["approximate", "exact"] = "exact" if method in EXACT_TARGET else "approximate"
    scores = recover_and_score(prep.spec, prep.recovery.original, outcome.state, prep.recovery.x[mask],
                               prep.recovery.y[mask], mode=mode, base=prep.base, n_train=prep.setting.n_recovery,
                               attack=attack, lpips=lpips)
    scores.pop("reconstruction")
    return {"kind": "recovery", "method": method, "position": position, **outcome.record(), **scores}


def _sisa_private(prep: Prepared, which: Private, params: SisaParams) -> tuple[ModelSpec, StateDict, StateDict, float]:
    started = time.perf_counter()
    spec, original, base = train_sisa(prep.spec, prep.base, which.x, which.y, params, seed=prep.setting.seed,
                                      device=prep.setting.device)
    return spec, original, base, time.perf_counter() - started


def _sisa_rows(prep: Prepared, params: SisaParams, attack: AttackSettings, lpips: LPIPS | None) -> Iterator[Row]:
    """SISA: θ is the ensemble trained by SISA on each D_ft; the server attacks the affected shard's pair."""
    raw = params.model_dump()
    for part, which in (("recovery", prep.recovery), ("label", prep.label)):
        spec, original, base, train_seconds = _sisa_private(prep, which, params)
        mine = Private(which.x, which.y, original, which.finetune)
        ens = Prepared(setting=prep.setting, spec=spec, base=base, recovery=mine, label=mine, test=prep.test,
                       public=prep.public,
                       base_test_accuracy=prep.base_test_accuracy)
        if part == "recovery":
            for position in prep.setting.recovery_positions:
                mask = prep.recovery_mask(position)
                ctx = ens.context(ens.recovery, mask, raw)
                outcome = unlearn_measured("sisa", ctx, (prep.test.x, prep.test.y))
                shard = affected_shards(ctx, params)[0]
                m_spec, before, after = shard_pair(spec, original, outcome.state, shard)
                scores = recover_and_score(m_spec, before, after, which.x[mask], which.y[mask],
                                           mode="approximate", base=None, n_train=which.x.shape[0],
                                           attack=attack, lpips=lpips)
                scores.pop("reconstruction")
                yield {"kind": "recovery", "method": "sisa", "position": position, "attacked": f"shard {shard}",
                       "sisa_training_seconds": train_seconds, **outcome.record(), **scores}
        else:
            probes = make_probes(_model(spec, original), spec, prep.public, attack)
            for class_id in prep.setting.label_classes:
                mask = prep.label_mask(class_id)
                ctx = ens.context(ens.label, mask, raw)
                outcome = unlearn_measured("sisa", ctx, (prep.test.x, prep.test.y))
                result = infer_and_score(_model(spec, original), _model(spec, outcome.state), spec, probes,
                                         class_id, attack)
                yield {"kind": "label", "method": "sisa", "class_id": class_id, "k": int(mask.sum()),
                       "attacked": "ensemble outputs", "shards_retrained": affected_shards(ctx, params),
                       "sisa_training_seconds": train_seconds, **outcome.record(), **result}


def summarize_methods(rows: list[Row]) -> dict[str, dict[str, Any]]:
    """Per method: mean ± std of PSNR/SSIM/LPIPS, label accuracy, forgetting and cost."""
    out: dict[str, dict[str, Any]] = {}
    for method in dict.fromkeys(r["method"] for r in rows if "method" in r):
        rec = [r for r in rows if r.get("method") == method and r["kind"] == "recovery"]
        lab = [r for r in rows if r.get("method") == method and r["kind"] == "label"]
        out[method] = {
            "psnr": _stats([r["psnr"] for r in rec]), "ssim": _stats([r["ssim"] for r in rec]),
            "lpips": _stats([r["lpips"] for r in rec]),
            "label_from_gradient": _stats([float(r["label_correct"]) for r in rec]),
            "label_accuracy": _stats([float(r["correct"]) for r in lab]),
            "label_detected": _stats([float(r["detected_correct"]) for r in lab]),
            "forget_acc_before": _stats([r["accuracy"]["original_forget"] for r in lab]),
            "forget_acc_after": _stats([r["accuracy"]["unlearned_forget"] for r in lab]),
            "retain_acc_after": _stats([r["accuracy"]["unlearned_retain"] for r in lab]),
            "test_acc_before": _stats([r["accuracy"]["original_test"] for r in lab]),
            "test_acc_after": _stats([r["accuracy"]["unlearned_test"] for r in lab]),
            "seconds": _stats([r["seconds"] for r in lab]),
            "sample_gradients": _stats([float(r["sample_gradients"]) for r in lab]),
        }
    return out


def _stats(values: list[Any]) -> dict[str, float | int | None]:
    v = [float(x) for x in values if x is not None]
    if not v:
        return {"mean": None, "std": None, "n": 0}
    t = torch.tensor(v, dtype=torch.float64)
    return {"mean": float(t.mean()), "std": float(t.std()) if len(v) > 1 else 0.0, "n": len(v)}
