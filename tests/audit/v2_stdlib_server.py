"""A minimal Open Inference Protocol (V2 REST) server on http.server, serving a pair folder's two models.

Run as ``python v2_stdlib_server.py PAIR_DIR PORT LOG``; every infer request appends ``name:rows`` to LOG.
Special model names for error tests: ``broken-json`` (malformed JSON), ``wrong-shape`` (one class too few),
``flaky`` (θ, but every other infer request answers HTTP 503 first).
"""

from __future__ import annotations

import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import torch

from unlearnleak.pair import ModelPair


def main() -> None:
    torch.set_num_threads(1)
    pair = ModelPair.load(sys.argv[1])
    port, log = int(sys.argv[2]), Path(sys.argv[3])
    models = {"original": pair.model("original"), "unlearned": pair.model("unlearned")}
    flaky_calls = [0]

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def _send(self, code: int, body: bytes) -> None:
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            parts = self.path.strip("/").split("/")
            if parts[:2] == ["v2", "health"]:
                self._send(200, b"{}")
            elif len(parts) == 3 and parts[:2] == ["v2", "models"] and (parts[2] in models or "-" in parts[2]):
                self._send(200, json.dumps({"name": parts[2], "platform": "stdlib"}).encode())
            else:
                self._send(404, b'{"error": "no such model"}')

        def do_POST(self) -> None:
            parts = self.path.strip("/").split("/")
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            name = parts[2]
            inp = body["inputs"][0]
            x = torch.tensor(inp["data"], dtype=torch.float32).reshape(inp["shape"])
            with log.open("a") as f:
                f.write(f"{name}:{x.shape[0]}\n")
            if name == "flaky":
                flaky_calls[0] += 1
                if flaky_calls[0] % 2 == 1:
                    self._send(503, b'{"error": "busy"}')
                    return
            if name == "broken-json":
                self._send(200, b'{"outputs": [')
                return
            model = models["original" if name in ("wrong-shape", "flaky") else name]
            with torch.no_grad():
                p = torch.softmax(model(x).double(), dim=1)
            if name == "wrong-shape":
                p = p[:, :-1]
            out = {"model_name": name, "outputs": [{"name": "probabilities", "shape": list(p.shape),
                                                    "datatype": "FP64", "data": p.reshape(-1).tolist()}]}
            self._send(200, json.dumps(out).encode())

    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()


if __name__ == "__main__":
    main()
