"""Stand-in for your model server, for the README's black-box audit: ``python examples/serve_v2.py FILES PORT``.

Serves θ (FILES/before.pt) and θ_u (FILES/after.safetensors), both `Net` from examples/my_model.py, as two
Open Inference Protocol (V2 REST) models named ``before`` and ``after`` on http://127.0.0.1:PORT — the protocol
of KServe, Triton, MLServer and Seldon, which `unlearnleak audit --original-endpoint …` speaks. Standard library
and torch only; answers softmax probabilities. Stop it with Ctrl-C (or kill).
"""

from __future__ import annotations

import contextlib
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import torch
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from my_model import Net


def load(files: Path) -> dict[str, torch.nn.Module]:
    """The two served models, in eval mode (a state dict is read with weights_only: never unpickled)."""
    models = {}
    for name, state in (("before", torch.load(files / "before.pt", weights_only=True)),
                        ("after", load_file(str(files / "after.safetensors")))):
        net = Net()
        net.load_state_dict(state)
        models[name] = net.eval()
    return models


def main(files: Path, port: int) -> None:
    """Serve until stopped."""
    torch.set_num_threads(1)
    models = load(files)

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:  # quiet: one line per request would flood a log
            pass

        def _send(self, code: int, body: dict[str, object]) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:  # health and model metadata
            parts = self.path.strip("/").split("/")
            if parts[:2] == ["v2", "health"]:
                self._send(200, {"live": True})
            elif len(parts) == 3 and parts[:2] == ["v2", "models"] and parts[2] in models:
                self._send(200, {"name": parts[2], "platform": "pytorch"})
            else:
                self._send(404, {"error": f"no such model: {self.path}"})

        def do_POST(self) -> None:  # /v2/models/NAME/infer with one FP32 input tensor
            parts = self.path.strip("/").split("/")
            if len(parts) != 4 or parts[:2] != ["v2", "models"] or parts[2] not in models or parts[3] != "infer":
                self._send(404, {"error": f"no such endpoint: {self.path}"})
                return
            request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            tensor = request["inputs"][0]
            x = torch.tensor(tensor["data"], dtype=torch.float32).reshape(tensor["shape"])
            with torch.no_grad():
                p = torch.softmax(models[parts[2]](x).double(), dim=1)
            self._send(200, {"model_name": parts[2], "outputs": [
                {"name": "probabilities", "shape": list(p.shape), "datatype": "FP64", "data": p.flatten().tolist()}]})

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    print(f"serving {files}/before.pt and after.safetensors as http://127.0.0.1:{port}/v2/models/before and "
          f".../after (Ctrl-C stops)", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python examples/serve_v2.py FILES_FOLDER PORT")
    main(Path(sys.argv[1]), int(sys.argv[2]))
