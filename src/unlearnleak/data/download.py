"""Fetch a dataset's official archive, check its published MD5, and extract it safely into the data folder.

The bytes are streamed to a temporary file beside the destination while the MD5 is computed; only a
verified file is renamed into place. Archives are extracted member by member after rejecting absolute
paths, ``..`` components, links and anything outside the dataset's official top folder (and with
``tarfile``'s ``filter="data"``), into a temporary folder that is then moved into place.
``base_url`` (or ``$UNLEARNLEAK_DOWNLOAD_MIRROR``) replaces the official host: the file is then fetched
from ``<base_url>/<official file name>``. urllib only: no extra dependency.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from unlearnleak.data.base import DATASET_INFO, DATASETS, resolve_data_dir
from unlearnleak.data.files import CHUNK_BYTES, LAYOUTS, Layout, files_present, manual_steps
from unlearnleak.errors import ConfigError, DownloadError
from unlearnleak.progress import Task, progress_mode

MIRROR_ENV = "UNLEARNLEAK_DOWNLOAD_MIRROR"
DEFAULT_TIMEOUT = 60.0


def downloadable() -> list[str]:
    """Names of the datasets that have an official download."""
    return sorted(LAYOUTS)


def download_url(name: str, base_url: str | None = None) -> str:
    """The URL ``name`` is fetched from: the official one, or ``<mirror>/<official file name>``."""
    layout = _layout(name)
    mirror = base_url or os.environ.get(MIRROR_ENV)
    if not mirror:
        return layout.url
    _check_mirror(mirror, "--mirror" if base_url else f"${MIRROR_ENV}")
    return f"{mirror.rstrip('/')}/{layout.archive_name}"


def _check_mirror(mirror: str, source: str) -> None:
    """A mirror must be an http(s)/ftp URL with a host, or a file:// URL (checked before any download)."""
    parts = urllib.parse.urlsplit(mirror)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https", "ftp", "file") or (scheme != "file" and not parts.netloc) \
            or any(c.isspace() for c in mirror):
        raise ConfigError(f"{source} {mirror!r} is not a URL; give the base URL of a folder serving the "
                          "official file names, e.g. https://example.org/datasets or file:///srv/datasets")


def check_data_dir(root: Path) -> None:
    """The data folder must exist or be creatable, and be writable (checked before any download)."""
    try:
        root.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".unlearnleak-probe-", dir=root)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise ConfigError(f"data folder {root} cannot be written ({exc.strerror}); choose a writable "
                          "--data-dir (or $UNLEARNLEAK_DATA_DIR)") from exc


def download(name: str, data_dir: str | Path | None = None, *, base_url: str | None = None,
             timeout: float = DEFAULT_TIMEOUT, force: bool = False, progress: bool = True) -> Path:
    """Download, verify and install dataset ``name`` under the data folder.

    Args:
        name: a registered dataset with an official download (see :func:`downloadable`).
        data_dir: the data folder (default: ``$UNLEARNLEAK_DATA_DIR``, else ``./data``).
        base_url: a mirror serving the official file names (default: ``$UNLEARNLEAK_DOWNLOAD_MIRROR``,
            else the official host).
        timeout: seconds to wait for the server on connect and on each read.
        force: download again even when the files are already present.
        progress: show a progress bar on stderr (also off when ``$UNLEARNLEAK_PROGRESS`` is 0).

    Returns:
        The installed dataset folder (archives) or file (MedMNIST ``.npz``).

    Raises:
        DownloadError: offline, HTTP error, checksum mismatch, or an unsafe / corrupt archive.
        ConfigError: ``name`` is unknown or needs no download.
    """
    layout = _layout(name)
    root = resolve_data_dir(data_dir)
    target = root / (layout.top_folder if layout.archive == "tar.gz" else layout.files[0])
    if files_present(name, root) and not force:
        return target
    url = download_url(name, base_url)
    check_data_dir(root)
    with _verified_download(name, url, root, layout.md5, timeout, progress) as tmp:
        if layout.archive == "tar.gz":
            safe_extract(tmp, root, layout.top_folder)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, target)
    if not files_present(name, root):
        raise DownloadError(f"{name}: the download from {url} did not provide every expected file; "
                            f"to install by hand, {manual_steps(name, root)}.")
    return target


def _layout(name: str) -> Layout:
    if name in LAYOUTS:
        return LAYOUTS[name]
    if name in DATASET_INFO:
        raise ConfigError(f"dataset {name!r} installs with the package and needs no download; "
                          f"downloadable: {', '.join(downloadable())}")
    DATASETS.get(name)  # raises ConfigError listing the known names
    raise ConfigError(f"dataset {name!r} has no download")


@contextmanager
def _verified_download(name: str, url: str, root: Path, md5: str, timeout: float, progress: bool
                       ) -> Iterator[Path]:
    """Stream ``url`` to a temporary file in ``root``, check its MD5, yield it; always clean it up."""
    fd, tmp_name = tempfile.mkstemp(prefix=f".{name}-", suffix=".part", dir=root)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            got = _stream(name, url, out, root, timeout, progress)
        if got != md5:
            raise DownloadError(f"{name}: checksum mismatch for {url}: expected md5 {md5}, got {got}. The "
                                "partial file was deleted; try again, or check that the mirror serves the "
                                "official file.")
        yield tmp
    finally:
        tmp.unlink(missing_ok=True)


def _offline(name: str, url: str, root: Path, why: str) -> DownloadError:
    return DownloadError(f"{name}: cannot download {url}: {why}. The network is unreachable or the server "
                         f"refused; to install by hand, {manual_steps(name, root)}.")


def _stream(name: str, url: str, out: BinaryIO, root: Path, timeout: float, progress: bool) -> str:
    """Copy ``url`` into ``out`` in chunks with a progress bar; return the hex MD5 of the bytes."""
    try:
        request = urllib.request.Request(url, headers={"User-Agent": "unlearnleak-data-download"})
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        raise _offline(name, url, root, f"the server answered HTTP {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as exc:
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        raise _offline(name, url, root, str(reason)) from exc
    digest = hashlib.md5(usedforsecurity=False)
    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
               TimeRemainingColumn())
    mode = progress_mode() if progress else "off"
    length = response.headers.get("Content-Length")
    total = int(length) if length and length.isdigit() else None
    # a rich bar with transfer speed on a terminal; periodic plain lines (in bytes) off one
    lines = Task(f"downloading {name} (bytes)", total, mode="lines" if mode == "lines" else "off")
    with response, lines, Progress(*columns, console=Console(stderr=True), disable=mode != "bar") as bar:
        task = bar.add_task(f"{name}", total=total)
        try:
            while chunk := response.read(CHUNK_BYTES):
                digest.update(chunk)
                out.write(chunk)
                bar.advance(task, len(chunk))
                lines.advance(len(chunk))
        except (OSError, http.client.HTTPException) as exc:
            raise _offline(name, url, root, f"the transfer broke off ({exc})") from exc
    return digest.hexdigest()


def _check_member(member: tarfile.TarInfo, top_folder: str, archive: Path) -> None:
    """Refuse absolute paths, ``..``, links/devices and anything outside ``top_folder``."""
    path = PurePosixPath(member.name)
    unsafe = path.is_absolute() or member.name.startswith(("/", "\\")) or ":" in path.parts[0]
    if unsafe or ".." in path.parts:
        raise DownloadError(f"{archive.name}: refusing the unsafe archive member {member.name!r}")
    if not (member.isfile() or member.isdir()):
        raise DownloadError(f"{archive.name}: refusing the archive member {member.name!r}, which is not a "
                            "regular file or folder")
    if path.parts[0] != top_folder:
        raise DownloadError(f"{archive.name}: the member {member.name!r} lies outside {top_folder}/, "
                            "so this is not the official archive")


def safe_extract(archive: Path, root: Path, top_folder: str) -> Path:
    """Extract the ``.tar.gz`` ``archive`` (all under ``top_folder/``) into ``root``; return the folder."""
    staging = Path(tempfile.mkdtemp(prefix=".extract-", dir=root))
    try:
        try:
            with tarfile.open(archive, "r:gz") as tar:
                members = tar.getmembers()
                for member in members:
                    _check_member(member, top_folder, archive)
                tar.extractall(staging, members=members, filter="data")
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise DownloadError(f"{archive.name}: the archive is corrupt or truncated ({exc})") from exc
        _move_tree(staging / top_folder, root / top_folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return root / top_folder


def _move_tree(source: Path, dest: Path) -> None:
    """Move every file of ``source`` to the same place under ``dest``, replacing existing files."""
    for path in sorted(source.rglob("*")):
        if path.is_file():
            target = dest / path.relative_to(source)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, target)
    dest.mkdir(parents=True, exist_ok=True)
