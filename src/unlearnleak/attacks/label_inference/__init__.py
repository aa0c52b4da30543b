"""Label inference (docs/paper.md §4): a black-box user infers which class was deleted from θ's and θ_u's answers.

Typical use::

    probes = generate_probes("nes", ModelOracle.from_pair(pair, "original"), num_classes=10, per_class=10,
                             input_shape=(3, 32, 32))          # before the deletion, against θ only
    guess = infer_label(original_oracle, ModelOracle.from_pair(pair, "unlearned"), probes, top_k=1)
    guess.label, guess.changes, guess.queries_unlearned
"""

from unlearnleak.attacks.label_inference import zeroth_order  # noqa: F401  (registers zoo and nes)
from unlearnleak.attacks.label_inference.calibration import (
    CALIBRATORS,
    Calibration,
    calibrate_on_nulls,
    calibrate_on_own_nulls,
    gap_statistic,
    null_statistic,
)
from unlearnleak.attacks.label_inference.decision import (
    Decision,
    DecisionConfig,
    confidence_changes,
    decide,
    infer_label,
    rank_classes,
)
from unlearnleak.attacks.label_inference.own_nulls import calibrate_on_own_model, own_null_changes
from unlearnleak.attacks.label_inference.probes import (
    PROBE_GENERATORS,
    GeneratorConfig,
    GradientConfig,
    ProbeGenerator,
    PublicConfig,
    black_box_generators,
    generate_probes,
    log_odds,
    make_generator,
    margin_loss,
    register_generator,
)
from unlearnleak.attacks.label_inference.probeset import ProbeSet
from unlearnleak.attacks.label_inference.result import LabelGuess
from unlearnleak.attacks.label_inference.zeroth_order import NesConfig, ZooConfig

__all__ = [
    "CALIBRATORS",
    "PROBE_GENERATORS",
    "Calibration",
    "Decision",
    "DecisionConfig",
    "GeneratorConfig",
    "GradientConfig",
    "LabelGuess",
    "NesConfig",
    "ProbeGenerator",
    "ProbeSet",
    "PublicConfig",
    "ZooConfig",
    "black_box_generators",
    "calibrate_on_nulls",
    "calibrate_on_own_model",
    "calibrate_on_own_nulls",
    "confidence_changes",
    "decide",
    "gap_statistic",
    "generate_probes",
    "infer_label",
    "log_odds",
    "make_generator",
    "margin_loss",
    "null_statistic",
    "own_null_changes",
    "rank_classes",
    "register_generator",
]
