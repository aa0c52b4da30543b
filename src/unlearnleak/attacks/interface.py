"""One attacker interface for both attacks: objects built from validated configs, with a ``__repr__``.

In the spirit of breaching's ``reconstruct(payload, knowledge)``, each attack states its threat model in its
signature: ``FeatureRecovery(config).attack(pair, knowledge)`` (the white-box server) and
``LabelInference(config).attack(original_oracle, unlearned_oracle)`` (the black-box user). They are thin
wrappers over :func:`~unlearnleak.attacks.feature_recovery.recover` and the label-inference pipeline.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from unlearnleak.attacks.feature_recovery import Reconstruction, recover
from unlearnleak.attacks.feature_recovery.learned_prior import LearnedPrior
from unlearnleak.attacks.feature_recovery.target_gradient import TargetMode
from unlearnleak.attacks.label_inference import (
    PROBE_GENERATORS,
    DecisionConfig,
    LabelGuess,
    ProbeSet,
    generate_probes,
    infer_label,
)
from unlearnleak.errors import ConfigError, QueryBudgetExceeded
from unlearnleak.knowledge import ServerKnowledge
from unlearnleak.oracle import Oracle
from unlearnleak.pair import ModelPair


def _repr(obj: Any, config: BaseModel) -> str:
    fields = ", ".join(f"{k}={v!r}" for k, v in config.model_dump().items())
    return f"{type(obj).__name__}({fields})"


class FeatureRecoveryConfig(BaseModel):
    """Settings of the server attack (see ``recover`` for their meaning)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    preset: str = "best"
    iterations: int | None = Field(None, ge=1)
    restarts: int | None = Field(None, ge=1)
    mode: TargetMode = "auto"
    k: int | None = Field(None, ge=1)
    seed: int = 0
    time_budget: float | None = Field(None, gt=0, allow_inf_nan=False)
    device: str = "cpu"
    overrides: dict[str, Any] = Field(default_factory=dict)


class FeatureRecovery:
    """The white-box server attack: recover D_u from (θ, θ_u) and the declared knowledge (docs/paper.md §2)."""

    def __init__(self, config: FeatureRecoveryConfig | None = None, *, learned_prior: LearnedPrior | None = None,
                 **settings: Any) -> None:
        self.config = config or FeatureRecoveryConfig(**settings)
        self.learned_prior = learned_prior  # the server's public images (None: the learned prior is off)

    def attack(self, pair: ModelPair, knowledge: ServerKnowledge | None = None) -> Reconstruction:
        """The reconstruction; its ``config["knowledge_used"]`` names the knowledge parts used."""
        c = self.config
        return recover(pair, knowledge, preset=c.preset, iterations=c.iterations, restarts=c.restarts,
                       device=c.device, seed=c.seed, mode=c.mode, k=c.k, time_budget=c.time_budget,
                       learned_prior=self.learned_prior, **c.overrides)

    def __repr__(self) -> str:
        text = _repr(self, self.config)
        if self.learned_prior is None:
            return text
        return f"{text[:-1]}, learned_prior={self.learned_prior.data.source!r})"


class LabelInferenceConfig(BaseModel):
    """Settings of the user attack: probe generator, probes per class, decision rule."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    generator: str = "nes"
    per_class: int = Field(5, ge=1, le=100_000)
    top_k: int = Field(1, ge=1)
    statistic: str = "log_odds"
    min_per_class: int = Field(3, ge=1)  # fewer probes for any class: no verdict
    seed: int = 0
    max_seconds: float | None = Field(None, gt=0, allow_inf_nan=False)
    params: dict[str, Any] = Field(default_factory=dict)


@dataclass(frozen=True)
class LabelInferenceResult:
    """The guess (None when the budget ran out first), the probes made (None: none), and why it is partial."""

    guess: LabelGuess | None
    probes: ProbeSet | None
    partial: str | None = None

    @property
    def knowledge_used(self) -> tuple[str, ...]:
        """Nothing of the server's knowledge: the user attack sees only the two oracles' answers."""
        return ()


class LabelInference:
    """The black-box user attack: probe θ, replay the probes to θ_u, name the class that lost most (§4)."""

    def __init__(self, config: LabelInferenceConfig | None = None, **settings: Any) -> None:
        self.config = config or LabelInferenceConfig(**settings)
        PROBE_GENERATORS.get(self.config.generator)  # an unknown generator fails here, listing the known ones

    def attack(self, original: Oracle, unlearned: Oracle) -> LabelInferenceResult:
        """Probes made against ``original`` only, then one query per probe to ``unlearned``."""
        c = self.config
        try:
            probes = generate_probes(c.generator, original, original.num_classes, c.per_class,
                                     original.input_shape, c.seed, max_seconds=c.max_seconds, **c.params)
        except QueryBudgetExceeded as exc:
            return LabelInferenceResult(None, None, f"the original model's query budget ran out: {exc}")
        except ConfigError as exc:
            if original.remaining is None or "budget" not in str(exc):
                raise
            return LabelInferenceResult(None, None, f"the original model's query budget ran out before any probe "
                                                    f"was finished: {exc}")
        partial = probes.notes if "budget" in probes.notes else None
        try:
            guess = infer_label(original, unlearned, probes,
                                config=DecisionConfig(top_k=c.top_k, statistic=c.statistic,
                                                      min_per_class=c.min_per_class))
        except QueryBudgetExceeded as exc:
            return LabelInferenceResult(None, probes, f"the unlearned endpoint's budget ran out: {exc}")
        return LabelInferenceResult(guess, probes, partial)

    def __repr__(self) -> str:
        return _repr(self, self.config)
