"""User models by import path: ``package.module:Class`` or ``path/to/file.py:Class``.

The user's code is the only code unlearnleak runs, and it may misbehave: an exception or a ``sys.exit``
at import, while being built, or in ``forward`` (at any call, not only the first) becomes one
:class:`UserCodeError` naming the definition, never a silent exit or a traceback. ``forward`` is guarded by
giving the built module a subclass of its own class whose ``forward`` translates those failures (state-dict
keys, parameters and ``isinstance`` are unchanged). Ctrl-C stays Ctrl-C.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn

from unlearnleak.errors import ConfigError

ModelFactory = Callable[..., nn.Module]
"""``factory(input_shape=(C,H,W) or (D,), num_classes=K, **kwargs) -> nn.Module`` taking normalised input."""


class UserCodeError(ConfigError):
    """The user's model definition raised or called ``sys.exit`` (at import, while built, or in ``forward``)."""


def _failure(exc: BaseException) -> str:
    """``called sys.exit(3)`` or ``raised ValueError: message`` for a failure of the user's code."""
    if isinstance(exc, SystemExit):
        return f"called sys.exit({exc.code!r})"
    return f"raised {type(exc).__name__}: {_first_line(exc)}"


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
        except (Exception, SystemExit) as exc:  # the user's file may raise anything, or exit, on import
            sys.modules.pop(mod_name, None)
            if isinstance(exc, SystemExit):
                raise UserCodeError(f"model definition {file} {_failure(exc)} on import; fix that file") from None
            raise UserCodeError(f"model definition {file} raised {type(exc).__name__} on import: "
                                f"{_first_line(exc)}; fix that file") from exc
    else:
        try:
            module = importlib.import_module(module_part)
        except ImportError as exc:
            raise ConfigError(f"cannot import module {module_part!r} for model {path!r}: {exc}") from exc
        except (Exception, SystemExit) as exc:
            if isinstance(exc, SystemExit):
                raise UserCodeError(f"module {module_part!r} {_failure(exc)} on import; fix that module") from None
            raise UserCodeError(f"module {module_part!r} raised {type(exc).__name__} on import: "
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
        try:
            model = target(**extra, **kwargs)
        except SystemExit as exc:
            raise UserCodeError(f"model definition {path} {_failure(exc)} while being built; fix that file") from None
        if not isinstance(model, nn.Module):
            raise ConfigError(f"{path!r} returned {type(model).__name__}, not a torch.nn.Module")
        return guard_forward(model, path)

    return factory


_GUARDED: dict[tuple[type, str], type] = {}


def guard_forward(model: nn.Module, where: str) -> nn.Module:
    """``model`` with a ``forward`` whose exceptions and ``sys.exit`` calls become a :class:`UserCodeError`."""
    cls = type(model)
    if getattr(cls, "_unlearnleak_guarded", False):
        return model
    guarded = _GUARDED.get((cls, where))
    if guarded is None:

        def forward(self: nn.Module, *args: Any, **kwargs: Any) -> Any:
            try:
                return super(guarded, self).forward(*args, **kwargs)  # type: ignore[arg-type]
            except UserCodeError:
                raise
            except (Exception, SystemExit) as exc:
                raise UserCodeError(f"model definition {where} {_failure(exc)} in forward (input shapes "
                                    f"{[tuple(a.shape) for a in args if hasattr(a, 'shape')]}); fix that "
                                    "file") from (None if isinstance(exc, SystemExit) else exc)

        guarded = type(cls.__name__, (cls,), {"forward": forward, "_unlearnleak_guarded": True,
                                              "__module__": cls.__module__, "__qualname__": cls.__qualname__})
        _GUARDED[(cls, where)] = guarded
    model.__class__ = guarded
    return model


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else "(no message)"
