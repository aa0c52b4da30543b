"""The user attack as one object: ``LabelInference(config).attack(original_oracle, unlearned_oracle)``, its threat
model in the signature (two query-counting oracles; θ's weights only for the white-box ``gradient`` probes,
held-out real data only for ``public`` probes). The library, the pipeline (every command and experiment) and the
audit all run label inference through it: every generator, level, calibration and test."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from unlearnleak.attacks.label_inference.calibration import Calibration
from unlearnleak.attacks.label_inference.config import LabelInferenceConfig
from unlearnleak.attacks.label_inference.decision import infer_label
from unlearnleak.attacks.label_inference.own_nulls import calibrate_if_tested
from unlearnleak.attacks.label_inference.probes import (
    PROBE_GENERATORS,
    PublicData,
    black_box_generators,
    generate_probes,
)
from unlearnleak.attacks.label_inference.probeset import ProbeSet
from unlearnleak.attacks.label_inference.result import LabelGuess
from unlearnleak.errors import ConfigError, QueryBudgetExceeded
from unlearnleak.oracle import Oracle


@dataclass(frozen=True)
class LabelInferenceResult:
    """The guess (None when the budget ran out first), the probes made (None: none), and why it is partial."""

    guess: LabelGuess | None
    probes: ProbeSet | None
    partial: str | None = None
    calibration_info: Mapping[str, Any] = field(default_factory=dict)  # what ``calibrate`` cost, or why not run

    @property
    def knowledge_used(self) -> tuple[str, ...]:
        """Nothing of the server's knowledge: the user attack sees only the two oracles' answers."""
        return ()


class LabelInference:
    """The black-box user attack: probe θ, replay the probes to θ_u, name the class that lost most (§4)."""

    def __init__(self, config: LabelInferenceConfig | None = None, **settings: Any) -> None:
        """``config``, or its fields as keywords (validated: an unknown generator fails here, naming the known)."""
        self.config = config if config is not None else LabelInferenceConfig(**settings)

    def probe(self, original: Oracle, *, public: PublicData | None = None,
              white_box: nn.Module | None = None) -> ProbeSet:
        """Probes made before the deletion against θ's oracle (``gradient``: against θ itself, ``white_box``);
        ``public``: the real held-out samples (x, y) the ``public`` generator draws from."""
        c = self.config
        made = PROBE_GENERATORS.get(c.generator)
        target: Oracle | nn.Module = original
        if not made.black_box:
            if white_box is None:
                raise ConfigError(f"the {c.generator} probe generator is white-box: it needs θ's weights "
                                  f"(white_box=θ); choose a black-box generator ({', '.join(black_box_generators())})")
            target = white_box
        if made.needs_public and public is None:
            raise ConfigError(f"the {c.generator} probe generator draws real held-out samples: give them "
                              "(public=Dataset or (x, y)), or choose a synthetic generator (nes, zoo)")
        return generate_probes(c.generator, target, original.num_classes, c.per_class, original.input_shape,
                               c.seed, public=public, max_seconds=c.max_seconds, device=c.device, **c.params)

    def guess(self, original: Oracle, unlearned: Oracle, probes: ProbeSet, *,
              calibration: Calibration | None = None) -> LabelGuess:
        """One query per probe to θ_u's oracle; the calibrated decision of the config on the answers
        (``calibration``: a threshold made elsewhere, e.g. from null pairs of θ itself, ``calibrate_on_own_model``)."""
        return infer_label(original, unlearned, probes, config=self.config.decision(), calibration=calibration)

    def attack(self, original: Oracle, unlearned: Oracle, *, public: PublicData | None = None,
               white_box: nn.Module | None = None, probes: ProbeSet | None = None,
               calibrate: Callable[[ProbeSet], Calibration] | None = None) -> LabelInferenceResult:
        """Probes made against ``original`` only (or ``probes`` made earlier), then one query per probe to
        ``unlearned``; a query budget that runs out gives a partial result saying so instead of an error.
        ``calibrate``: makes the threshold from the probes (e.g. the holder's own null pairs of θ); not called
        when classes lack probes (no verdict)."""
        if probes is None:
            try:
                probes = self.probe(original, public=public, white_box=white_box)
            except QueryBudgetExceeded as exc:
                return LabelInferenceResult(None, None, f"the original model's query budget ran out: {exc}")
            except ConfigError as exc:
                if original.remaining is None or "budget" not in str(exc):
                    raise
                return LabelInferenceResult(None, None, f"the original model's query budget ran out before any "
                                                        f"probe was finished: {exc}")
        partial = probes.notes if "budget" in probes.notes else None
        calibration: Calibration | None = None
        info: dict[str, Any] = {}
        if calibrate is not None:
            calibration, info = calibrate_if_tested(probes, self.config.min_per_class, calibrate,
                                                self.config.top_k)
        try:
            guess = self.guess(original, unlearned, probes, calibration=calibration)
        except QueryBudgetExceeded as exc:
            return LabelInferenceResult(None, probes, f"the unlearned endpoint's budget ran out: {exc}", info)
        return LabelInferenceResult(guess, probes, partial, info)

    def __repr__(self) -> str:
        values = ", ".join(f"{name}={getattr(self.config, name)!r}" for name in type(self.config).model_fields)
        return f"{type(self).__name__}({values})"
