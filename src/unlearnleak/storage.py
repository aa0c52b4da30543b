"""Atomic file writes and run manifests (versions, git revision), so results are never half-written."""

from __future__ import annotations

import json
import math
import os
import platform
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from unlearnleak.errors import CheckpointError, ConfigError

_PACKAGES = ("unlearnleak", "torch", "numpy", "safetensors", "scikit-learn", "scikit-image", "pydantic")


def atomic_write(path: str | Path, write: Callable[[Path], object]) -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        os.chmod(tmp, _umask_mode(0o666))  # mkstemp makes 0600; results follow the user's umask
        os.replace(tmp, path)
    finally:
        with suppress(FileNotFoundError):
            tmp.unlink()
    return path


def _umask_mode(base: int) -> int:
    """``base`` with the process umask applied (read without changing it for longer than a call)."""
    mask = os.umask(0)
    os.umask(mask)
    return base & ~mask


def check_output_folder(path: str | Path, *, overwrite: bool = False, flag: str = "--out") -> Path:
    """Refuse an output folder before any computation: a file, existing results, or an unwritable parent.

    An existing *empty* folder is accepted. With ``overwrite`` an existing folder is accepted and will be
    replaced whole by :func:`output_folder`.
    """
    path = Path(path)
    refuse_link(path, flag)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{flag} {path} is an existing file, not a folder; choose another {flag}")
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        raise ConfigError(f"{flag} {path} already holds results; choose a new {flag} or pass --overwrite "
                          f"to replace it")
    parent = path.parent if path.parent != Path("") else Path(".")
    check_creatable(parent, f"{flag} {path}: cannot create it,", f"choose another {flag}")
    return path


def check_creatable(folder: str | Path, what: str, fix: str) -> Path:
    """Check, creating nothing, that ``folder`` exists or can be created and can be written into.

    Errors read ``"{what} <reason>; {fix}"``.
    """
    folder = Path(folder)
    existing = next((p for p in (folder, *folder.parents) if p.exists()), Path("."))
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"{what} {existing} is not a writable folder; {fix}")
    try:  # permissions can lie (root, read-only mounts, /proc): try it, leaving nothing behind
        os.rmdir(tempfile.mkdtemp(prefix=".unlearnleak-probe-", dir=existing))
    except OSError as exc:
        raise ConfigError(f"{what} {existing} is not writable ({exc.strerror}); {fix}") from exc
    return folder


def refuse_link(path: str | Path, flag: str = "--out") -> None:
    """An output path must not be a symbolic link: replacing or deleting it would act on what it points to."""
    path = Path(path)
    if path.is_symlink():
        raise ConfigError(f"{flag} {path} is a symbolic link (to {os.readlink(path)}); give the folder itself, "
                          f"or remove the link, or choose another {flag}")


def remove_tree(path: str | Path) -> None:
    """Delete ``path`` without ever following a symbolic link (a link is removed, not what it points to)."""
    path = Path(path)
    if path.is_symlink() or path.is_file():
        with suppress(FileNotFoundError):
            path.unlink()
    elif path.is_dir():
        shutil.rmtree(path, ignore_errors=True)


_STAGED = re.compile(r"\.(?P<name>.+)\.(?P<pid>\d+)-[0-9a-f]{8}\.(partial|old)")


def staged_sibling(path: Path, suffix: str) -> Path:
    """A hidden sibling of ``path`` named with this process's id: ``.NAME.<pid>-<random>.<suffix>``."""
    return path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.{suffix}")


def remove_stale_staging(path: Path) -> list[Path]:
    """Remove the staged siblings of ``path`` left by processes that no longer run (killed with -9, a crash)."""
    removed = []
    parent = path.parent if path.parent != Path("") else Path(".")
    with suppress(OSError):
        for entry in parent.iterdir():
            match = _STAGED.fullmatch(entry.name)
            if match is None or match["name"] != path.name or _alive(int(match["pid"])):
                continue
            remove_tree(entry)
            removed.append(entry)
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True  # someone else's process: not ours to judge
    return True


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


@contextmanager
def stop_signals_interrupt() -> Iterator[None]:
    """SIGTERM (``kill``, ``timeout``, a scheduler's time limit) raises KeyboardInterrupt like Ctrl-C, so that
    every ``finally`` runs (staged folders removed); main thread only (signals cannot be set elsewhere)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def output_folder(path: str | Path, *, overwrite: bool = False, flag: str = "--out") -> Iterator[Path]:
    """Stage a whole results folder and publish it atomically: the complete folder or nothing.

    Yields a temporary sibling folder to write into; on normal exit it replaces ``path`` (an existing
    folder only with ``overwrite``, checked again here), on an exception, Ctrl-C or SIGTERM it is removed and
    ``path`` is left as it was. Staged siblings left by killed processes (``kill -9``) are removed first; a
    symbolic link at ``path`` is refused, never followed.
    """
    path = check_output_folder(path, overwrite=overwrite, flag=flag)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(path)
    staged = staged_sibling(path, "partial")
    with stop_signals_interrupt():
        staged.mkdir(mode=0o700)
        try:
            yield staged
            os.chmod(staged, _umask_mode(0o777))
            refuse_link(path, flag)
            with signals_held():  # the old folder is never moved aside without the new one taking its place
                if path.is_dir():
                    old = staged_sibling(path, "old")
                    os.replace(path, old)
                    os.replace(staged, path)
                else:
                    old = None
                    os.replace(staged, path)
            if old is not None:
                remove_tree(old)
        finally:
            remove_tree(staged)


@contextmanager
def signals_held() -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM for the microseconds of a multi-step rename; they are delivered right after."""
    stops = {signal.SIGINT, signal.SIGTERM}
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, stops)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_json_atomic(path: str | Path, obj: Any) -> Path:
    """Write ``obj`` as indented strict JSON atomically (non-finite floats become "inf", "-inf", "nan")."""
    return write_text_atomic(path, to_json(obj, indent=2) + "\n")


def to_json(obj: Any, indent: int | None = None) -> str:
    """Strict JSON (RFC 8259 has no Infinity/NaN): non-finite floats are written as strings."""
    return json.dumps(_finite(obj), indent=indent, default=_json_default, allow_nan=False)


def _finite(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return "nan" if math.isnan(obj) else ("inf" if obj > 0 else "-inf")
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    return obj


def save_tensors_atomic(path: str | Path, tensors: Mapping[str, torch.Tensor],
                        metadata_: Mapping[str, str] | None = None) -> Path:
    """Save tensors as safetensors atomically (contiguous CPU copies)."""
    flat = {k: v.detach().to("cpu").clone().contiguous() for k, v in tensors.items()}
    return atomic_write(path, lambda tmp: save_file(flat, str(tmp), metadata=dict(metadata_ or {})))


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    if hasattr(obj, "model_dump"):
        return obj.model_dump(mode="json")
    if hasattr(obj, "tolist"):
        return obj.tolist()
    raise TypeError(f"cannot serialise {type(obj).__name__} to JSON")


def package_versions() -> dict[str, str]:
    """Versions of the packages that determine results."""
    out: dict[str, str] = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def git_revision(start: str | Path | None = None) -> str | None:
    """The git revision of the source tree (with ``-dirty`` if modified), or None outside git."""
    here = Path(start) if start else Path(__file__).resolve().parent
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True,
                             timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{rev}-dirty" if dirty else rev


def environment_record() -> dict[str, Any]:
    """Everything about the software environment that a manifest records."""
    return {
        "versions": package_versions(),
        "git_revision": git_revision(),
        "platform": platform.platform(),
        "torch_threads": torch.get_num_threads(),
    }


def read_json_object(path: Path) -> dict[str, Any]:
    """A JSON file that must hold an object, read without trusting its types."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise CheckpointError(f"{path} is not valid JSON: {exc}") from exc
    except OSError as exc:
        raise CheckpointError(f"{path} cannot be read: {exc}") from exc
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} must hold a JSON object, got a {type(data).__name__}")
    return data


def read_safetensors(path: Path, what: str) -> dict[str, torch.Tensor]:
    """A safetensors file as a state dict (nothing is unpickled)."""
    if not path.is_file():
        raise CheckpointError(f"{path} ({what}) is missing")
    try:
        return dict(load_file(str(path)))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path} ({what}) is not a readable safetensors file: {exc}") from exc


def check_finite(state: dict[str, torch.Tensor], what: str) -> None:
    """Refuse weights holding NaN or Inf: ``"θ_u has non-finite values in <key>"``."""
    for key, value in state.items():
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            bad = int((~torch.isfinite(value)).sum())
            raise CheckpointError(f"{what} has non-finite values in {key} ({bad} of {value.numel()} entries "
                                  f"are NaN or Inf); the checkpoint is corrupt — re-export it")

