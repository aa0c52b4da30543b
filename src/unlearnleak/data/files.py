"""On-disk layouts of the file-based datasets, checksums for provenance, and the 'file missing' message.

Every loader that reads files asks this module where they should be, so the error a user sees for a
missing file, ``unlearnleak data list`` and ``unlearnleak data download`` all describe the same layout.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from unlearnleak.data.base import FileRecord
from unlearnleak.errors import DataError

CHUNK_BYTES = 1 << 20


@dataclass(frozen=True)
class Layout:
    """Where a dataset's official files go under the data folder, and the official file they come from.

    ``alternatives`` lists complete sets of relative paths; the dataset is present when every path of
    any one set exists (MedMNIST accepts ``medmnist/<name>.npz`` or ``<name>.npz``). ``url`` and ``md5``
    are the official download and its published checksum; ``archive`` says whether the download is a
    ``tar.gz`` holding ``top_folder`` (extracted into the data folder) or the data ``file`` itself (saved
    as ``files[0]``).
    """

    alternatives: tuple[tuple[str, ...], ...]
    url: str
    md5: str
    archive: Literal["tar.gz", "file"]
    top_folder: str = ""

    @property
    def files(self) -> tuple[str, ...]:
        """The preferred set of relative paths."""
        return self.alternatives[0]

    @property
    def archive_name(self) -> str:
        """The download's file name (a mirror serves it under this name)."""
        return self.url.split("?", 1)[0].rsplit("/", 1)[-1]


LAYOUTS: dict[str, Layout] = {}
"""Dataset name → on-disk layout; filled by the loader modules when they register."""


def files_present(name: str, data_dir: Path) -> bool:
    """Whether every file of one of ``name``'s layout alternatives exists under ``data_dir``."""
    layout = LAYOUTS[name]
    return any(all((data_dir / rel).is_file() for rel in option) for option in layout.alternatives)


def manual_steps(name: str, data_dir: Path) -> str:
    """What to download by hand and where to put it so that ``name`` loads from ``data_dir``."""
    layout = LAYOUTS[name]
    if layout.archive == "file":
        return f"download {layout.url} (md5 {layout.md5}) and save it as {data_dir / layout.files[0]}"
    folders: dict[Path, list[str]] = {}
    for rel in layout.files:
        path = data_dir / rel
        folders.setdefault(path.parent, []).append(path.name)
    listing = "; ".join(f"{folder}{os.sep} must hold {', '.join(names)}" for folder, names in folders.items())
    return (f"download {layout.url} (md5 {layout.md5}) and extract it into {data_dir} (it holds the folder "
            f"{layout.top_folder}/), so that {listing}")


def how_to_obtain(name: str, data_dir: Path) -> str:
    """One paragraph telling the user how to get ``name``'s files into ``data_dir``."""
    return (
        f"Run `unlearnleak data download {name} --data-dir {data_dir}`, or {manual_steps(name, data_dir)}. "
        f"The data folder is --data-dir / data_dir=, else $UNLEARNLEAK_DATA_DIR, else ./data."
    )


def require_file(name: str, data_dir: Path, rel: str) -> Path:
    """The path of ``rel`` under ``data_dir``; a DataError explaining how to get it when it is missing."""
    path = data_dir / rel
    if not path.is_file():
        raise DataError(f"{name}: missing file {path}. {how_to_obtain(name, data_dir)}")
    return path


def corrupt(name: str, path: Path, problem: str, data_dir: Path) -> DataError:
    """A DataError for a file that exists but is not the expected official file."""
    return DataError(
        f"{name}: {path} is truncated, corrupt or not the official file: {problem}. "
        f"Replace it with the official file. {how_to_obtain(name, data_dir)}"
    )


_SHA256_CACHE: dict[tuple[str, int, int], str] = {}


def sha256_file(path: Path) -> str:
    """The sha256 of ``path``, read in chunks; memoised per (path, size, mtime) within the process."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    cached = _SHA256_CACHE.get(key)
    if cached is not None:
        return cached
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            digest.update(chunk)
    _SHA256_CACHE[key] = digest.hexdigest()
    return _SHA256_CACHE[key]


def file_record(path: Path) -> FileRecord:
    """Provenance entry for one source file: absolute path, size in bytes, sha256."""
    return FileRecord(path=os.fspath(path.resolve()), size=path.stat().st_size, sha256=sha256_file(path))


def package_file(module: str, filename: str) -> Path:
    """The path of a data file installed inside a Python package (e.g. scikit-learn's bundled tables)."""
    return Path(str(importlib.resources.files(module).joinpath(filename)))
