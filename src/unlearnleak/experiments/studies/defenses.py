"""Study: what each defense costs — sweep its strength on θ_u and measure utility beside attack success.

θ_u comes from one unlearning method (gradient ascent, the paper's approximate method, by default) on the
same forget sets as the methods study; each defense at each strength is applied to θ_u before release, and
both attacks run against (θ, released θ_u). Utility = the released model's test accuracy.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from unlearnleak.defenses import DEFENSES, DefenseContext, defend, defense_params
from unlearnleak.errors import ConfigError
from unlearnleak.experiments.config import finite_values
from unlearnleak.experiments.studies.attacks import image_baselines, infer_and_score, make_probes, recover_and_score
from unlearnleak.experiments.studies.methods import EXACT_TARGET, AttackConfig, _model, _stats
from unlearnleak.experiments.studies.setting import Prepared, Splits, StudySetting, prepare
from unlearnleak.metrics import LPIPS
from unlearnleak.training import evaluate
from unlearnleak.unlearning import StateDict, check_params, unlearn_measured

DEFAULT_SWEEPS: dict[str, list[float]] = {
    "noise": [0.0, 0.003, 0.01, 0.03, 0.1, 0.3],
    "prune": [0.0, 0.3, 0.6, 0.8, 0.9, 0.95],
    "finetune": [0, 1, 2, 4],
}


class DefensesStudyConfig(BaseModel):
    """The unlearning method, each defense's sweep of its strength, and its other (fixed) parameters."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    setting: StudySetting = Field(default_factory=StudySetting)
    attack: AttackConfig = Field(default_factory=AttackConfig)
    method: str = "gradient_ascent"
    method_params: dict[str, Any] = Field(default_factory=dict)
    sweeps: dict[str, list[float]] = Field(default_factory=lambda: dict(DEFAULT_SWEEPS), min_length=1)
    defense_params: dict[str, dict[str, Any]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check(self) -> DefensesStudyConfig:
        try:
            check_params(self.method, self.method_params)
            finite_values(self.method_params, "method_params")
            finite_values(self.defense_params, "defense_params")
            for name, values in self.sweeps.items():
                if not values:
                    raise ConfigError(f"sweeps.{name} lists no strengths; give at least one (0 is no defense)")
                if len(set(values)) != len(values):
                    raise ConfigError(f"sweeps.{name} lists {values} with repeats; each strength must appear once")
                for value in values:
                    self.point_params(name, value)
            unknown = set(self.defense_params) - set(self.sweeps)
            if unknown:
                raise ConfigError(f"defense_params names {sorted(unknown)}, which have no sweep")
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        return self

    def point_params(self, name: str, value: float) -> dict[str, Any]:
        """The parameters of defense ``name`` at strength ``value``, validated by the defense's own model (so an
        integer strength such as fine-tuning epochs refuses 0.5 instead of running 0)."""
        strength = DEFENSES.get(name).strength
        params = {**self.defense_params.get(name, {}), strength: value}
        parsed = defense_params(name, params)
        return {**params, strength: getattr(parsed, strength)}


def _release(prep: Prepared, state: StateDict, name: str, params: dict[str, Any], mask: torch.Tensor,
             retain_from: Any) -> StateDict:
    ctx = DefenseContext(spec=prep.spec, retain_x=retain_from.x[~mask], retain_y=retain_from.y[~mask],
                         seed=prep.setting.seed, device=prep.setting.device)
    return defend(name, state, ctx, params)


def run_defenses_study(config: DefensesStudyConfig, lpips: LPIPS | None,
                       log: Callable[[str], None] = print, *, splits: Splits | None = None
                       ) -> Iterator[dict[str, Any]]:
    """Yield the baselines row, then one row per (defense, strength, attack, forget set)."""
    prep = prepare(config.setting, splits)
    attack = config.attack.settings(config.setting.seed, config.setting.device)
    positions = config.setting.recovery_positions
    forget_x = torch.cat([prep.recovery.x[[p]] for p in positions])
    yield {"kind": "baselines", "image": image_baselines(forget_x, prep.spec.mean, lpips),
           "label_chance": 1 / prep.spec.num_classes, "base_test_accuracy": prep.base_test_accuracy}
    probes = make_probes(_model(prep.spec, prep.label.original), prep.spec, prep.public, attack)
    mode: Literal["approximate", "exact"] = "exact" if config.method in EXACT_TARGET else "approximate"
    recovery_states = {p: unlearn_measured(config.method, prep.context(prep.recovery, prep.recovery_mask(p),
                                                                       config.method_params)).state
                       for p in positions}
    label_states = {c: unlearn_measured(config.method, prep.context(prep.label, prep.label_mask(c),
                                                                    config.method_params)).state
                    for c in config.setting.label_classes}
    for name, values in config.sweeps.items():
        for value in values:
            params = config.point_params(name, value)
            strength = DEFENSES.get(name).strength
            log(f"defense {name} {strength}={params[strength]}")
            point = {"defense": name, "strength": value, "params": params}
            for p in positions:
                mask = prep.recovery_mask(p)
                released = _release(prep, recovery_states[p], name, params, mask, prep.recovery)
                scores = recover_and_score(prep.spec, prep.recovery.original, released, prep.recovery.x[mask],
                                           prep.recovery.y[mask], mode=mode, base=prep.base,
                                           n_train=prep.setting.n_recovery, attack=attack, lpips=lpips)
                scores.pop("reconstruction")
                yield {"kind": "recovery", **point, "position": p,
                       "test_accuracy": evaluate(_model(prep.spec, released), prep.test.x, prep.test.y), **scores}
            for c in config.setting.label_classes:
                mask = prep.label_mask(c)
                released = _release(prep, label_states[c], name, params, mask, prep.label)
                model = _model(prep.spec, released)
                result = infer_and_score(_model(prep.spec, prep.label.original), model, prep.spec, probes, c, attack)
                yield {"kind": "label", **point, "class_id": c, "test_accuracy": evaluate(model, prep.test.x,
                                                                                         prep.test.y), **result}


def summarize_defenses(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (defense, strength): utility (test accuracy of the released θ_u) and attack success, mean ± std."""
    points = dict.fromkeys((r["defense"], r["strength"]) for r in rows if "defense" in r)
    out = []
    for name, value in points:
        rec = [r for r in rows if r.get("defense") == name and r["strength"] == value and r["kind"] == "recovery"]
        lab = [r for r in rows if r.get("defense") == name and r["strength"] == value and r["kind"] == "label"]
        out.append({"defense": name, "strength": value,
                    "test_accuracy_label_models": _stats([r["test_accuracy"] for r in lab]),
                    "test_accuracy_recovery_models": _stats([r["test_accuracy"] for r in rec]),
                    "psnr": _stats([r["psnr"] for r in rec]), "ssim": _stats([r["ssim"] for r in rec]),
                    "lpips": _stats([r["lpips"] for r in rec]),
                    "label_accuracy": _stats([float(r["correct"]) for r in lab]),
                    "label_detected": _stats([float(r["detected_correct"]) for r in lab])})
    return out
