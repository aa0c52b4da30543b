"""Load pydantic configs from YAML files with ``--set a.b=value`` overrides; errors name the bad key.

A partial section (``--set finetune.lr=0.01`` or ``finetune: {lr: 0.01}`` in a file) changes only the fields
it names: it is merged onto the *enclosing model's* default for that section (e.g. the scenario's fine-tuning
stage with ``freeze_bn: true``), not onto the section class's own defaults.
"""

from __future__ import annotations

import math
import re
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from unlearnleak.errors import ConfigError, one_line

M = TypeVar("M", bound=BaseModel)

# Caps on what one YAML document may hold (a config is a few KB; these leave a hundredfold room). Anchors and
# aliases are allowed, but counted as expanded: an "alias bomb" (a list of aliases of lists of aliases …) would
# otherwise expand to billions of values when the config is copied or validated.
MAX_YAML_BYTES = 256 * 1024
MAX_YAML_DEPTH = 32
MAX_YAML_NODES = 100_000


class _CheckedLoader(yaml.SafeLoader):
    """PyYAML's safe loader (no Python tags) that refuses documents too deep or too large once aliases expand."""

    _depth = 0

    def compose_document(self) -> yaml.Node | None:
        """The document's node graph, refused before any Python object is built if it breaks a cap."""
        node = super().compose_document()
        if node is not None:
            _expanded_extent(node, 1, {}, set())
        return node

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        """Refuse nesting deeper than MAX_YAML_DEPTH while composing (the composer recurses per level)."""
        depth = self._depth + 1
        if depth > MAX_YAML_DEPTH:
            raise _YamlCapError(f"it nests more than {MAX_YAML_DEPTH} levels deep")
        self._depth = depth
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth = depth - 1


class _YamlCapError(yaml.YAMLError):
    """A YAML document over one of the caps (size, depth, expanded nodes, a recursive alias)."""


def _expanded_extent(node: yaml.Node, depth: int, memo: dict[int, tuple[int, int]], active: set[int]
                     ) -> tuple[int, int]:
    """(values, height) of ``node`` with every alias expanded, refused past the caps; each node is walked once."""
    key = id(node)
    if key in active:
        raise _YamlCapError("an alias refers to a node that contains it (a recursive structure)")
    if key in memo:
        count, height = memo[key]
    else:
        active.add(key)
        children: list[yaml.Node] = []
        if isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        elif isinstance(node, yaml.MappingNode):
            children = [part for pair in node.value for part in pair]
        count, height = 1, 1
        for child in children:
            c, h = _expanded_extent(child, depth + 1, memo, active)
            count, height = count + c, max(height, h + 1)
            if count > MAX_YAML_NODES:
                break
        active.discard(key)
        memo[key] = (count, height)
    if count > MAX_YAML_NODES:
        raise _YamlCapError(f"it expands to more than {MAX_YAML_NODES} values once its aliases (*name) are "
                            "replaced by what they refer to")
    if depth + height - 1 > MAX_YAML_DEPTH:
        raise _YamlCapError(f"it nests more than {MAX_YAML_DEPTH} levels deep once its aliases (*name) are "
                            "expanded")
    return count, height


def parse_yaml(text: str) -> Any:
    """``text`` parsed as YAML by the checked safe loader; a bad or over-cap document raises yaml.YAMLError.

    Caps: MAX_YAML_BYTES of text, MAX_YAML_DEPTH levels and MAX_YAML_NODES values once aliases expand;
    integers of more than 4300 digits (Python's limit) are reported as YAML errors too.
    """
    if len(text.encode("utf-8")) > MAX_YAML_BYTES:
        raise _YamlCapError(f"it is larger than {MAX_YAML_BYTES // 1024} KiB")
    try:
        return yaml.load(text, Loader=_CheckedLoader)  # a SafeLoader subclass: no Python tags
    except ValueError as exc:  # e.g. an integer of 5000 digits (int() refuses it)
        raise _YamlCapError(one_line(str(exc)).split(";")[0]) from exc
    except RecursionError as exc:  # defensive: the depth cap stops the composer well before this
        raise _YamlCapError("it nests too deeply") from exc


def check_named_code(named: Iterable[tuple[str, str]], model_defs: Sequence[str], what: str,
                     flag: str = "--model-def") -> None:
    """Refuse model names that point at code (``key``, ``name`` pairs) unless ``model_defs`` names the same code.

    Configs are data: like a pair folder's manifest, a config never runs code that the user did not name on the
    command line (``--model-def``). A ``--model-def`` that no name uses is refused too (a typo, not a no-op).
    """
    from unlearnleak.models.base import names_code, same_definition

    pairs = list(named)
    for key, name in pairs:
        if names_code(name) and not any(same_definition(name, d) for d in model_defs):
            raise ConfigError(f"{what}: {key} names code ({name!r:.160}); a config never runs code by itself. If you "
                              f"trust that definition, name it on the command line too: {flag} {name:.160}")
    for definition in model_defs:
        if not any(names_code(name) and same_definition(name, definition) for _, name in pairs):
            used = sorted({name for _, name in pairs})
            raise ConfigError(f"{flag} {definition!r:.160}: no model in the {what} names this code (its models: "
                              f"{', '.join(used)}); drop {flag} or set the model to it "
                              f"(e.g. --set {pairs[0][0] if pairs else 'scenario.model'}={definition:.160})")


def finite_values(value: Any, where: str) -> None:
    """Refuse NaN and ±inf anywhere inside ``value`` (free-form sections: method, defense, model parameters)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{where}: {value} is not a finite number; give a finite value")
    if isinstance(value, dict):
        for key, inner in value.items():
            finite_values(inner, f"{where}.{key}")
    elif isinstance(value, list | tuple):
        for i, inner in enumerate(value):
            finite_values(inner, f"{where}[{i}]")


def apply_override(data: dict[str, Any], assignment: str) -> None:
    """Set ``data[a][b] = value`` for ``assignment`` "a.b=value" (value parsed as YAML: 3, 1e-3, [1,2], true)."""
    key, sep, raw = assignment.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {assignment!r} must look like key.subkey=value (e.g. --set finetune.lr=0.01)")
    try:
        value = parse_yaml(raw)
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
        with p.open("rb") as handle:
            raw = handle.read(MAX_YAML_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"{what} {p} cannot be read ({exc.strerror}); check its permissions") from exc
    if len(raw) > MAX_YAML_BYTES:
        raise ConfigError(f"{what} {p} is larger than {MAX_YAML_BYTES // 1024} KiB; a config is a few KB of YAML: "
                          "check that this is the right file")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{what} {p} is not UTF-8 text (byte {exc.start} cannot be decoded); "
                          "save it as UTF-8 YAML") from exc
    try:
        loaded = parse_yaml(text)
    except _YamlCapError as exc:
        raise ConfigError(f"{what} {p} is refused: {exc}; write the config out plainly") from exc
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
