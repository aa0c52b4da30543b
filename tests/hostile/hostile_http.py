"""Hostile HTTP servers on loopback (127.0.0.1 only), each scripted per request, each logging what it received."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field


@dataclass
class Request:
    """What a client sent: the request line, the headers and the body."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes


Behaviour = Callable[[Request, socket.socket], None]


@dataclass
class Server:
    """A loopback server: its base URL and every request it received."""

    url: str
    port: int
    requests: list[Request] = field(default_factory=list)
    connections: int = 0


def _read_request(conn: socket.socket) -> Request | None:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return None
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    method, path, _ = [*lines[0].split(" ", 2), "", ""][:3]
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    want = int(headers.get("content-length", "0") or 0)
    while len(body) < want:
        chunk = conn.recv(65536)
        if not chunk:
            break
        body += chunk
    return Request(method, path, headers, body)


@contextmanager
def serve(behaviour: Behaviour) -> Iterator[Server]:
    """Run ``behaviour(request, connection)`` for each request on a fresh loopback port (keep-alive honoured)."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    listener.settimeout(0.1)
    port = listener.getsockname()[1]
    server = Server(f"http://127.0.0.1:{port}", port)
    stop = threading.Event()
    threads: list[threading.Thread] = []

    def handle(conn: socket.socket) -> None:
        with conn:
            conn.settimeout(30)
            try:
                while not stop.is_set():
                    request = _read_request(conn)
                    if request is None:
                        return
                    server.requests.append(request)
                    behaviour(request, conn)
            except OSError:
                return

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            server.connections += 1
            thread = threading.Thread(target=handle, args=(conn,), daemon=True)
            thread.start()
            threads.append(thread)

    acceptor = threading.Thread(target=accept, daemon=True)
    acceptor.start()
    try:
        yield server
    finally:
        stop.set()
        acceptor.join()
        listener.close()


def reply(status: str = "200 OK", body: bytes = b"", headers: dict[str, str] | None = None,
          length: int | None = None) -> bytes:
    """A raw HTTP/1.1 answer (``length`` overrides the Content-Length header; -1 leaves it out)."""
    head = [f"HTTP/1.1 {status}"]
    fields = {"Content-Type": "application/json", **(headers or {})}
    if length != -1:
        fields["Content-Length"] = str(len(body) if length is None else length)
    head += [f"{k}: {v}" for k, v in fields.items()]
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body


def drip(conn: socket.socket, data: bytes, every: float, stop_after: float = 30.0) -> None:
    """Send ``data`` one byte at a time, ``every`` seconds apart (until the client hangs up)."""
    started = time.monotonic()
    for i in range(len(data)):
        if time.monotonic() - started > stop_after:
            return
        conn.sendall(data[i:i + 1])
        time.sleep(every)


METADATA = b'{"name": "m", "platform": "test", "inputs": [], "outputs": []}'


def v2_answer(request: Request, num_classes: int) -> bytes:
    """A correct V2 answer: uniform probabilities of shape [n, K] for the rows sent."""
    import json

    shape = json.loads(request.body)["inputs"][0]["shape"]
    n = int(shape[0])
    data = [1.0 / num_classes] * (n * num_classes)
    return json.dumps({"model_name": "m", "outputs": [{"name": "p", "shape": [n, num_classes], "datatype": "FP64",
                                                       "data": data}]}).encode()


def v2(infer: Behaviour | None = None, metadata: Behaviour | None = None, num_classes: int = 3) -> Behaviour:
    """A V2 server: ``metadata`` answers GETs, ``infer`` POSTs (each defaults to a correct answer)."""

    def behaviour(request: Request, conn: socket.socket) -> None:
        if request.method == "GET":
            if metadata is None:
                conn.sendall(reply(body=METADATA))
            else:
                metadata(request, conn)
        elif infer is None:
            conn.sendall(reply(body=v2_answer(request, num_classes)))
        else:
            infer(request, conn)

    return behaviour


def send(raw: bytes, close: bool = False) -> Behaviour:
    """Answer every request with the bytes ``raw`` (and hang up with ``close``)."""

    def behaviour(request: Request, conn: socket.socket) -> None:
        conn.sendall(raw)
        if close:
            conn.shutdown(socket.SHUT_RDWR)

    return behaviour


def stream_forever(headers: bytes, every: float = 0.0, chunk: bytes = b"x" * 65536,
                   stop_after: float = 30.0) -> Behaviour:
    """Send ``headers`` then ``chunk`` after ``chunk`` (``every`` seconds apart) until the client hangs up."""

    def behaviour(request: Request, conn: socket.socket) -> None:
        conn.sendall(headers)
        started = time.monotonic()
        while time.monotonic() - started < stop_after:
            conn.sendall(chunk)
            if every:
                time.sleep(every)

    return behaviour
