"""A restricted unpickler for the official CIFAR python files: numpy arrays only, never arbitrary code.

The CIFAR "python version" files are pickles (Python 2 / cPickle). Unpickling an untrusted file can
run arbitrary code, so ``find_class`` allows only the few globals needed to rebuild numpy arrays and
refuses everything else. Python 3 writes bytes in protocol-2 pickles as ``_codecs.encode(text, "latin1")``,
so that call is allowed too, restricted to the latin-1 encoding (which only turns text into bytes).
"""

from __future__ import annotations

import importlib
import pickle
from pathlib import Path
from typing import Any

from unlearnleak.errors import DataError

_ALLOWED: frozenset[tuple[str, str]] = frozenset({
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
})


def _latin1_encode(text: str, encoding: str = "utf-8") -> bytes:
    """``_codecs.encode`` limited to latin-1, the only use protocol-2 pickles make of it."""
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise DataError(f"the pickle calls _codecs.encode with encoding {encoding!r}, which is not allowed")
    return text.encode("latin-1")


def _numpy_global(module: str, name: str) -> Any:
    """Resolve an allowed numpy global under numpy 1.x (``numpy.core``) and 2.x (``numpy._core``)."""
    if module == "numpy":
        return getattr(importlib.import_module("numpy"), name)
    for candidate in ("numpy._core.multiarray", "numpy.core.multiarray"):
        try:
            return getattr(importlib.import_module(candidate), name)
        except (ImportError, AttributeError):
            continue
    raise DataError(f"this numpy has no {module}.{name}, needed to read the pickle")


class NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler whose only globals are numpy's array-reconstruction helpers (and latin-1 bytes)."""

    def find_class(self, module: str, name: str) -> Any:
        """Allow numpy array reconstruction; refuse every other global with a DataError."""
        if (module, name) == ("_codecs", "encode"):
            return _latin1_encode
        if (module, name) in _ALLOWED:
            return _numpy_global(module, name)
        raise DataError(f"the pickle asks for {module}.{name}, which is not allowed "
                        "(only numpy arrays may appear in a dataset file)")


def load_restricted(path: Path) -> Any:
    """Unpickle ``path`` like ``pickle.load(f, encoding="bytes")`` with the numpy-only unpickler.

    Raises:
        DataError: when the pickle refers to a global other than numpy's array helpers.
        Exception: whatever pickle raises for a truncated or corrupt file (callers wrap it with the
            file name and how to fix it).
    """
    with path.open("rb") as handle:
        return NumpyOnlyUnpickler(handle, encoding="bytes").load()
