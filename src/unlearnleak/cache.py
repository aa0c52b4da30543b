"""The user cache folder (the scenario's stages θ0 → θ → θ_u, downloaded weights); never inside the package or
../shared. :func:`cached_state` is the one way a stage's weights are stored and read back."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from filelock import FileLock
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file

from unlearnleak.errors import UnlearnleakError, one_line
from unlearnleak.storage import save_tensors_atomic

CACHE_ENV = "UNLEARNLEAK_CACHE_DIR"


def cache_dir(override: str | Path | None = None) -> Path:
    """``override``, else $UNLEARNLEAK_CACHE_DIR, else $XDG_CACHE_HOME/unlearnleak, else ~/.cache/unlearnleak."""
    if override is not None:
        return Path(override).expanduser()
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "unlearnleak"


# ---- cached stages: weights keyed by the hash of everything that determines them ---------------------------

StateDict = dict[str, torch.Tensor]


def canonical(key: Mapping[str, Any]) -> str:
    """The key as canonical JSON (sorted keys): what its digest is taken of and what an entry must hold."""
    return json.dumps(key, sort_keys=True, default=str)


def key_digest(key: Mapping[str, Any]) -> str:
    """16 hex digits of the sha256 of the canonical key (file names; the full key is checked on read)."""
    return hashlib.sha256(canonical(key).encode()).hexdigest()[:16]


def tensors_digest(state: Mapping[str, torch.Tensor]) -> str:
    """sha256 over the names, dtypes, shapes and bytes of ``state``: a flipped bit in an entry is caught."""
    digest = hashlib.sha256()
    for name in sorted(state):
        value = state[name].detach().cpu().contiguous()
        digest.update(f"{name}|{value.dtype}|{tuple(value.shape)}|".encode())
        digest.update(value.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


@dataclass(frozen=True)
class CachedState:
    """Weights read from, or computed into, one cache entry."""

    state: StateDict
    cached: bool  # True: read back from the cache (checked); False: computed now (and stored)
    info: Mapping[str, Any]  # what the computation recorded (seconds, cost), as stored beside the tensors
    refused: str | None = None  # why an entry found under this name was not used (then recomputed)


Compute = Callable[[], tuple[StateDict, Mapping[str, Any]]]  # the weights and what to record with them (JSON)
Check = Callable[[StateDict], None]


def cached_state(path: Path, key: Mapping[str, Any], compute: Compute, check: Check) -> CachedState:
    """The entry at ``path`` if it holds ``key`` and passes its checks, else ``compute()`` stored there atomically.

    Parallel processes that need the same entry compute it once: the first takes a file lock beside it (released
    if its holder dies), the others wait and read what it wrote. An entry is used only when its stored key equals
    ``key``, its tensors match their stored sha256 and ``check`` accepts them (the architecture's keys and shapes);
    otherwise it is refused, deleted and recomputed — never silently used. Tensors are safetensors: nothing is
    unpickled.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(path.with_name(path.name + ".lock")):
        refused = None
        if path.is_file():
            found, refused = _read_entry(path, key, check)
            if found is not None:
                return found
            path.unlink(missing_ok=True)
        state, info = compute()
        meta = {"info": json.dumps(dict(info), default=str), "key": canonical(key), "sha256": tensors_digest(state)}
        save_tensors_atomic(path, state, meta)
        return CachedState(state=state, cached=False, info=dict(info), refused=refused)


def _read_entry(path: Path, key: Mapping[str, Any], check: Check) -> tuple[CachedState | None, str | None]:
    """(the entry, None) if it holds ``key`` intact, else (None, why it was refused)."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            meta = dict(handle.metadata() or {})
        if json.loads(meta.get("key", "null")) != json.loads(canonical(key)):
            return None, "it holds another key"
        state = dict(load_file(str(path)))
        if "sha256" in meta and tensors_digest(state) != meta["sha256"]:
            return None, "its tensors do not match their checksum"
        check(state)
        # entries of θ0 written before the stages were cached hold their seconds as a field of their own
        info = json.loads(meta["info"]) if "info" in meta else {k: v for k, v in meta.items() if k != "key"}
    except (SafetensorError, OSError, ValueError, RuntimeError, UnlearnleakError) as exc:  # JSONDecodeError too
        return None, f"it cannot be read ({type(exc).__name__}: {one_line(str(exc))[:200]})"
    return CachedState(state=state, cached=True, info=info if isinstance(info, dict) else {}), None
