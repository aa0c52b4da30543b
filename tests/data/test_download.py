"""Downloads against a loopback HTTP server: success, checksum mismatch, unreachable host, unsafe archives."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import http.server
import io
import socket
import tarfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from unlearnleak.data import load_dataset
from unlearnleak.data.download import download, download_url
from unlearnleak.data.files import LAYOUTS
from unlearnleak.errors import ConfigError, DownloadError

Writers = dict[str, Callable[..., dict[str, np.ndarray]]]


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A loopback HTTP server serving the folder it returns."""
    root = tmp_path / "served"
    root.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(root))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", root
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


def _cifar10_archive(tmp_path: Path, served: Path, writers: Writers) -> str:
    """Write a tiny official-layout cifar-10-python.tar.gz into ``served``; return its md5."""
    staging = tmp_path / "staging"
    writers["cifar10"](staging)
    archive = served / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(staging / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    return hashlib.md5(archive.read_bytes(), usedforsecurity=False).hexdigest()


def _use_md5(monkeypatch: pytest.MonkeyPatch, name: str, md5: str) -> None:
    monkeypatch.setitem(LAYOUTS, name, dataclasses.replace(LAYOUTS[name], md5=md5))


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.name.startswith(".") or p.suffix == ".part")


def test_download_extracts_and_loader_works(tmp_path: Path, server: tuple[str, Path], writers: Writers,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    url, served = server
    _use_md5(monkeypatch, "cifar10", _cifar10_archive(tmp_path, served, writers))
    data = tmp_path / "data"
    installed = download("cifar10", data, base_url=url, progress=False)
    assert installed == data / "cifar-10-batches-py"
    assert (installed / "data_batch_5").is_file() and _leftovers(data) == []
    assert len(load_dataset("cifar10", "test", data_dir=data)) > 0
    # Present files are not fetched again (the server no longer has the archive).
    (served / "cifar-10-python.tar.gz").unlink()
    assert download("cifar10", data, base_url=url, progress=False) == installed


def test_checksum_mismatch_leaves_nothing(tmp_path: Path, server: tuple[str, Path], writers: Writers) -> None:
    url, served = server
    got = _cifar10_archive(tmp_path, served, writers)
    data = tmp_path / "data"
    with pytest.raises(DownloadError) as info:
        download("cifar10", data, base_url=url, progress=False)
    message = str(info.value)
    assert "expected md5 c58f30108f718f92721af3b95e74349a" in message and f"got {got}" in message
    assert list(data.rglob("*")) == []


def test_unreachable_host_says_where_to_put_files(tmp_path: Path) -> None:
    with socket.socket() as sock:  # a loopback port that nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    data = tmp_path / "data"
    with pytest.raises(DownloadError) as info:
        download("cifar10", data, base_url=f"http://127.0.0.1:{port}", timeout=5, progress=False)
    message = str(info.value)
    assert "network is unreachable" in message
    assert "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz" in message
    assert f"{data / 'cifar-10-batches-py'}/ must hold data_batch_1, data_batch_2" in message
    assert list(data.rglob("*")) == []


def test_http_error(tmp_path: Path, server: tuple[str, Path]) -> None:
    with pytest.raises(DownloadError, match="HTTP 404"):
        download("stl10", tmp_path / "data", base_url=server[0], progress=False)


def test_unsafe_archive_is_refused(tmp_path: Path, server: tuple[str, Path],
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    url, served = server
    archive = served / "cifar-100-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        payload = b"owned"
        member = tarfile.TarInfo("cifar-100-python/../../evil.txt")
        member.size = len(payload)
        tar.addfile(member, io.BytesIO(payload))
    _use_md5(monkeypatch, "cifar100", hashlib.md5(archive.read_bytes(), usedforsecurity=False).hexdigest())
    data = tmp_path / "deep" / "data"
    with pytest.raises(DownloadError, match="unsafe archive member"):
        download("cifar100", data, base_url=url, progress=False)
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "deep" / "evil.txt").exists()
    assert list(data.rglob("*")) == []


def test_npz_download_goes_to_medmnist_folder(tmp_path: Path, server: tuple[str, Path], writers: Writers,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    url, served = server
    writers["medmnist"](served / "breastmnist.npz", 1, 2)
    _use_md5(monkeypatch, "breastmnist",
             hashlib.md5((served / "breastmnist.npz").read_bytes(), usedforsecurity=False).hexdigest())
    monkeypatch.setenv("UNLEARNLEAK_DOWNLOAD_MIRROR", url)
    assert download_url("breastmnist") == f"{url}/breastmnist.npz"
    data = tmp_path / "data"
    assert download("breastmnist", data, progress=False) == data / "medmnist" / "breastmnist.npz"
    assert load_dataset("breastmnist", "val", data_dir=data).x.shape[1:] == (1, 28, 28)
    assert _leftovers(data) == []


def test_official_urls_and_names() -> None:
    assert download_url("cifar10") == "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
    assert LAYOUTS["stl10"].md5 == "91f7769df0f17e558f3565bffb0c7dfb"
    assert LAYOUTS["cifar100"].md5 == "eb9058c3a382ffc7106e4002c42a8d85"
    assert LAYOUTS["retinamnist"].archive_name == "retinamnist.npz"
    with pytest.raises(ConfigError, match="needs no download"):
        download("digits")
    with pytest.raises(ConfigError, match="unknown dataset"):
        download("imagenet")
