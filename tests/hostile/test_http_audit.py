"""`audit` against hostile V2 endpoints on loopback: each case is one `error:` line, exit 2, no results folder,
bounded time, and no request to any other host (a redirect target records that it got nothing)."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hostile_http import Behaviour, Request, Server, drip, reply, send, serve, stream_forever, v2, v2_answer
from typer.testing import CliRunner

from cli_checks import one_error
from unlearnleak.cli import app

runner = CliRunner()
FAST = ["--per-class", "1", "--set", "max_steps=2"]


def audit(server: Server, out: Path, *extra: str) -> list[str]:
    url = f"{server.url}/v2/models/m"
    return ["audit", "--original-endpoint", url, "--unlearned-endpoint", url, "--input-shape", "1,2,2",
            "--num-classes", "3", "--out", str(out), *FAST, *extra]


def refused(args: list[str], tmp_path: Path, *needles: str, within: float = 20.0) -> str:
    """The run fails with one error line holding ``needles``, within ``within`` s, leaving nothing in tmp_path."""
    before = set(tmp_path.iterdir())
    started = time.monotonic()
    result = runner.invoke(app, args)
    elapsed = time.monotonic() - started
    line = one_error(result, *needles)
    assert elapsed < within, (elapsed, line)
    assert set(tmp_path.iterdir()) == before, "something was left behind"
    return line


@pytest.fixture
def elsewhere() -> Iterator[Server]:
    """Another server (another port: another origin) that must never be contacted."""
    with serve(send(reply(body=b"{}"))) as other:
        yield other


def _redirect(location: str, status: str = "302 Found") -> Behaviour:
    return send(reply(status, headers={"Location": location}))


def _infer_json(make: Callable[[Request], object]) -> Behaviour:
    def behaviour(request: Request, conn: socket.socket) -> None:
        conn.sendall(reply(body=json.dumps(make(request)).encode()))
    return behaviour


def _outputs(shape: object, data: object) -> dict[str, object]:
    return {"outputs": [{"name": "p", "shape": shape, "datatype": "FP64", "data": data}]}


# Each case: the server's behaviour, extra options, and what the one error line must say.
CASES: dict[str, tuple[Behaviour, tuple[str, ...], tuple[str, ...]]] = {
    "drip-body-one-byte-each-half-second": (
        v2(infer=lambda r, c: (c.sendall(reply(length=200)), drip(c, b"x" * 200, 0.5))),
        ("--endpoint-timeout", "2"), ("gave no complete answer within 2 s", "--endpoint-timeout")),
    "drip-status-line": (
        v2(metadata=lambda r, c: drip(c, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}", 0.5)),
        ("--endpoint-timeout", "2"), ("gave no complete answer within 2 s",)),
    "silent-server": (
        v2(metadata=lambda r, c: time.sleep(8)), ("--endpoint-timeout", "2"), ("no complete answer within 2 s",)),
    "redirect-to-ftp": (
        _redirect("ftp://127.0.0.1/v2/models/m"), (), ("HTTP 302", "redirects are not followed")),
    "redirect-on-infer-to-ftp": (
        v2(infer=_redirect("ftp://127.0.0.1/infer", "307 Temporary Redirect")), (), ("HTTP 307", "not followed")),
    "redirect-same-origin-option-to-ftp": (
        _redirect("ftp://127.0.0.1/v2/models/m"), ("--redirects", "same-origin"), ("only http:// and https://",)),
    "huge-metadata-announced": (
        v2(metadata=send(reply(length=10 ** 12))), (), ("announced 931 GiB", "refused before reading it")),
    "huge-metadata-streamed": (
        v2(metadata=stream_forever(reply(length=-1))), (), ("answered more than 1 MiB",)),
    "huge-infer-answer": (
        v2(infer=send(reply(body=b'{"outputs": [' + b" " * (3 << 20) + b"]}"))), (), ("accepted here",)),
    "status-line-ssh-banner": (
        send(b"SSH-2.0-OpenSSH_9.6\r\n\r\n"), (), ("not HTTP", "BadStatusLine")),
    "status-line-garbage": (
        v2(infer=send(b"HTTP/1.1 two hundred OK\r\n\r\n")), (), ("not HTTP",)),
    "too-many-headers": (
        send(reply(body=b"{}", headers={f"X-H{i}": "y" for i in range(200)})), (), ("more than 100 headers",)),
    "header-line-too-long": (
        send(reply(body=b"{}", headers={"X-Long": "y" * 70_000})), (), ("not HTTP",)),
    "truncated-metadata": (
        v2(metadata=send(reply(body=b'{"name": "m"', length=1000), close=True)), (), ("broke off",)),
    "truncated-chunked-infer": (
        v2(infer=send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10\r\n{\"outputs\"", close=True)),
        (), ("broke off",)),
    "gzip-bomb-metadata": (
        v2(metadata=send(reply(body=b"\x1f\x8b" + b"\x00" * 100, headers={"Content-Encoding": "gzip"}))),
        (), ("compressed body", "refused")),
    "nested-json-metadata": (
        v2(metadata=send(reply(body=b"[" * 200_000 + b"]" * 200_000))), (), ("nested",)),
    "nested-json-infer": (
        v2(infer=send(reply(body=b'{"outputs": ' + b"[" * 60 + b"]" * 60 + b"}"))), (), ("nested more than 32",)),
    "binary-metadata": (
        v2(metadata=send(reply(body=b"\x00\xff\xfe binary"))), (), ("malformed JSON",)),
    "metadata-not-an-object": (
        v2(metadata=send(reply(body=b"[1, 2]"))), (), ("instead of V2 model metadata",)),
    "400-digit-number": (
        v2(infer=send(reply(body=b'{"outputs": [{"shape": [1, 3], "data": [1' + b"0" * 400 + b', 0, 0]}]}'))),
        (), ("a number with 401 characters",)),
    "nan-constant": (
        v2(infer=send(reply(body=b'{"outputs": [{"shape": [1, 3], "data": [NaN, 0.5, 0.5]}]}'))),
        (), ("non-standard constant NaN",)),
    "booleans-as-probabilities": (
        v2(infer=_infer_json(lambda r: _outputs([1, 3], [True, False, False]))), (), ("non-number",)),
    "strings-as-shape": (
        v2(infer=_infer_json(lambda r: _outputs(["1", "3"], [0.2, 0.3, 0.5]))), (), ("without a V2 output",)),
    "wrong-shape-answer": (
        v2(infer=_infer_json(lambda r: _outputs([10 ** 30, 3], [0.2, 0.3, 0.5]))), (), ("answered shape",)),
    "retry-after-a-million-seconds": (
        v2(infer=send(reply("503 Busy", body=b"busy", headers={"Retry-After": "1000000"}))),
        ("--endpoint-timeout", "2"), ("within 2 s",)),
    "http-500-on-infer": (
        v2(infer=send(reply("500 Oops", body=b"x" * 100_000))), (), ("HTTP 500",)),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_hostile_endpoint_is_one_error_line(case: str, tmp_path: Path, elsewhere: Server) -> None:
    behaviour, extra, needles = CASES[case]
    with serve(behaviour) as server:
        refused(audit(server, tmp_path / "o", *extra), tmp_path, "--original-endpoint", *needles)
        assert server.requests, "the hostile server was asked"
    assert elsewhere.requests == []


@pytest.mark.parametrize(("status", "option"), [("302 Found", ()), ("307 Temporary Redirect", ()),
                                                ("308 Permanent Redirect", ("--redirects", "same-origin"))])
def test_redirect_to_another_server_never_reaches_it(status: str, option: tuple[str, ...], tmp_path: Path,
                                                      elsewhere: Server) -> None:
    """The θ_u answers must come from the given URL: a redirect to another origin is refused, never followed."""
    with serve(v2(infer=_redirect(f"{elsewhere.url}/v2/models/m/infer", status))) as server:
        line = refused(audit(server, tmp_path / "o", *option), tmp_path, "--original-endpoint")
        expected = "another origin" if option else f"HTTP {status.split()[0]}, a redirect"
        assert expected in line
    assert elsewhere.requests == [] and elsewhere.connections == 0


def test_same_origin_redirect_is_followed_only_when_asked(tmp_path: Path) -> None:
    def behaviour(request: Request, conn: socket.socket) -> None:
        if request.path.startswith("/old"):
            conn.sendall(reply("307 Temporary Redirect", headers={"Location": request.path.replace("/old", "", 1)}))
        elif request.method == "GET":
            conn.sendall(reply(body=b'{"name": "m"}'))
        else:
            conn.sendall(reply(body=v2_answer(request, 3)))

    with serve(behaviour) as server:
        url = f"{server.url}/old/v2/models/m"
        args = ["audit", "--original-endpoint", url, "--unlearned-endpoint", url, "--input-shape", "1,2,2",
                "--num-classes", "3", *FAST]
        refused([*args, "--out", str(tmp_path / "o")], tmp_path, "redirects are not followed")
        result = runner.invoke(app, [*args, "--out", str(tmp_path / "ok"), "--redirects", "same-origin"])
        assert result.exit_code in (0, 3), result.output  # 3: no label verdict at FAST's tiny probe budget
        assert json.loads((tmp_path / "ok" / "report.json").read_text())["mode"] == "black-box"


def test_the_command_deadline_stops_a_slow_but_steady_server(tmp_path: Path) -> None:
    def slow(request: Request, conn: socket.socket) -> None:
        time.sleep(0.5)
        conn.sendall(reply(body=v2_answer(request, 3)))

    with serve(v2(infer=slow)) as server:
        refused(audit(server, tmp_path / "o", "--endpoint-deadline", "1.5"), tmp_path,
                "--endpoint-deadline 1.5 s", within=10)


def test_rate_limit_that_would_pass_the_deadline_stops_at_once(tmp_path: Path) -> None:
    with serve(v2()) as server:
        refused(audit(server, tmp_path / "o", "--rate-limit", "0.01", "--endpoint-deadline", "30"), tmp_path,
                "--rate-limit 0.01/s", "--endpoint-deadline 30 s", within=10)


@pytest.mark.parametrize("rate", ["1e-9", "0", "-3", "inf", "nan"])
def test_rate_limit_out_of_range_is_refused_before_any_request(rate: str, tmp_path: Path) -> None:
    with serve(v2()) as server:
        refused(audit(server, tmp_path / "o", "--rate-limit", rate), tmp_path, "--rate-limit", ">= 0.01", within=5)
        assert server.requests == []


URLS = {
    "non-numeric-port": "http://127.0.0.1:abc/v2/models/m",
    "port-out-of-range": "http://127.0.0.1:99999/v2/models/m",
    "unclosed-ipv6": "http://[::1/v2/models/m",
    "bad-ipv6": "http://[::zz]:{port}/v2/models/m",
    "space-in-path": "http://127.0.0.1:{port}/v2/models/my model",
    "space-in-host": "http://127.0.0 .1:{port}/v2/models/m",
    "crlf-injection": "http://127.0.0.1:{port}/v2/models/m\r\nX-Injected: 1",
    "tab": "http://127.0.0.1:{port}/v2/models/\tm",
    "non-ascii-path": "http://127.0.0.1:{port}/v2/models/modèle",
    "non-ascii-host": "http://exämple.invalid:{port}/v2/models/m",
    "ftp-scheme": "ftp://127.0.0.1:{port}/v2/models/m",
    "file-scheme": "file:///etc/passwd",
    "no-scheme": "127.0.0.1:{port}/v2/models/m",
    "no-host": "http:///v2/models/m",
    "credentials": "http://user:secret@127.0.0.1:{port}/v2/models/m",
    "query": "http://127.0.0.1:{port}/v2/models/m?debug=1",
    "fragment": "http://127.0.0.1:{port}/v2/models/m#x",
    "empty": "",
    "very-long": "http://127.0.0.1:{port}/" + "a" * 5000,
}


@pytest.mark.parametrize("case", sorted(URLS))
def test_malformed_endpoint_url_is_one_line_and_contacts_nothing(case: str, tmp_path: Path) -> None:
    with serve(v2()) as server:
        bad = URLS[case].replace("{port}", str(server.port))
        good = f"{server.url}/v2/models/m"
        args = ["audit", "--original-endpoint", good, "--unlearned-endpoint", bad, "--input-shape", "1,2,2",
                "--num-classes", "3", "--out", str(tmp_path / "o"), *FAST]
        line = refused(args, tmp_path, "--unlearned-endpoint", within=5)
        assert "secret" not in line  # a password in a URL is never echoed
        assert server.requests == [] and server.connections == 0
