"""Unlearning methods behind one registry; each method is one module."""

from unlearnleak.unlearning import (  # noqa: F401  (registers the methods)
    exact,
    finetune,
    first_order,
    gradient_ascent,
    neggrad_plus,
    random_label,
    retrain,
    second_order,
    sisa,
)
from unlearnleak.unlearning.base import (
    PARAMS,
    UNLEARNING,
    CostMeter,
    StateDict,
    UnlearningContext,
    UnlearningOutcome,
    check_params,
    register_unlearning,
    state_of,
    unlearn,
    unlearn_measured,
)

__all__ = ["PARAMS", "UNLEARNING", "CostMeter", "StateDict", "UnlearningContext", "UnlearningOutcome",
           "check_params", "register_unlearning", "state_of", "unlearn", "unlearn_measured"]
