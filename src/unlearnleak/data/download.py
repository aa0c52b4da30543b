"""Fetch a dataset's official archive, check its size and published MD5, and extract it safely into the data folder.

The bytes are streamed to a temporary file beside the destination while the MD5 is computed; only a
verified file is renamed into place, and the temporary file is removed on any failure, Ctrl-C or SIGTERM.
The transport is :class:`unlearnleak.safe_http.SafeHttp`: http(s) only, no redirects from a mirror (the
official hosts may redirect within their own origin), a body larger than the official file (or the bound
in :data:`MAX_BYTES`) refused before it is written in full, a deadline for the whole download and a minimum
transfer rate. Archives are extracted member by member after rejecting absolute paths, ``..`` components,
links and anything outside the dataset's official top folder (and with ``tarfile``'s ``filter="data"``),
into a temporary folder that is then moved into place. ``base_url`` (or ``$UNLEARNLEAK_DOWNLOAD_MIRROR``)
replaces the official host: the file is then fetched from ``<base_url>/<official file name>``; a
``file://`` base URL copies from a local folder under the same checks.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import tarfile
import tempfile
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
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
from unlearnleak.safe_http import HttpError, Limits, SafeHttp, check_url, origin
from unlearnleak.storage import stop_signals_interrupt

MIRROR_ENV = "UNLEARNLEAK_DOWNLOAD_MIRROR"
DEFAULT_TIMEOUT = 60.0  # seconds to connect, and of silence tolerated on the connection
MIN_RATE = (16 << 10, 60.0)  # a transfer that brings less than 16 KiB in a minute is stopped
DEADLINE_RATE = 100 << 10  # the default deadline lets the largest accepted file arrive at 100 KiB/s ...
DEADLINE_BASE = 600.0  # ... plus ten minutes

_MIB = 1 << 20
MAX_BYTES: dict[str, int] = {
    # The official files' sizes in bytes (a larger body cannot be the official file):
    "cifar10": 170_498_071, "cifar100": 169_001_437, "stl10": 2_640_397_119, "retinamnist": 3_291_041,
    # MedMNIST: bounds, the uncompressed images and labels of every split (n × (784·C + 8)) plus 1 MiB:
    "pathmnist": 107_180 * (784 * 3 + 8) + _MIB, "dermamnist": 10_015 * (784 * 3 + 8) + _MIB,
    "octmnist": 109_309 * (784 + 8) + _MIB, "pneumoniamnist": 5_856 * (784 + 8) + _MIB,
    "breastmnist": 780 * (784 + 8) + _MIB, "bloodmnist": 17_092 * (784 * 3 + 8) + _MIB,
    "tissuemnist": 236_386 * (784 + 8) + _MIB, "organamnist": 58_850 * (784 + 8) + _MIB,
    "organcmnist": 23_660 * (784 + 8) + _MIB, "organsmnist": 25_221 * (784 + 8) + _MIB,
}
"""The largest body accepted for each download: more is refused before it is all written to disk."""


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
    return f"{mirror.rstrip('/')}/{urllib.parse.quote(layout.archive_name)}"


def _check_mirror(mirror: str, source: str) -> None:
    """A mirror is an http(s) URL with a host, or a file:// URL of a local folder (checked before any download)."""
    if mirror.lower().startswith("file:"):
        parts = urllib.parse.urlsplit(mirror)
        if parts.netloc not in ("", "localhost") or not parts.path or parts.query or parts.fragment \
                or any(c.isspace() or ord(c) < 0x20 for c in mirror):
            raise ConfigError(f"{source} {mirror!r} is not a file:// URL of a local folder; give e.g. "
                              "file:///srv/datasets")
        return
    try:
        check_url(mirror, source)
    except HttpError as exc:
        raise ConfigError(f"{exc}; give the base URL of a folder serving the official file names, e.g. "
                          "https://example.org/datasets or file:///srv/datasets") from None


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
             timeout: float = DEFAULT_TIMEOUT, deadline: float | None = None, force: bool = False,
             progress: bool = True) -> Path:
    """Download, verify and install dataset ``name`` under the data folder.

    Args:
        name: a registered dataset with an official download (see :func:`downloadable`).
        data_dir: the data folder (default: ``$UNLEARNLEAK_DATA_DIR``, else ``./data``).
        base_url: a mirror serving the official file names (default: ``$UNLEARNLEAK_DOWNLOAD_MIRROR``,
            else the official host). A mirror's redirects are refused; the official hosts may redirect
            within their own origin.
        timeout: seconds to wait for the server on connect and on each read.
        deadline: seconds the whole download may take (default: :func:`default_deadline`).
        force: download again even when the files are already present.
        progress: show a progress bar on stderr (also off when ``$UNLEARNLEAK_PROGRESS`` is 0).

    Returns:
        The installed dataset folder (archives) or file (MedMNIST ``.npz``).

    Raises:
        DownloadError: offline, HTTP error, too large, too slow, checksum mismatch, or an unsafe / corrupt archive.
        ConfigError: ``name`` is unknown or needs no download, or a setting is out of range.
    """
    layout = _layout(name)
    root = resolve_data_dir(data_dir)
    target = root / (layout.top_folder if layout.archive == "tar.gz" else layout.files[0])
    if files_present(name, root) and not force:
        return target
    url = download_url(name, base_url)
    seconds = check_deadline(name, deadline)
    if not (timeout > 0 and timeout < float("inf")):
        raise ConfigError(f"timeout must be a finite number of seconds > 0, got {timeout}")
    check_data_dir(root)
    mirrored = url != layout.url
    with stop_signals_interrupt(), \
            _verified_download(name, url, root, layout.md5, timeout, seconds, mirrored, progress) as tmp:
        if layout.archive == "tar.gz":
            safe_extract(tmp, root, layout.top_folder)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, target)
    if not files_present(name, root):
        raise DownloadError(f"{name}: the download from {url} did not provide every expected file; "
                            f"to install by hand, {manual_steps(name, root)}.")
    return target


def max_bytes(name: str) -> int:
    """The largest body accepted for ``name`` (its official size, or a bound)."""
    return MAX_BYTES[name]


def default_deadline(name: str) -> float:
    """Seconds a download of ``name`` may take by default: its largest size at 100 KiB/s, plus ten minutes."""
    return DEADLINE_BASE + max_bytes(name) / DEADLINE_RATE


def check_deadline(name: str, deadline: float | None) -> float:
    """``deadline`` (or the default for ``name``) as a finite number of seconds > 0."""
    if deadline is None:
        return default_deadline(name)
    if not (deadline > 0 and deadline < float("inf")):
        raise ConfigError(f"--timeout must be a finite number of seconds > 0 for the whole download, got {deadline}")
    return deadline


def _layout(name: str) -> Layout:
    if name in LAYOUTS:
        return LAYOUTS[name]
    if name in DATASET_INFO:
        raise ConfigError(f"dataset {name!r} installs with the package and needs no download; "
                          f"downloadable: {', '.join(downloadable())}")
    DATASETS.get(name)  # raises ConfigError listing the known names
    raise ConfigError(f"dataset {name!r} has no download")


@contextmanager
def _verified_download(name: str, url: str, root: Path, md5: str, timeout: float, deadline: float, mirrored: bool,
                       progress: bool) -> Iterator[Path]:
    """Stream ``url`` to a temporary file in ``root``, check its MD5, yield it; always clean it up."""
    fd, tmp_name = tempfile.mkstemp(prefix=f".{name}-", suffix=".part", dir=root)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            got = _stream(name, url, out, root, timeout, deadline, mirrored, progress)
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


def _stream(name: str, url: str, out: BinaryIO, root: Path, timeout: float, deadline: float, mirrored: bool,
            progress: bool) -> str:
    """Copy ``url`` into ``out`` in chunks with a progress bar; return the hex MD5 of the bytes."""
    digest = hashlib.md5(usedforsecurity=False)
    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
               TimeRemainingColumn())
    mode = progress_mode() if progress else "off"
    cap = max_bytes(name)
    # a rich bar with transfer speed on a terminal; periodic plain lines (in bytes) off one
    lines = Task(f"downloading {name} (bytes)", None, mode="lines" if mode == "lines" else "off")
    with lines, Progress(*columns, console=Console(stderr=True), disable=mode != "bar") as bar:
        task = bar.add_task(f"{name}", total=None)

        def sink(chunk: bytes) -> None:
            digest.update(chunk)
            out.write(chunk)
            bar.advance(task, len(chunk))
            lines.advance(len(chunk))

        def on_length(length: int | None) -> None:
            bar.update(task, total=length)
            lines.total = length

        if url.lower().startswith("file:"):
            _copy_local(name, url, cap, sink, on_length)
        else:
            _fetch(name, url, root, timeout, deadline, mirrored, cap, sink, on_length)
    return digest.hexdigest()


def _fetch(name: str, url: str, root: Path, timeout: float, deadline: float, mirrored: bool, cap: int,
           sink: Callable[[bytes], None], on_length: Callable[[int | None], None]) -> None:
    """GET ``url`` through the hardened client into ``sink``; every failure is one DownloadError."""
    scheme, host, port = origin(url)
    where = f"{name} {'mirror' if mirrored else 'download'}"
    limits = Limits(connect_timeout=min(timeout, 30.0), read_timeout=timeout, request_timeout=deadline,
                    max_bytes=cap, retries=2, backoff=1.0, redirects="none" if mirrored else "same-origin",
                    min_rate=MIN_RATE)
    try:
        client = SafeHttp(f"{scheme}://{host}:{port}", what=where, limits=limits,
                          user_agent="unlearnleak-data-download")
        try:
            client.request("GET", url, sink=sink, on_length=on_length)
        finally:
            client.close()
    except HttpError as exc:
        if exc.kind in ("unreachable", "status"):
            raise _offline(name, url, root, str(exc).removeprefix(f"{where} {url} ")) from None
        hint = {"too-large": f"the official file is at most {cap:,} bytes, so this is not it; check the mirror",
                "timeout": "try again later, or raise --timeout if the connection is just slow",
                "slow": "try again later, or use another mirror",
                "redirect": "give the mirror's final URL"}.get(exc.kind, "check the mirror")
        raise DownloadError(f"{exc}; nothing was installed: {hint}") from None


def _copy_local(name: str, url: str, cap: int, sink: Callable[[bytes], None],
                on_length: Callable[[int | None], None]) -> None:
    """A ``file://`` URL: the local regular file, under the same size cap."""
    path = Path(urllib.request.url2pathname(urllib.parse.urlsplit(url).path))

    def unreadable(exc: OSError) -> DownloadError:
        return DownloadError(f"{name}: cannot read {path} ({exc.strerror or exc}); check the file:// mirror, "
                             "which must hold the official file names")

    try:
        source = path.open("rb")
        info = os.fstat(source.fileno())
    except OSError as exc:
        raise unreadable(exc) from None
    with source:
        if not stat.S_ISREG(info.st_mode):
            raise DownloadError(f"{name}: {path} is not a regular file; check the file:// mirror")
        if info.st_size > cap:
            raise DownloadError(f"{name}: {path} holds {info.st_size:,} bytes, more than the official file's "
                                f"{cap:,}; it is not the official file")
        on_length(info.st_size)
        total = 0
        while True:
            try:
                chunk = source.read(CHUNK_BYTES)
            except OSError as exc:
                raise unreadable(exc) from None
            if not chunk:
                return
            total += len(chunk)
            if total > cap:
                raise DownloadError(f"{name}: {path} grew beyond the official file's {cap:,} bytes while read")
            sink(chunk)


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
