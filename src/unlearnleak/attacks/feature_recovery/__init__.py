"""Feature recovery (the server attack, docs/paper.md §2): recover D_u from θ and θ_u (white-box).

``recover(pair)`` estimates the target gradient ∇* from the pair, infers the labels from it (or takes them),
and inverts ∇* — by optimisation for images (presets ``best`` and ``paper``) or in closed form for tabular
rows. ``evaluate_reconstruction`` scores the result against the ground truth. See docs/feature_recovery.md.
"""

from unlearnleak.attacks.feature_recovery.adaptive import Candidate, invert
from unlearnleak.attacks.feature_recovery.attack import (
    costs_on_target,
    evaluate_reconstruction,
    gradient_cost,
    recover,
)
from unlearnleak.attacks.feature_recovery.inversion import (
    PRESETS,
    InversionConfig,
    InversionResult,
    RaceEntry,
    preset,
)
from unlearnleak.attacks.feature_recovery.labels import LabelEstimate, infer_labels
from unlearnleak.attacks.feature_recovery.result import RECONSTRUCTION_FILE, Reconstruction
from unlearnleak.attacks.feature_recovery.tabular import analytic_applicable, recover_row
from unlearnleak.attacks.feature_recovery.target_gradient import TargetGradient, target_gradient

__all__ = [
    "PRESETS",
    "RECONSTRUCTION_FILE",
    "Candidate",
    "InversionConfig",
    "InversionResult",
    "LabelEstimate",
    "RaceEntry",
    "Reconstruction",
    "TargetGradient",
    "analytic_applicable",
    "costs_on_target",
    "evaluate_reconstruction",
    "gradient_cost",
    "infer_labels",
    "invert",
    "preset",
    "recover",
    "recover_row",
    "target_gradient",
]
