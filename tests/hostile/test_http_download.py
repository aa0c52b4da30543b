"""`data download --mirror` against hostile mirrors on loopback: one `error:` line, exit 2, nothing left in the
data folder (no `.part`, no staging folder), bounded time, no other host contacted; SIGTERM/SIGINT leave nothing."""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hostile_http import Behaviour, Request, Server, drip, reply, send, serve, stream_forever
from typer.testing import CliRunner

from unlearnleak.commands.data import data_app
from unlearnleak.data.files import LAYOUTS
from unlearnleak.errors import DownloadError

runner = CliRunner()
download_module = importlib.import_module("unlearnleak.data.download")  # the package re-exports a function
NAME = "retinamnist"  # a single-file download (its official size is known exactly)
PAYLOAD = b"official bytes " * 100


@pytest.fixture
def official(monkeypatch: pytest.MonkeyPatch) -> bytes:
    """Make PAYLOAD the 'official' file of NAME (its MD5), as a mirror would serve it."""
    md5 = hashlib.md5(PAYLOAD, usedforsecurity=False).hexdigest()
    monkeypatch.setitem(LAYOUTS, NAME, dataclasses.replace(LAYOUTS[NAME], md5=md5))
    return PAYLOAD


@pytest.fixture
def elsewhere() -> Iterator[Server]:
    """Another origin that must never be contacted."""
    with serve(send(reply(body=PAYLOAD))) as other:
        yield other


def fetch(server: Server, data: Path, *extra: str) -> list[str]:
    return ["download", NAME, "--data-dir", str(data), "--mirror", f"{server.url}/mirror", *extra]


def refused(args: list[str], data: Path, *needles: str, within: float = 20.0) -> str:
    """One error line holding ``needles`` within ``within`` s; the data folder holds nothing afterwards."""
    started = time.monotonic()
    result = runner.invoke(data_app, args)
    elapsed = time.monotonic() - started
    assert result.exit_code == 2, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in result.output, result.stderr
    # Besides the error, stderr may only hold the announcement of the download.
    assert all(line.startswith(("error:", "downloading ")) for line in result.stderr.splitlines()), result.stderr
    line = errors[0]
    for needle in needles:
        assert needle in line, (needle, line)
    assert elapsed < within, (elapsed, line)
    left = sorted(p.name for p in data.rglob("*")) if data.exists() else []
    assert left == [], f"left behind: {left}"
    return line


CASES: dict[str, tuple[Behaviour, tuple[str, ...], tuple[str, ...]]] = {
    "drip-one-byte-each-half-second": (
        lambda r, c: (c.sendall(reply(length=len(PAYLOAD))), drip(c, PAYLOAD, 0.5)),
        ("--timeout", "2"), ("gave no complete answer within 2 s", "nothing was installed")),
    "drip-status-line": (
        lambda r, c: drip(c, b"HTTP/1.1 200 OK\r\n\r\n", 0.5), ("--timeout", "2"), ("within 2 s",)),
    "redirect-to-ftp": (
        send(reply("302 Found", headers={"Location": "ftp://127.0.0.1/retinamnist.npz"})), (),
        ("HTTP 302", "redirects are not followed")),
    "body-over-the-official-size-announced": (
        send(reply(length=3_291_042)), (), ("announced 3.14 MiB", "refused before reading it", "3,291,041 bytes")),
    "body-over-the-official-size-streamed": (
        stream_forever(reply(length=-1)), (), ("answered more than 3.14 MiB", "not it")),
    "malformed-status-line": (
        send(b"220 ftp.example.org FTP server ready\r\n"), (), ("not HTTP",)),
    "truncated-body": (
        send(reply(body=PAYLOAD[:100], length=len(PAYLOAD)), close=True), (), ("broke off",)),
    "malformed-content-length": (
        send(reply(body=PAYLOAD, length=-1, headers={"Content-Length": "12abc"})), (), ("Content-Length",)),
    "gzip-bomb": (
        send(reply(body=b"\x1f\x8b" + b"\x00" * 64, headers={"Content-Encoding": "gzip"})), (), ("compressed",)),
    "http-500": (send(reply("500 Oops", body=b"down")), (), ("HTTP 500", "cannot download")),
    "wrong-bytes": (send(reply(body=b"not the official file")), (), ("checksum mismatch",)),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_hostile_mirror_is_one_error_line_and_leaves_nothing(case: str, tmp_path: Path, official: bytes,
                                                             elsewhere: Server) -> None:
    behaviour, extra, needles = CASES[case]
    with serve(behaviour) as server:
        refused(fetch(server, tmp_path / "data", *extra), tmp_path / "data", *needles)
        assert server.requests and server.requests[0].path == "/mirror/retinamnist.npz"
    assert elsewhere.requests == []


@pytest.mark.parametrize("status", ["301 Moved Permanently", "302 Found", "307 Temporary Redirect"])
def test_a_mirror_redirecting_elsewhere_is_refused_and_the_target_never_asked(status: str, tmp_path: Path,
                                                                              official: bytes,
                                                                              elsewhere: Server) -> None:
    with serve(send(reply(status, headers={"Location": f"{elsewhere.url}/retinamnist.npz"}))) as server:
        refused(fetch(server, tmp_path / "data"), tmp_path / "data", f"HTTP {status.split()[0]}", "not followed")
    assert elsewhere.requests == [] and elsewhere.connections == 0


def test_a_too_slow_transfer_is_stopped(tmp_path: Path, official: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    """Bytes keep coming (each read succeeds), but fewer than the minimum rate: stopped, nothing kept."""
    monkeypatch.setattr(download_module, "MIN_RATE", (200, 1.0))
    with serve(lambda r, c: (c.sendall(reply(length=len(PAYLOAD))), drip(c, PAYLOAD, 0.05))) as server, \
            pytest.raises(DownloadError, match="sent less than 200 bytes in 1 s"):
        download_module.download(NAME, tmp_path / "data", base_url=f"{server.url}/m", progress=False)
    assert list((tmp_path / "data").rglob("*")) == []


def test_a_correct_mirror_still_installs(tmp_path: Path, official: bytes) -> None:
    with serve(send(reply(body=PAYLOAD))) as server:
        result = runner.invoke(data_app, fetch(server, tmp_path / "data"))
    assert result.exit_code == 0, result.output
    assert (tmp_path / "data" / "medmnist" / f"{NAME}.npz").read_bytes() == PAYLOAD


MIRRORS = {
    "non-numeric-port": "http://127.0.0.1:abc/m",
    "unclosed-ipv6": "http://[::1/m",
    "bad-ipv6": "http://[::zz]:{port}/m",
    "space": "http://127.0.0.1:{port}/my mirror",
    "crlf-injection": "http://127.0.0.1:{port}/m\r\nX-Injected: 1",
    "non-ascii-path": "http://127.0.0.1:{port}/données",
    "ftp": "ftp://127.0.0.1:{port}/m",
    "credentials": "http://user:secret@127.0.0.1:{port}/m",
    "query": "http://127.0.0.1:{port}/m?x=1",
    "remote-file-url": "file://127.0.0.1/srv/m",
}


@pytest.mark.parametrize("case", sorted(MIRRORS))
def test_malformed_mirror_is_one_line_and_contacts_nothing(case: str, tmp_path: Path, official: bytes) -> None:
    with serve(send(reply(body=PAYLOAD))) as server:
        mirror = MIRRORS[case].replace("{port}", str(server.port))
        line = refused(["download", NAME, "--data-dir", str(tmp_path / "data"), "--mirror", mirror],
                       tmp_path / "data", "--mirror", within=5)
        assert "secret" not in line
        assert server.connections == 0


def test_a_file_mirror_that_is_not_a_regular_file_or_too_large(tmp_path: Path, official: bytes) -> None:
    folder = tmp_path / "local"
    folder.mkdir()
    (folder / f"{NAME}.npz").symlink_to("/dev/zero")  # endless: must not be read forever
    args = ["download", NAME, "--data-dir", str(tmp_path / "data"), "--mirror", folder.as_uri()]
    refused(args, tmp_path / "data", "not a regular file", within=5)
    (folder / f"{NAME}.npz").unlink()
    with (folder / f"{NAME}.npz").open("wb") as big:
        big.truncate(3_291_042)  # one byte over the official size (sparse: nothing is written)
    refused(args, tmp_path / "data", "3,291,042 bytes", "not the official file", within=5)


def _default_signals() -> None:
    """In the child: default SIGINT/SIGTERM even when the test run was started with them ignored (a background
    job ignores SIGINT, and Python then installs no Ctrl-C handler)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_killed_download_leaves_no_part_file(sig: signal.Signals, tmp_path: Path) -> None:
    """A real process, killed mid-transfer: it exits 130 and removes its temporary file."""
    data = tmp_path / "data"
    started: list[float] = []

    def slow(request: Request, conn: object) -> None:
        started.append(time.monotonic())
        conn.sendall(reply(length=len(PAYLOAD)) + PAYLOAD[:10])  # type: ignore[attr-defined]
        drip(conn, PAYLOAD[10:], 0.2)  # type: ignore[arg-type]

    with serve(slow) as server:
        env = {**os.environ, "UNLEARNLEAK_PROGRESS": "0"}
        proc = subprocess.Popen(
            [sys.executable, "-c", "from unlearnleak.cli import main; main()", "data", "download", NAME,
             "--data-dir", str(data), "--mirror", server.url], env=env, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, preexec_fn=_default_signals)
        try:
            deadline = time.monotonic() + 60
            while not list(data.glob("*.part")) and time.monotonic() < deadline and proc.poll() is None:
                time.sleep(0.05)
            assert list(data.glob("*.part")), "the download never started"
            time.sleep(0.3)
            proc.send_signal(sig)
            _, err = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert proc.returncode == 130, err
    assert b"interrupted: nothing was installed" in err and b"Traceback" not in err
    assert sorted(p.name for p in data.rglob("*")) == []


@pytest.mark.parametrize("timeout", ["0", "-1", "inf", "nan"])
def test_timeout_out_of_range_is_refused_before_any_request(timeout: str, tmp_path: Path, official: bytes) -> None:
    with serve(send(reply(body=PAYLOAD))) as server:
        refused(fetch(server, tmp_path / "data", "--timeout", timeout), tmp_path / "data", "--timeout", within=5)
        assert server.connections == 0
