"""breaching, the best gradient-inversion peer, on our target gradients: the suite's side of ``breaching_runner.py``.

breaching runs in its own virtual environment through its own API (never re-implemented, never a dependency):
this module writes a job folder (the network, ∇*, the labels, iterations) with safetensors, runs
``breaching_runner.py`` with that environment's python, and reads the reconstructions back. Which python:
``--breaching-python`` of the suite, else ``$UNLEARNLEAK_BREACHING_PYTHON``, else ``/work/brv/bin/python`` when it
exists. Set it up once (pip takes torch and torchvision from the index):

    python3.11 -m venv /work/brv && /work/brv/bin/pip install breaching==0.1.2 safetensors
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from unlearnleak.attacks.feature_recovery import TargetGradient
from unlearnleak.experiments.executors.local import die_with_parent
from unlearnleak.models import ModelSpec, Normalized

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"
DEFAULT_PYTHON = Path("/work/brv/bin/python")
ATTACKS = ("invertinggradients", "modern")  # breaching's attack configs, as the issue measured them
INSTALL = "python3.11 -m venv /work/brv && /work/brv/bin/pip install breaching==0.1.2 safetensors"


def find_python(option: str | None) -> tuple[Path | None, str]:
    """The breaching environment's python, and a line saying where it came from or why there is none."""
    candidates = [(option, "--breaching-python"), (os.environ.get("UNLEARNLEAK_BREACHING_PYTHON"),
                                                   "$UNLEARNLEAK_BREACHING_PYTHON"), (str(DEFAULT_PYTHON), "default")]
    for value, source in candidates:
        if not value:
            continue
        path = Path(value)
        if path.is_file() and os.access(path, os.X_OK):
            probe = subprocess.run([str(path), "-c", "import breaching, safetensors"], capture_output=True, text=True,
                                   env={**os.environ, "PYTHONWARNINGS": "ignore"}, timeout=300)
            if probe.returncode == 0:
                return path, f"breaching from {path} ({source})"
            last = probe.stderr.strip().splitlines()[-1:] or ["?"]
            return None, f"breaching rows skipped: {path} ({source}) cannot import breaching/safetensors ({last[0]})"
        if source != "default":
            return None, f"breaching rows skipped: {path} ({source}) is not an executable python"
    return None, f"breaching rows skipped: no breaching environment (install: {INSTALL}; or --breaching-python)"


@dataclass(frozen=True)
class PeerResult:
    """One breaching attack's reconstruction (k, C, H, W) in [0, 1] and its cost."""

    x: torch.Tensor
    seconds: float
    iterations: int
    sec_per_iter: float


def run_breaching(python: Path, model: torch.nn.Module, spec: ModelSpec, target: TargetGradient,
                  labels: torch.Tensor, *, iterations: int, seed: int, threads: int = 1,
                  attacks: tuple[str, ...] = ATTACKS, model_modules: tuple[str, ...] = ("suite_models",),
                  timeout: float | None = None, init: torch.Tensor | None = None, device: str = "cpu"
                  ) -> tuple[dict[str, PeerResult], dict[str, Any]]:
    """Run breaching's ``attacks`` on ∇* of ``model`` (a ``Normalized`` network; breaching gets the network
    inside, which takes normalised inputs, and the normalisation as metadata)."""
    if not isinstance(model, Normalized):
        raise TypeError("breaching needs the model's input normalisation: pass a models.Normalized network")
    net = model.net
    grads = dict(zip(target.names, target.tensors, strict=True))
    missing = [n for n, _ in net.named_parameters() if f"net.{n}" not in grads]
    if missing:
        raise ValueError(f"∇* lacks parameters breaching would match: {missing[:3]}")
    tensors = {f"state.{k}": v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    tensors.update({f"gradient.{i}": grads[f"net.{n}"].detach().float().cpu().contiguous()
                    for i, (n, _) in enumerate(net.named_parameters())})
    tensors["labels"] = labels.detach().long().cpu().contiguous()
    if init is not None:
        tensors["init"] = init.detach().float().cpu().contiguous()
    job = {"model": {"name": spec.name, "input_shape": list(spec.input_shape), "num_classes": spec.num_classes,
                     "mean": list(spec.mean), "std": list(spec.std), "kwargs": dict(spec.kwargs)},
           "model_modules": list(model_modules), "attacks": list(attacks), "iterations": iterations,
           "restarts": 1, "seed": seed, "threads": threads, "device": device}
    with tempfile.TemporaryDirectory(prefix="breaching-job-") as folder:
        job_dir = Path(folder)
        save_file(tensors, str(job_dir / "job.safetensors"))
        (job_dir / "job.json").write_text(json.dumps(job))
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), str(HERE)]), "PYTHONWARNINGS": "ignore",
               "OMP_NUM_THREADS": str(threads)}
        done = subprocess.run([str(python), str(HERE / "breaching_runner.py"), str(job_dir)], capture_output=True,
                              text=True, env=env, timeout=timeout,
                              preexec_fn=functools.partial(die_with_parent, os.getpid()))  # dies with its caller
        if done.returncode != 0:
            raise RuntimeError(f"breaching failed (exit {done.returncode}): {done.stderr.strip()[-2000:]}")
        report = json.loads((job_dir / "result.json").read_text())
        out = {}
        for attack, info in report["attacks"].items():
            x = load_file(str(job_dir / f"{attack}.safetensors"))["x"]
            out[attack] = PeerResult(x=x, seconds=float(info["seconds"]), iterations=int(info["iterations"]),
                                     sec_per_iter=float(info["sec_per_iter"]))
    return out, {"versions": report["versions"],
                 "configs": {a: report["attacks"][a]["config"] for a in report["attacks"]}}
