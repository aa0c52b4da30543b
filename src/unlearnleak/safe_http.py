"""One hardened HTTP client for every URL a user hands us: audit endpoints and dataset mirrors.

An auditing tool is pointed at other people's servers, so everything a server could do to us is bounded:
http(s) only; no redirects (or, by an explicit option, redirects within the same origin); a size cap on
every response body, checked against ``Content-Length`` before reading and while reading; compressed bodies
refused (no decompression bombs); a deadline on the whole request — connect, headers, body, retries and
backoff — enforced by a watchdog that shuts the socket, so a server dripping one byte every few seconds
cannot hold us; an optional per-command :class:`Deadline` shared by all requests; an optional minimum
transfer rate for long downloads; JSON replies parsed with limits on nesting and number length. Every
failure is one :class:`HttpError` whose message names the URL and what went wrong.

urllib3 does the protocol work (connection pooling, chunked bodies, strict ``Content-Length``, URL parsing)
and :class:`urllib3.util.Retry` the retry policy (which failures and statuses are transient, exponential
backoff, ``Retry-After``); this module adds what it lacks: the overall deadline, the size caps and the
redirect and URL policy.
"""

from __future__ import annotations

import contextlib
import http.client
import ipaddress
import json
import math
import re
import socket
import threading
import time
import urllib.parse
import weakref
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import urllib3
from urllib3.exceptions import HTTPError as Urllib3Error
from urllib3.exceptions import LocationParseError, MaxRetryError
from urllib3.util import Retry, Timeout, parse_url

from unlearnleak.errors import ConfigError, UnlearnleakError

SCHEMES = ("http", "https")
DEFAULT_PORTS = {"http": 80, "https": 443}
TRANSIENT_STATUS = frozenset({429, 502, 503, 504})
REDIRECT_STATUS = frozenset({301, 302, 303, 307, 308})
MAX_REDIRECTS = 5
MAX_URL_CHARS = 2048
MAX_JSON_DEPTH = 32
MAX_NUMBER_CHARS = 40  # the longest float repr is 24 characters; 400-digit numbers are refused
CHUNK = 1 << 16
DETAIL_BYTES = 2048  # what is read of an error page, to quote its start
Redirects = Literal["none", "same-origin"]
REDIRECT_POLICIES: tuple[str, ...] = ("none", "same-origin")


class HttpError(UnlearnleakError):
    """A request failed; ``kind`` says how (the caller adds the hint for its own options).

    Kinds: ``url`` (malformed or refused URL), ``unreachable`` (transient failures until retries ran out),
    ``status`` (an HTTP error status), ``redirect`` (a redirect that the policy refuses), ``timeout`` (the
    request's deadline), ``deadline`` (the command's deadline), ``slow`` (below the minimum rate),
    ``too-large`` (over the size cap), ``malformed`` (not HTTP, truncated, compressed, or bad JSON).
    """

    def __init__(self, message: str, kind: str, status: int | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.status = status


class _Expired(Exception):
    """Raised inside a request when its watchdog has fired (deliberately not an OSError: urllib3 passes it on)."""


class _SinkFailed(Exception):
    """The caller's sink failed (e.g. a full disk): its own error is re-raised, not blamed on the server."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


# ----- URLs -----------------------------------------------------------------------------------------------------


def check_url(url: str, what: str, *, allow_query: bool = False) -> str:
    """``url`` if it is a well-formed http(s) URL with a host; else one :class:`HttpError` (kind ``url``).

    Refused before any connection: other schemes, whitespace, control characters (CR/LF injection) and
    non-ASCII characters anywhere (percent-encode them), credentials (they would be written into reports),
    fragments, a query unless ``allow_query``, a non-numeric or out-of-range port, a malformed IPv6 host.
    """

    shown = re.sub(r"//[^/]*@", "//***@", url[:200]) if isinstance(url, str) else repr(url)  # no passwords

    def bad(why: str) -> HttpError:
        return HttpError(f"{what} {shown!r} is not a URL unlearnleak can use: {why}", "url")

    if not isinstance(url, str) or not url:
        raise bad("it is empty")
    if len(url) > MAX_URL_CHARS:
        raise bad(f"it is {len(url)} characters long (at most {MAX_URL_CHARS})")
    for i, ch in enumerate(url):
        if ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F:
            raise bad(f"it contains {'a space' if ch == ' ' else 'a control character'} ({ch!r}) at position {i}; "
                      "percent-encode it")
        if ord(ch) > 0x7E:
            raise bad(f"it contains the non-ASCII character {ch!r} at position {i}; percent-encode it "
                      "(or give the host in its punycode form)")
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    if scheme not in SCHEMES or not url[len(scheme):].startswith("://"):
        raise bad(f"only http:// and https:// are supported, got {scheme + '://' if scheme else 'no scheme'}")
    try:
        parts = parse_url(url)
    except (LocationParseError, ValueError) as exc:
        raise bad(f"{exc}; check the host and port (a port is a number from 1 to 65535; an IPv6 host is "
                  "written in brackets, e.g. http://[::1]:8080)") from None
    if not parts.host:
        raise bad("it has no host")
    if parts.auth:
        raise bad("credentials in URLs are not supported (they would be written into the report)")
    if parts.fragment is not None:
        raise bad("it has a #fragment")
    if parts.query is not None and not allow_query:
        raise bad("it has a ?query; give the base URL")
    if parts.port is not None and not 1 <= parts.port <= 65535:
        raise bad(f"port {parts.port} is out of range")
    host = parts.host
    if host.startswith("["):
        try:
            ipaddress.IPv6Address(host[1:-1].split("%", 1)[0])
        except ValueError:
            raise bad(f"{host} is not an IPv6 address") from None
    return url


def origin(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of a checked URL, with the scheme's default port filled in."""
    parts = parse_url(url)
    scheme = (parts.scheme or "").lower()
    return scheme, (parts.host or "").lower(), parts.port or DEFAULT_PORTS[scheme]


def join_url(base: str, *segments: str) -> str:
    """``base`` with ``segments`` appended as path components (each percent-encoded)."""
    return "/".join([base.rstrip("/"), *(urllib.parse.quote(s, safe="") for s in segments)])


# ----- JSON -----------------------------------------------------------------------------------------------------


def parse_json(raw: bytes, what: str) -> Any:
    """``raw`` as JSON, refusing NaN/Infinity, numbers over 40 characters and nesting deeper than 32 levels."""

    def number(text: str) -> float | int:
        if len(text) > MAX_NUMBER_CHARS:
            raise ValueError(f"a number with {len(text)} characters")
        return float(text) if any(c in text for c in ".eE") else int(text)

    def constant(text: str) -> Any:
        raise ValueError(f"the non-standard constant {text}")

    try:
        value = json.loads(raw, parse_float=number, parse_int=number, parse_constant=constant)
    except RecursionError:
        raise HttpError(f"{what} answered JSON nested too deeply", "malformed") from None
    except (ValueError, UnicodeDecodeError) as exc:  # json.JSONDecodeError is a ValueError
        raise HttpError(f"{what} answered malformed JSON ({str(exc)[:120]}; it starts {raw[:60]!r})",
                        "malformed") from None
    if _depth(value) > MAX_JSON_DEPTH:
        raise HttpError(f"{what} answered JSON nested more than {MAX_JSON_DEPTH} levels deep", "malformed")
    return value


def _depth(value: Any) -> int:
    """Nesting depth of parsed JSON, computed without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, level)
            if level > MAX_JSON_DEPTH:
                return level
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, level + 1) for child in children if isinstance(child, dict | list))
    return deepest


# ----- deadlines ------------------------------------------------------------------------------------------------


class Deadline:
    """A wall-clock limit shared by every request of one command (``seconds=None``: none).

    ``what`` names it in messages, e.g. ``"--endpoint-deadline 3600 s"``.
    """

    def __init__(self, seconds: float | None, what: str) -> None:
        if seconds is not None and not (math.isfinite(seconds) and seconds > 0):
            raise ConfigError(f"{what}: a deadline must be a finite number of seconds > 0, got {seconds}")
        self.seconds = seconds
        self.what = what
        self.end = math.inf if seconds is None else time.monotonic() + seconds

    def remaining(self) -> float:
        """Seconds left (inf without a deadline)."""
        return self.end - time.monotonic()


@dataclass(frozen=True)
class Limits:
    """What one request may cost.

    Attributes:
        connect_timeout: seconds to open a connection.
        read_timeout: seconds of silence tolerated on an open connection.
        request_timeout: seconds for the whole request: connect, headers, body, retries and backoff.
        max_bytes: the largest response body accepted.
        retries: transient failures (connection errors, HTTP 429/502/503/504) retried before giving up.
        backoff: seconds before the first retry (urllib3's exponential backoff, at most 10 s a wait).
        redirects: ``"none"``, or ``"same-origin"`` (same scheme, host and port; at most 5).
        min_rate: (bytes, seconds): fail when fewer bytes arrive in any such window (long downloads).
    """

    connect_timeout: float = 10.0
    read_timeout: float = 30.0
    request_timeout: float = 60.0
    max_bytes: int = 1 << 20
    retries: int = 3
    backoff: float = 0.2
    redirects: Redirects = "none"
    min_rate: tuple[int, float] | None = None

    def __post_init__(self) -> None:
        seconds = (self.connect_timeout, self.read_timeout, self.request_timeout)
        if not all(math.isfinite(s) and s > 0 for s in seconds):
            raise ConfigError(f"HTTP timeouts must be finite numbers of seconds > 0, got {seconds}")
        if self.max_bytes < 1 or self.retries < 0 or not (math.isfinite(self.backoff) and self.backoff >= 0):
            raise ConfigError(f"invalid HTTP limits: max_bytes={self.max_bytes}, retries={self.retries}, "
                              f"backoff={self.backoff}")
        if self.redirects not in REDIRECT_POLICIES:
            raise ConfigError(f"redirects must be one of {', '.join(REDIRECT_POLICIES)}, got {self.redirects!r}")


class _Guard:
    """The sockets of one client, and the watchdog that shuts them when a request runs out of time."""

    def __init__(self) -> None:
        self._sockets: weakref.WeakSet[socket.socket] = weakref.WeakSet()
        self._lock = threading.Lock()
        self.fired: str | None = None  # "timeout", "deadline" or "slow" once the watchdog acted
        self.received = 0  # body bytes so far (for the minimum rate)

    def add(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.add(sock)
        if self.fired:  # the deadline passed while connecting
            self._shut(sock)

    def check(self) -> None:
        if self.fired:
            raise _Expired(self.fired)

    def fire(self, reason: str) -> None:
        self.fired = reason
        with self._lock:
            sockets = list(self._sockets)
        for sock in sockets:
            self._shut(sock)

    @staticmethod
    def _shut(sock: socket.socket) -> None:
        # The base class's shutdown works on TLS sockets too, and wakes a blocked recv in another thread.
        with contextlib.suppress(OSError):
            socket.socket.shutdown(sock, socket.SHUT_RDWR)

    @contextmanager
    def armed(self, end: float, reason: str, min_rate: tuple[int, float] | None) -> Iterator[None]:
        """Fire at ``end`` (monotonic) with ``reason``, or as ``"slow"`` when ``min_rate`` is not met."""
        self.fired, self.received = None, 0
        stop = threading.Event()

        def watch() -> None:
            mark_time, mark_bytes = time.monotonic(), 0
            while not stop.is_set():
                now = time.monotonic()
                if now >= end:
                    self.fire(reason)
                    return
                if min_rate is not None and now - mark_time >= min_rate[1]:
                    if self.received - mark_bytes < min_rate[0]:
                        self.fire("slow")
                        return
                    mark_time, mark_bytes = now, self.received
                step = end - now if min_rate is None else min(end - now, 0.25)
                stop.wait(max(step, 0.001))

        thread = threading.Thread(target=watch, name="unlearnleak-http-watchdog", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()


def _guarded(base: type, guard: _Guard) -> type:
    """A subclass of urllib3's connection class ``base`` that registers its socket with ``guard``."""

    class Guarded(base):
        def connect(self) -> None:
            guard.check()
            super().connect()
            guard.add(self.sock)

    Guarded.__name__ = f"Guarded{base.__name__}"
    return Guarded


# ----- the client -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Response:
    """A complete answer: status, headers and the body (empty when streamed to a sink)."""

    status: int
    headers: Mapping[str, str]
    body: bytes
    url: str


class SafeHttp:
    """Requests to ONE origin (scheme, host, port) under :class:`Limits` and an optional :class:`Deadline`.

    Args:
        base_url: the URL the user gave; every request must stay on its origin.
        what: how messages name it, e.g. ``"--original-endpoint"`` or ``"cifar10 mirror"``.
        limits: per-request limits (each call may lower ``max_bytes``).
        deadline: the command's deadline, shared with other clients.
        user_agent: the User-Agent header.

    Not thread-safe: one request at a time (the watchdog shuts this client's sockets).
    """

    def __init__(self, base_url: str, *, what: str, limits: Limits | None = None, deadline: Deadline | None = None,
                 user_agent: str = "unlearnleak") -> None:
        self.what = what
        self.url = check_url(base_url, what)
        self.limits = limits or Limits()
        self.deadline = deadline
        self.origin = origin(self.url)
        self.sent: Counter[str] = Counter()  # requests put on the wire, by method (retries included)
        self._guard = _Guard()
        self._headers = {"User-Agent": user_agent, "Accept-Encoding": "identity"}
        scheme, host, port = self.origin
        pool_cls = urllib3.HTTPSConnectionPool if scheme == "https" else urllib3.HTTPConnectionPool
        self._pool = pool_cls(host, port, maxsize=1, block=False, retries=False)
        self._pool.ConnectionCls = _guarded(self._pool.ConnectionCls, self._guard)

    def close(self) -> None:
        """Close the pooled connections."""
        self._pool.close()

    def get(self, url: str, *, max_bytes: int | None = None) -> Response:
        """GET ``url`` (on this client's origin) into memory."""
        return self.request("GET", url, max_bytes=max_bytes)

    def post_json(self, url: str, payload: Any, *, max_bytes: int | None = None) -> Response:
        """POST ``payload`` as JSON to ``url`` (on this client's origin)."""
        body = json.dumps(payload).encode()
        return self.request("POST", url, body=body, headers={"Content-Type": "application/json"},
                            max_bytes=max_bytes)

    def request(self, method: str, url: str, *, body: bytes | None = None, headers: Mapping[str, str] | None = None,
                max_bytes: int | None = None, sink: Callable[[bytes], None] | None = None,
                on_length: Callable[[int | None], None] | None = None) -> Response:
        """One exchange under the limits: retries, redirects and the body, all before the request's deadline.

        With ``sink``, the body is handed over chunk by chunk instead of kept (``on_length`` first receives the
        announced length); a failure after the first chunk is not retried, since the sink cannot rewind.
        """
        limit = self.limits.max_bytes if max_bytes is None else min(max_bytes, self.limits.max_bytes)
        check_url(url, self.what, allow_query=True)
        if origin(url) != self.origin:
            raise HttpError(f"{self.what}: {url} is not on {self.url}'s origin", "url")
        request_end = time.monotonic() + self.limits.request_timeout
        command_end = self.deadline.end if self.deadline is not None else math.inf
        reason = "timeout" if request_end <= command_end else "deadline"
        end = min(request_end, command_end)
        if end <= time.monotonic():
            raise self._expired(reason, url)
        with self._guard.armed(end, reason, self.limits.min_rate):
            try:
                return self._exchange(method, url, body, {**self._headers, **(headers or {})}, limit, sink,
                                      on_length, end)
            except _Expired as exc:
                raise self._expired(self._guard.fired or str(exc.args[0]), url) from None
            except _SinkFailed as exc:
                raise exc.error from None
            except (Urllib3Error, OSError, http.client.HTTPException, ValueError) as exc:
                if self._guard.fired:
                    raise self._expired(self._guard.fired, url) from None
                raise HttpError(f"{self.what} {url}: the answer broke off ({_reason(exc)})", "malformed") from None

    # -- internals --

    def _exchange(self, method: str, url: str, body: bytes | None, headers: dict[str, str], limit: int,
                  sink: Callable[[bytes], None] | None, on_length: Callable[[int | None], None] | None,
                  end: float) -> Response:
        retry = Retry(total=self.limits.retries, redirect=False, status_forcelist=TRANSIENT_STATUS,
                      allowed_methods=frozenset({"GET", "POST", "HEAD"}), backoff_factor=self.limits.backoff,
                      backoff_max=10.0, raise_on_status=False, respect_retry_after_header=True)
        redirects = 0
        last = ""
        while True:
            self._guard.check()
            remaining = max(end - time.monotonic(), 0.001)
            timeout = Timeout(connect=min(self.limits.connect_timeout, remaining),
                              read=min(self.limits.read_timeout, remaining))
            self.sent[method] += 1
            try:
                response = self._pool.urlopen(method, _path(url), body=body, headers=headers, retries=False,
                                              redirect=False, assert_same_host=False, timeout=timeout,
                                              preload_content=False, decode_content=False, release_conn=False)
            except _Expired:
                raise
            except (Urllib3Error, OSError, http.client.HTTPException) as exc:
                if self._guard.fired:
                    raise _Expired(self._guard.fired) from None
                if _not_http(exc):
                    raise HttpError(f"{self.what} {url} answered something that is not HTTP ({_reason(exc)})",
                                    "malformed") from None
                last = _reason(exc)
                retry = self._next_try(retry, method, url, last, error=exc)
                self._sleep(retry.get_backoff_time(), end)
                continue
            complete = False
            try:
                status = int(response.status)
                if status in TRANSIENT_STATUS and retry.is_retry(method, status, "Retry-After" in response.headers):
                    last = f"HTTP {status}"
                    retry = self._next_try(retry, method, url, last, response=response)
                    wait = retry.get_retry_after(response)
                    self._sleep(retry.get_backoff_time() if wait is None else wait, end)
                    continue
                if status in REDIRECT_STATUS or 300 <= status < 400:
                    url = self._redirect(method, url, status, response.headers.get("Location"), redirects)
                    redirects += 1
                    continue
                if status >= 400 or status < 200:
                    detail = _text(self._read_some(response, DETAIL_BYTES))
                    raise HttpError(f"{self.what} {url} answered HTTP {status}"
                                    f"{f' ({detail})' if detail else ''}", "status", status)
                length = _content_length(response, self.what, url, limit)
                if on_length is not None:
                    on_length(length)
                data = self._read_body(response, limit, length, sink, url)
                complete = True
                return Response(status, dict(response.headers), data, url)
            finally:
                if not complete:  # a connection left mid-answer is not reused
                    response.close()
                response.release_conn()

    def _next_try(self, retry: Retry, method: str, url: str, last: str, **kwargs: Any) -> Retry:
        try:
            return retry.increment(method, url, **kwargs)
        except MaxRetryError:
            attempts = self.limits.retries + 1
            raise HttpError(f"{self.what} {url} is unreachable after {attempts} attempts ({last})",
                            "unreachable") from None

    def _sleep(self, seconds: float, end: float) -> None:
        if time.monotonic() + seconds >= end:
            raise _Expired("deadline" if self.deadline is not None and end >= self.deadline.end else "timeout")
        time.sleep(seconds)

    def _redirect(self, method: str, url: str, status: int, location: str | None, count: int) -> str:
        shown = repr(location[:200]) if location is not None else "nowhere (no Location header)"
        if self.limits.redirects == "none":
            raise HttpError(f"{self.what} {url} answered HTTP {status}, a redirect to {shown}; redirects are not "
                            "followed: give the final URL", "redirect", status)
        if location is None:
            raise HttpError(f"{self.what} {url} answered HTTP {status} without a Location header", "redirect", status)
        if count >= MAX_REDIRECTS:
            raise HttpError(f"{self.what} {url}: more than {MAX_REDIRECTS} redirects", "redirect", status)
        if method != "GET" and status not in (307, 308):
            raise HttpError(f"{self.what} {url} answered HTTP {status}, which would turn the {method} into a GET; "
                            "give the final URL", "redirect", status)
        target = urllib.parse.urljoin(url, location)
        try:
            check_url(target, f"{self.what} redirect", allow_query=True)
        except HttpError as exc:
            raise HttpError(str(exc), "redirect", status) from None
        if origin(target) != self.origin:
            raise HttpError(f"{self.what} {url} redirects to {target[:200]!r}, another origin than {self.url}; "
                            "only same-origin redirects are followed", "redirect", status)
        return target

    def _read_some(self, response: Any, n: int) -> bytes:
        chunks, got = [], 0
        while got < n:
            chunk = response.read1(n - got)
            if not chunk:
                break
            chunks.append(chunk)
            got += len(chunk)
        self._guard.check()
        return b"".join(chunks)

    def _read_body(self, response: Any, limit: int, length: int | None, sink: Callable[[bytes], None] | None,
                   url: str) -> bytes:
        encoding = (response.headers.get("Content-Encoding") or "identity").strip().lower()
        if encoding != "identity":
            raise HttpError(f"{self.what} {url} answered a compressed body (Content-Encoding: {encoding[:40]}) "
                            "although none was asked for; refused", "malformed")
        chunks: list[bytes] = []
        total = 0
        while True:
            self._guard.check()
            chunk = response.read1(min(CHUNK, limit + 1 - total))
            if not chunk:
                break
            total += len(chunk)
            self._guard.received = total
            if total > limit:
                raise HttpError(f"{self.what} {url} answered more than {_size(limit)}, the most accepted here; "
                                "refused", "too-large")
            if sink is not None:
                try:
                    sink(chunk)
                except Exception as exc:
                    raise _SinkFailed(exc) from exc
            else:
                chunks.append(chunk)
        self._guard.check()  # a socket shut by the watchdog reads as the end of the body
        if length is not None and total != length:
            raise HttpError(f"{self.what} {url}: the answer broke off after {total} of the {length} bytes "
                            "it announced", "malformed")
        return b"".join(chunks)

    def _expired(self, reason: str, url: str) -> HttpError:
        if reason == "deadline" and self.deadline is not None:
            return HttpError(f"{self.what} {url}: the deadline ({self.deadline.what}) passed before the answer was "
                             "complete", "deadline")
        if reason == "slow" and self.limits.min_rate is not None:
            size, seconds = self.limits.min_rate
            return HttpError(f"{self.what} {url} sent less than {_size(size)} in {seconds:g} s; the transfer is too "
                             "slow and was stopped", "slow")
        return HttpError(f"{self.what} {url} gave no complete answer within {self.limits.request_timeout:g} s",
                         "timeout")


def _path(url: str) -> str:
    parts = parse_url(url)
    return parts.request_uri


def _content_length(response: Any, what: str, url: str, limit: int) -> int | None:
    """The announced body length (None if not given); refused before reading when over ``limit``."""
    raw = response.headers.get("Content-Length")
    if raw is None:
        return None
    text = raw.strip()
    if not text.isdigit() or len(text) > 19:
        raise HttpError(f"{what} {url} answered a malformed Content-Length {raw[:40]!r}", "malformed")
    length = int(text)
    if length > limit:
        raise HttpError(f"{what} {url} announced {_size(length)}, more than the {_size(limit)} accepted here; "
                        "refused before reading it", "too-large")
    return length


def _inner(exc: BaseException) -> BaseException:
    """The failure urllib3 wrapped (``reason``, or the second argument of a ProtocolError)."""
    inner: BaseException = exc
    for _ in range(4):
        nested = getattr(inner, "reason", None)
        if isinstance(nested, BaseException):
            inner = nested
            continue
        args: tuple[Any, ...] = tuple(getattr(inner, "args", ()))
        if len(args) >= 2 and isinstance(args[1], BaseException):
            inner = args[1]
            continue
        break
    return inner


def _not_http(exc: BaseException) -> bool:
    """Whether the server answered, but not in HTTP (a bad status line, header lines too long or too many)."""
    inner = _inner(exc)
    return isinstance(inner, http.client.HTTPException) and not isinstance(
        inner, http.client.RemoteDisconnected | http.client.IncompleteRead)


def _reason(exc: BaseException) -> str:
    """A short description of a transport failure (urllib3 wraps the interesting one)."""
    inner = _inner(exc)
    text = str(inner).strip().splitlines()[0] if str(inner).strip() else type(inner).__name__
    text = text.split("Failed to establish a new connection: ", 1)[-1]  # drop urllib3's connection repr
    if isinstance(inner, http.client.BadStatusLine | http.client.LineTooLong):
        return f"not an HTTP answer: {type(inner).__name__} {text[:80]}"
    return f"{type(inner).__name__}: {text[:160]}"


def _text(raw: bytes) -> str:
    text = raw.decode("utf-8", "replace").strip()
    return " ".join(text.split())[:200]


def _size(n: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n} bytes"
