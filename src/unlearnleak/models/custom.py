"""User models by import path: ``package.module:Class`` or ``path/to/file.py:Class``."""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
from pathlib import Path
from typing import Any

from torch import nn

from unlearnleak.errors import ConfigError
from unlearnleak.models.base import ModelFactory


def import_model_class(path: str) -> ModelFactory:
    """Resolve ``path`` to a factory accepting ``input_shape``/``num_classes`` plus the user's kwargs.

    The class (or function) receives ``input_shape`` and ``num_classes`` only if its signature names
    them; every other keyword comes from the model's ``kwargs``.
    """
    module_part, _, attr = path.rpartition(":")
    if not module_part or not attr:
        raise ConfigError(f"model path {path!r} must look like 'package.module:Class' or 'file.py:Class'")
    if module_part.endswith(".py"):
        file = Path(module_part).expanduser()
        if not file.is_file():
            raise ConfigError(f"model file {file} does not exist")
        mod_name = f"unlearnleak_user_{abs(hash(str(file.resolve())))}"
        spec = importlib.util.spec_from_file_location(mod_name, file)
        if spec is None or spec.loader is None:
            raise ConfigError(f"cannot import {file}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[mod_name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as exc:  # the user's file may raise anything on import
            sys.modules.pop(mod_name, None)
            raise ConfigError(f"model definition {file} raised {type(exc).__name__} on import: "
                              f"{_first_line(exc)}; fix that file") from exc
    else:
        try:
            module = importlib.import_module(module_part)
        except ImportError as exc:
            raise ConfigError(f"cannot import module {module_part!r} for model {path!r}: {exc}") from exc
        except Exception as exc:
            raise ConfigError(f"module {module_part!r} raised {type(exc).__name__} on import: "
                              f"{_first_line(exc)}; fix that module") from exc
    try:
        target = getattr(module, attr)
    except AttributeError:
        raise ConfigError(f"module {module_part!r} has no attribute {attr!r}") from None
    if not callable(target):
        raise ConfigError(f"{path!r} is not a class or function")
    try:
        params = inspect.signature(target).parameters
    except (TypeError, ValueError):
        params = {}  # type: ignore[assignment]
    accepts_var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())

    def factory(input_shape: tuple[int, ...], num_classes: int, **kwargs: Any) -> nn.Module:
        extra: dict[str, Any] = {}
        if "input_shape" in params or accepts_var_kw:
            extra["input_shape"] = input_shape
        if "num_classes" in params or accepts_var_kw:
            extra["num_classes"] = num_classes
        model = target(**extra, **kwargs)
        if not isinstance(model, nn.Module):
            raise ConfigError(f"{path!r} returned {type(model).__name__}, not a torch.nn.Module")
        return model

    return factory


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else "(no message)"
