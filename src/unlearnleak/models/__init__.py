"""Model architectures behind one registry; every model is wrapped with its input normalisation."""

from unlearnleak.models import convnet, resnet, small, zoo  # noqa: F401  (registers the built-in models)
from unlearnleak.models.base import (
    MODELS,
    ModelSpec,
    Normalized,
    build_model,
    check_state,
    load_weights,
    register_model,
)

__all__ = ["MODELS", "ModelSpec", "Normalized", "build_model", "check_state", "load_weights", "register_model"]
