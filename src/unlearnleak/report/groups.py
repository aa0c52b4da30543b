"""Cells grouped by their swept parameters (all but the seed), so that seeds pool into one interval."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

SEED = "seed"
# Row fields that name the setting; shown beside the swept keys (unless a swept key already says it).
SETTING = (("dataset", "scenario.dataset"), ("model", "scenario.model"), ("method", "scenario.unlearning.method"))


@dataclass
class Group:
    """Cells that differ only in their seed."""

    params: dict[str, Any]  # swept key → value (seed left out)
    rows: list[dict[str, Any]] = field(default_factory=list)

    def label(self, keys: list[str] | None = None) -> str:
        """``"k=4, n_train=32"`` (short key names), or ``"all cells"`` when nothing is swept."""
        keys = list(self.params) if keys is None else keys
        parts = [f"{short(k)}={value_text(self.params.get(k))}" for k in keys]
        return ", ".join(parts) or "all cells"

    def setting(self, name: str) -> Any:
        """A row field (dataset, model, method) shared by the group's cells, or None when they differ."""
        values = {json.dumps(r.get(name), sort_keys=True, default=str) for r in self.rows}
        return self.rows[0].get(name) if len(values) == 1 else None


def short(key: str) -> str:
    """The last part of a dotted key (``scenario.forget.k`` → ``k``), the name a reader knows."""
    return key.rsplit(".", 1)[-1]


def value_text(value: Any) -> str:
    """A parameter value as it reads in a table (JSON for lists and objects)."""
    if isinstance(value, str):
        return value
    if isinstance(value, float):
        return f"{value:g}"
    return json.dumps(value, sort_keys=True, default=str)


def swept_keys(rows: list[dict[str, Any]]) -> list[str]:
    """The params keys of the rows (in first-seen order), without the seed."""
    keys: dict[str, None] = {}
    for row in rows:
        for key in row.get("params") or {}:
            if key != SEED:
                keys.setdefault(key, None)
    return list(keys)


def setting_columns(keys: list[str]) -> list[str]:
    """Dataset, model, method — unless a swept key already names them."""
    return [name for name, key in SETTING if key not in keys]


def _sort_key(value: Any) -> tuple[int, float, str]:
    if isinstance(value, bool) or value is None:
        return (2, 0.0, str(value))
    if isinstance(value, int | float) and math.isfinite(float(value)):
        return (0, float(value), "")
    return (1, 0.0, value_text(value))


def group_rows(rows: list[dict[str, Any]]) -> tuple[list[str], list[Group]]:
    """Swept keys, and the groups of ``rows`` sorted by their parameter values."""
    keys = swept_keys(rows)
    groups: dict[str, Group] = {}
    for row in rows:
        params = {k: (row.get("params") or {}).get(k) for k in keys}
        ident = json.dumps(params, sort_keys=True, default=str)
        groups.setdefault(ident, Group(params)).rows.append(row)
    ordered = sorted(groups.values(), key=lambda g: tuple(_sort_key(g.params[k]) for k in keys))
    return keys, ordered


def numeric_keys(keys: list[str], groups: list[Group]) -> list[str]:
    """Swept keys whose values are all numbers, with at least two distinct values (x axes of plots)."""
    out = []
    for key in keys:
        values = [g.params.get(key) for g in groups]
        if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values) and len(set(values)) > 1:
            out.append(key)
    return out
