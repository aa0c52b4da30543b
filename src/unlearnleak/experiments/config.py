"""Load pydantic configs from YAML files with ``--set a.b=value`` overrides; errors name the bad key.

A partial section (``--set finetune.lr=0.01`` or ``finetune: {lr: 0.01}`` in a file) changes only the fields
it names: it is merged onto the *enclosing model's* default for that section (e.g. the scenario's fine-tuning
stage with ``freeze_bn: true``), not onto the section class's own defaults.
"""

from __future__ import annotations

import re
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from unlearnleak.errors import ConfigError

M = TypeVar("M", bound=BaseModel)


def apply_override(data: dict[str, Any], assignment: str) -> None:
    """Set ``data[a][b] = value`` for ``assignment`` "a.b=value" (value parsed as YAML: 3, 1e-3, [1,2], true)."""
    key, sep, raw = assignment.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {assignment!r} must look like key.subkey=value (e.g. --set finetune.lr=0.01)")
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {assignment!r}: cannot parse the value ({one_line(str(exc))}); "
                          "write it as YAML, e.g. 3, 1e-3, [1, 2], true") from exc
    set_path(data, key.strip(), value, f"--set {assignment!r}")


def set_path(data: dict[str, Any], key: str, value: Any, source: str) -> None:
    """Set ``data[a][b] = value`` for the dotted ``key`` "a.b", creating sections as needed."""
    node = data
    parts = key.split(".")
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{source}: {part!r} is not a section; set {part}=value instead")
        node = child
    node[parts[-1]] = value


def read_yaml_mapping(path: str | Path, what: str = "config file") -> dict[str, Any]:
    """The mapping at the top of the YAML file ``path`` (an empty file is an empty mapping)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{what} {p} does not exist or is not a file; check the path")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{what} {p} is not UTF-8 text (byte {exc.start} cannot be decoded); "
                          "save it as UTF-8 YAML") from exc
    except OSError as exc:
        raise ConfigError(f"{what} {p} cannot be read ({exc.strerror}); check its permissions") from exc
    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{what} {p} is not valid YAML: {one_line(str(exc))}") from exc
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{what} {p} must hold a mapping (key: value lines) at the top level, "
                          f"not a {type(loaded).__name__}")
    return loaded


def load_config(model: type[M], path: str | Path | None = None, overrides: list[str] | None = None,
                base: dict[str, Any] | None = None, flags: Mapping[str, str] | None = None,
                values: Mapping[str, Any] | None = None, what: str | None = None) -> M:
    """Build ``model`` from ``base`` ← YAML file ``path`` ← ``overrides`` ← ``values`` (later wins).

    Args:
        overrides: "a.b=value" strings (``--set``), values parsed as YAML.
        flags: config key → the command-line flag that sets it (e.g. ``{"forget.k": "--k"}``), so that an
            out-of-range value is reported under the flag the user typed.
        values: config key → value of a typed flag (taken as is; None means "not given").
        what: how errors name the config (default: the model's name, and the file).
    """
    data: dict[str, Any] = dict(base or {})
    if path is not None:
        data = _merge(data, read_yaml_mapping(path))
    for assignment in overrides or []:
        apply_override(data, assignment)
    given = {key: value for key, value in (values or {}).items() if value is not None}
    for key, value in given.items():
        set_path(data, key, value, (flags or {}).get(key, key))
    if values is not None:  # name a flag only where the flag set the value (not --set or the file)
        flags = {key: flag for key, flag in (flags or {}).items() if key in given}
    data = fill_section_defaults(model, data)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        what = what or (f"{model.__name__} (from {path})" if path else model.__name__)
        raise ConfigError(validation_message(exc, what, flags or {}, model=model)) from exc


def validation_message(exc: ValidationError, what: str, flags: Mapping[str, str] | None = None,
                       model: type[BaseModel] | None = None) -> str:
    """One line naming each bad key (or the flag that set it), what is wrong, the value given, and the fix."""
    flags = flags or {}
    problems = []
    for error in exc.errors():
        key = ".".join(str(p) for p in error["loc"]) or "(top level)"
        name = f"{flags[key]} ({key})" if key in flags else key
        msg = error["msg"]
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, "):]
        if error["type"] == "extra_forbidden":
            known = _known_keys(model, error["loc"][:-1]) if model is not None else None
            hint = f" (known keys: {', '.join(known)})" if known else ""
            problems.append(f"{name}: unknown key{hint}; remove it or check its spelling")
            continue
        if not error["loc"]:  # a check across fields: its message names the keys; add the flags that set them
            for k, flag in flags.items():
                msg = re.sub(rf"(?<![\w.]){re.escape(k)}=[^\s;,()]+", rf"\g<0> ({flag})", msg)
            problems.append(one_line(msg))
            continue
        given = error.get("input")
        shown = "" if error["type"] in ("missing",) or isinstance(given, dict) else f", got {_short(given)}"
        problems.append(f"{name}: {one_line(msg)}{shown}")
    return f"invalid {what}: " + "; ".join(problems)


def _known_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str] | None:
    """The field names of the (nested) model at ``loc`` inside ``model``, or None if ``loc`` leaves the models."""
    current: type[BaseModel] | None = model
    for part in loc:
        field = current.model_fields.get(str(part)) if current is not None else None
        current = _model_class(field.annotation) if field is not None else None
    return sorted(current.model_fields) if current is not None else None


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def one_line(text: str) -> str:
    """``text`` with its line breaks folded into '; ' (messages are one line)."""
    return "; ".join(part.strip() for part in str(text).splitlines() if part.strip())


def fill_section_defaults(model: type[BaseModel], data: dict[str, Any]) -> dict[str, Any]:
    """Merge each partial nested-model section of ``data`` onto ``model``'s default for that field."""
    out = dict(data)
    for name, field in model.model_fields.items():
        key = field.alias or name
        value = out.get(key)
        section = _model_class(field.annotation)
        if not isinstance(value, dict) or section is None:
            continue
        default = field.get_default(call_default_factory=True)
        if isinstance(default, BaseModel):  # only what the default sets on purpose (not derived fields)
            value = _merge(default.model_dump(exclude_unset=True), value)
        out[key] = fill_section_defaults(section, value)
    return out


def _model_class(annotation: Any) -> type[BaseModel] | None:
    """The BaseModel class behind ``annotation`` (also inside ``X | None``), else None."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        found = [a for a in typing.get_args(annotation) if isinstance(a, type) and issubclass(a, BaseModel)]
        return found[0] if len(found) == 1 else None
    return None


def _merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for k, v in b.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out
