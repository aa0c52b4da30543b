"""A user's own pair: a tiny CNN defined in a file the test writes, trained and unlearned by plain PyTorch."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch.nn import functional as F

from extras import require_integration

USER_MODEL = '''
import torch
from torch import nn


class TinyCNN(nn.Module):
    def __init__(self, num_classes: int = 10, width: int = 4):
        super().__init__()
        self.conv = nn.Conv2d(3, width, 3, padding=1)
        self.fc = nn.Linear(width * 32 * 32, num_classes)

    def forward(self, x):
        return self.fc(torch.flatten(torch.sigmoid(self.conv(x)), 1))
'''


@dataclass(frozen=True)
class UserPair:
    """Files of a user's pair and what the test knows about the deletion."""

    folder: Path
    model_def: str
    original: Path
    unlearned: Path
    forget_x: torch.Tensor  # (1, 3, 32, 32) in [0, 1]
    forget_y: int
    truth: Path  # safetensors with images + labels


@pytest.fixture(scope="session")
def user_pair(tmp_path_factory: pytest.TempPathFactory) -> UserPair:
    """θ fitted to 16 random-texture images with plain SGD; θ_u by one gradient-ascent step on one of them."""
    folder = tmp_path_factory.mktemp("user")
    code = folder / "my_model.py"
    code.write_text(USER_MODEL)
    spec = importlib.util.spec_from_file_location("user_model_for_test", code)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    torch.manual_seed(0)
    net = module.TinyCNN(num_classes=10, width=4)
    g = torch.Generator().manual_seed(1)
    x = F.interpolate(torch.rand(16, 3, 16, 16, generator=g), size=32, mode="bilinear", align_corners=False)
    y = torch.arange(16) % 10
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    for _ in range(20):
        opt.zero_grad()
        F.cross_entropy(net(x), y).backward()
        opt.step()
    original = {k: v.detach().clone() for k, v in net.state_dict().items()}
    forget = 5
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    opt.zero_grad()
    (-F.cross_entropy(net(x[forget:forget + 1]), y[forget:forget + 1])).backward()  # gradient ascent
    opt.step()
    unlearned = {k: v.detach().clone() for k, v in net.state_dict().items()}
    torch.save(original, folder / "before.pt")  # a plain torch state dict, bare network (no wrapper)
    save_file(unlearned, str(folder / "after.safetensors"))
    save_file({"images": x[forget:forget + 1].contiguous(), "labels": y[forget:forget + 1].contiguous()},
              str(folder / "deleted.safetensors"))
    return UserPair(folder, f"{code}:TinyCNN", folder / "before.pt", folder / "after.safetensors",
                    x[forget:forget + 1], int(y[forget]), folder / "deleted.safetensors")


@pytest.fixture
def white_box_args() -> Callable[..., list[str]]:
    """Builds the `audit` command line for the user's files."""
    return _white_box_args


def _white_box_args(p: UserPair, out: Path, *extra: str) -> list[str]:
    return ["audit", "--model-def", p.model_def, "--model-kwargs", '{"width": 4}', "--original", str(p.original),
            "--unlearned", str(p.unlearned), "--input-shape", "3,32,32", "--num-classes", "10",
            "--out", str(out), *extra]


@dataclass(frozen=True)
class Served:
    """Two V2 endpoints serving θ and θ_u, and the request log the server keeps (rows per infer call)."""

    original: str
    unlearned: str
    log: Path

    def logged_rows(self, name: str) -> list[int]:
        """Rows of each infer request the server answered for model ``name``."""
        lines = self.log.read_text().split() if self.log.is_file() else []
        return [int(r) for n, r in (line.split(":") for line in lines) if n == name]


@pytest.fixture(scope="session")
def blackbox_pair_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 10-class MLP on 3×8×8 images whose unlearning lowered class 3 (a pair folder both servers load)."""
    from unlearnleak.models import ModelSpec, build_model
    from unlearnleak.pair import ModelPair

    spec = ModelSpec("mlp", (3, 8, 8), 10, (0.5,), (0.25,), {"hidden": [16]})
    torch.manual_seed(0)
    model = build_model(spec)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(3.0)
    original = {k: v.clone() for k, v in model.state_dict().items()}
    unlearned = {k: v.clone() for k, v in original.items()}
    bias = [k for k in unlearned if k.endswith("bias")][-1]
    unlearned[bias][3] -= 3.0
    return ModelPair(spec, original, unlearned).save(tmp_path_factory.mktemp("served") / "pair")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_ready(url: str, proc: subprocess.Popen[bytes], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.3)
    raise RuntimeError(f"the server did not become ready within {seconds} s")


@pytest.fixture(scope="session", params=["stdlib", "mlserver"])
def served(request: pytest.FixtureRequest, blackbox_pair_dir: Path,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """θ and θ_u behind V2 endpoints on loopback: a stdlib server, and a real MLServer with our runtime."""
    here = Path(__file__).parent
    folder = tmp_path_factory.mktemp(f"server-{request.param}")
    log = folder / "requests.log"
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(here)}
    if request.param == "stdlib":
        cmd = [sys.executable, str(here / "v2_stdlib_server.py"), str(blackbox_pair_dir), str(port), str(log)]
        wait = 60.0
    else:
        mlserver = Path(sys.executable).parent / "mlserver"
        require_integration("mlserver", "the black-box audit against a real V2 server")
        if not mlserver.is_file():
            pytest.fail(f"mlserver is importable but its command {mlserver} is missing; reinstall the "
                        "`integration` extra")
        for which in ("original", "unlearned"):
            (folder / which).mkdir()
            (folder / which / "model-settings.json").write_text(json.dumps({
                "name": which, "implementation": "mlserver_runtime.PairRuntime",
                "parameters": {"uri": str(blackbox_pair_dir), "extra": {"which": which, "log": str(log)}}}))
        (folder / "settings.json").write_text(json.dumps({
            "http_port": port, "grpc_port": _free_port(), "metrics_port": _free_port(), "parallel_workers": 0,
            "host": "127.0.0.1", "metrics_endpoint": None}))
        cmd = [str(mlserver), "start", str(folder)]
        wait = 120.0
    proc = subprocess.Popen(cmd, env=env, cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_ready(f"http://127.0.0.1:{port}/v2/models/unlearned", proc, wait)
        yield Served(f"http://127.0.0.1:{port}/v2/models/original",
                     f"http://127.0.0.1:{port}/v2/models/unlearned", log)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
