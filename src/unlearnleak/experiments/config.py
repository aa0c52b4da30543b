"""Load pydantic configs from YAML files with ``--set a.b=value`` overrides; errors name the bad key."""

from __future__ import annotations

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
        raise ConfigError(f"override {assignment!r} must look like key.subkey=value")
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise ConfigError(f"cannot parse the value in override {assignment!r}: {exc}") from exc
    node = data
    parts = key.strip().split(".")
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {assignment!r}: {part!r} is not a section")
        node = child
    node[parts[-1]] = value


def load_config(model: type[M], path: str | Path | None = None, overrides: list[str] | None = None,
                base: dict[str, Any] | None = None) -> M:
    """Build ``model`` from ``base`` ← YAML file ``path`` ← ``overrides`` (later wins)."""
    data: dict[str, Any] = dict(base or {})
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {p} does not exist")
        try:
            loaded = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {p} is not valid YAML: {exc}") from exc
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {p} must hold a mapping at the top level")
        data = _merge(data, loaded)
    for assignment in overrides or []:
        apply_override(data, assignment)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        lines = [f"  {'.'.join(str(p) for p in e['loc']) or '(top)'}: {e['msg']}" for e in exc.errors()]
        where = f" in {path}" if path else ""
        raise ConfigError(f"invalid {model.__name__}{where}:\n" + "\n".join(lines)) from exc


def _merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for k, v in b.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out
