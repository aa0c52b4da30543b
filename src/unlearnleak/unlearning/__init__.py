"""Unlearning methods behind one registry; each method is one module."""

from unlearnleak.unlearning import exact, gradient_ascent  # noqa: F401  (registers the methods)
from unlearnleak.unlearning.base import (
    UNLEARNING,
    StateDict,
    UnlearningContext,
    register_unlearning,
    state_of,
    unlearn,
)

__all__ = ["UNLEARNING", "StateDict", "UnlearningContext", "register_unlearning", "state_of", "unlearn"]
