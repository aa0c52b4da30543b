"""The server attack as one object: ``FeatureRecovery(config).attack(pair, knowledge)``, its threat model in the
signature (θ, θ_u and the declared knowledge). The library, the pipeline (every command and experiment) and the
audit all run feature recovery through it."""

from __future__ import annotations

from typing import Any

from unlearnleak.attacks.feature_recovery.attack import recover
from unlearnleak.attacks.feature_recovery.config import FeatureRecoveryConfig
from unlearnleak.attacks.feature_recovery.learned_prior import LearnedPrior, learned_prior_for
from unlearnleak.attacks.feature_recovery.result import Reconstruction
from unlearnleak.knowledge import ServerKnowledge
from unlearnleak.pair import ModelPair


def config_repr(obj: Any, config: Any, **shown: Any) -> str:
    """``Name(field=value, …)`` over every field of the pydantic ``config`` (run settings included), ``shown``
    replacing some values."""
    values = {name: getattr(config, name) for name in type(config).model_fields} | shown
    return f"{type(obj).__name__}({', '.join(f'{k}={v!r}' for k, v in values.items())})"


class FeatureRecovery:
    """The white-box server attack: recover D_u from (θ, θ_u) and the declared knowledge (docs/paper.md §2)."""

    def __init__(self, config: FeatureRecoveryConfig | None = None, *, learned_prior: LearnedPrior | None = None,
                 **settings: Any) -> None:
        """``config``, or its fields as keywords; ``learned_prior``: the server's public images, already loaded
        (default: loaded from ``config.learned_prior`` when the attack runs; None there too: off)."""
        self.config = config if config is not None else FeatureRecoveryConfig(**settings)
        self.learned_prior = learned_prior

    def prior_for(self, pair: ModelPair) -> LearnedPrior | None:
        """The learned prior this attack uses on ``pair`` (None: off)."""
        spec = self.config.learned_prior
        if self.learned_prior is not None or spec is None:
            return self.learned_prior
        return learned_prior_for(spec, input_shape=pair.spec.input_shape)

    def attack(self, pair: ModelPair, knowledge: ServerKnowledge | None = None) -> Reconstruction:
        """The reconstruction; its ``config["knowledge_used"]`` names the knowledge parts used."""
        c = self.config
        return recover(pair, knowledge, preset=c.preset, iterations=c.iterations, restarts=c.restarts,
                       device=c.device, seed=c.seed, mode=c.mode, k=c.k, time_budget=c.time_budget,
                       learned_prior=self.prior_for(pair), **c.overrides)

    def __repr__(self) -> str:
        if self.learned_prior is None:
            return config_repr(self, self.config)
        return config_repr(self, self.config, learned_prior=self.learned_prior.data.source)
