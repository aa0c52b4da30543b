"""The hardened client itself (`unlearnleak.safe_http`), against loopback servers: deadlines, caps, redirects,
retries, keep-alive, URL and JSON limits at their exact boundaries."""

from __future__ import annotations

import socket
import time

import pytest
from hostile_http import Request, drip, reply, send, serve

from unlearnleak.safe_http import (
    MAX_JSON_DEPTH,
    MAX_NUMBER_CHARS,
    Deadline,
    HttpError,
    Limits,
    SafeHttp,
    check_url,
    parse_json,
)

QUICK = Limits(request_timeout=5, retries=2, backoff=0.01)


def test_keep_alive_reuses_one_connection() -> None:
    with serve(send(reply(body=b"{}"))) as server:
        client = SafeHttp(server.url, what="t", limits=QUICK)
        for _ in range(5):
            assert client.get(f"{server.url}/x").body == b"{}"
        assert server.connections == 1 and len(server.requests) == 5 and client.sent["GET"] == 5


def test_a_drip_is_cut_at_the_request_deadline_not_per_read() -> None:
    """Each byte arrives well within the read timeout, yet the request ends at its deadline."""
    with serve(lambda r, c: (c.sendall(reply(length=100)), drip(c, b"x" * 100, 0.2))) as server:
        client = SafeHttp(server.url, what="t", limits=Limits(read_timeout=30, request_timeout=1.0))
        started = time.monotonic()
        with pytest.raises(HttpError, match="no complete answer within 1 s") as info:
            client.get(f"{server.url}/x")
        elapsed = time.monotonic() - started
    assert info.value.kind == "timeout" and 1.0 <= elapsed < 10.0


def test_the_command_deadline_is_shared_by_clients() -> None:
    def slow(request: Request, conn: socket.socket) -> None:
        time.sleep(0.4)
        conn.sendall(reply(body=b"{}"))

    with serve(slow) as a, serve(slow) as b:
        deadline = Deadline(1.0, "--endpoint-deadline 1 s")
        first = SafeHttp(a.url, what="a", limits=QUICK, deadline=deadline)
        second = SafeHttp(b.url, what="b", limits=QUICK, deadline=deadline)
        first.get(f"{a.url}/x")
        second.get(f"{b.url}/x")
        with pytest.raises(HttpError, match=r"the deadline \(--endpoint-deadline 1 s\) passed") as info:
            for _ in range(5):
                first.get(f"{a.url}/x")
                second.get(f"{b.url}/x")
    assert info.value.kind == "deadline"


def test_size_cap_boundary() -> None:
    with serve(send(reply(body=b"x" * 100))) as server:
        client = SafeHttp(server.url, what="t", limits=QUICK)
        assert len(client.get(f"{server.url}/x", max_bytes=100).body) == 100
        with pytest.raises(HttpError, match="announced 100 bytes, more than the 99 bytes") as info:
            client.get(f"{server.url}/x", max_bytes=99)
    assert info.value.kind == "too-large"


def test_same_origin_redirects_are_followed_only_when_allowed_and_never_turn_a_post_into_a_get() -> None:
    def behaviour(request: Request, conn: socket.socket) -> None:
        if request.path == "/loop":
            conn.sendall(reply("302 Found", headers={"Location": "/loop"}))
        elif request.path == "/old":
            conn.sendall(reply("301 Moved Permanently", headers={"Location": "/new"}))
        else:
            conn.sendall(reply(body=b'{"at": "new"}'))

    with serve(behaviour) as server:
        strict = SafeHttp(server.url, what="t", limits=QUICK)
        with pytest.raises(HttpError, match="HTTP 301, a redirect to '/new'; redirects are not followed"):
            strict.get(f"{server.url}/old")
        lenient = SafeHttp(server.url, what="t", limits=Limits(redirects="same-origin"))
        assert lenient.get(f"{server.url}/old").url == f"{server.url}/new"
        with pytest.raises(HttpError, match="would turn the POST into a GET"):
            lenient.post_json(f"{server.url}/old", {"a": 1})
        with pytest.raises(HttpError, match="more than 5 redirects"):
            lenient.get(f"{server.url}/loop")


def test_transient_statuses_are_retried_then_reported() -> None:
    calls = [0]

    def flaky(request: Request, conn: socket.socket) -> None:
        calls[0] += 1
        conn.sendall(reply("503 Busy", body=b"busy") if calls[0] % 2 else reply(body=b"{}"))

    with serve(flaky) as server:
        client = SafeHttp(server.url, what="t", limits=QUICK)
        assert client.get(f"{server.url}/x").body == b"{}" and client.sent["GET"] == 2
    with serve(send(reply("503 Busy", body=b"busy"))) as server:
        client = SafeHttp(server.url, what="t", limits=QUICK)
        with pytest.raises(HttpError, match=r"unreachable after 3 attempts \(HTTP 503\)"):
            client.get(f"{server.url}/x")
        assert len(server.requests) == 3


def test_a_request_off_the_origin_is_refused_before_connecting() -> None:
    with serve(send(reply(body=b"{}"))) as server, serve(send(reply(body=b"{}"))) as other:
        client = SafeHttp(server.url, what="t", limits=QUICK)
        with pytest.raises(HttpError, match="is not on"):
            client.get(f"{other.url}/x")
        assert other.connections == 0


@pytest.mark.parametrize("url", ["http://[::1]:8080/v2/models/m", "https://example.org/a%20b/c",
                                 "HTTP://Example.org:1/x", "http://127.0.0.1:65535"])
def test_well_formed_urls_are_accepted(url: str) -> None:
    assert check_url(url, "t") == url


def test_json_limits_at_their_boundaries() -> None:
    assert parse_json(b"[" * MAX_JSON_DEPTH + b"]" * MAX_JSON_DEPTH, "t") is not None
    with pytest.raises(HttpError, match="nested more than 32"):
        parse_json(b"[" * (MAX_JSON_DEPTH + 1) + b"]" * (MAX_JSON_DEPTH + 1), "t")
    assert parse_json(b"[" + b"1" * MAX_NUMBER_CHARS + b"]", "t") == [int("1" * MAX_NUMBER_CHARS)]
    with pytest.raises(HttpError, match="a number with 41 characters"):
        parse_json(b"[" + b"1" * (MAX_NUMBER_CHARS + 1) + b"]", "t")
    assert parse_json(b'{"p": [0.25, 1e-3, -2]}', "t") == {"p": [0.25, 1e-3, -2]}
    for constant in (b"NaN", b"Infinity", b"-Infinity"):
        with pytest.raises(HttpError, match="non-standard constant"):
            parse_json(b"[" + constant + b"]", "t")


def test_a_failing_sink_is_reported_as_itself_not_as_the_server() -> None:
    """A full disk while downloading is the disk's error (OSError), not 'the answer broke off'."""

    def full(chunk: bytes) -> None:
        raise OSError(28, "No space left on device")

    with serve(send(reply(body=b"x" * 1000))) as server:
        client = SafeHttp(server.url, what="t", limits=QUICK)
        with pytest.raises(OSError, match="No space left on device"):
            client.request("GET", f"{server.url}/x", sink=full)
