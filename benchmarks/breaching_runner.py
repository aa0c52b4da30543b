"""Run breaching's own attacks on a target gradient written by the suite: the side-by-side peer, never re-implemented.

This script runs INSIDE breaching's virtual environment (``python3.11 -m venv /work/brv && /work/brv/bin/pip
install breaching==0.1.2 safetensors``), not in unlearnleak's: breaching is no dependency of the library. The
suite (``suite.py --breaching-python /work/brv/bin/python``) calls it once per cell with a job folder:

    job.json          the model (registry name, kwargs, input shape, classes, normalisation), the attacks
                      (breaching attack config names), iterations, restarts, seed, torch threads, device
    job.safetensors   ``state.<name>`` the network's parameters and buffers (without the input normaliser),
                      ``gradient.<i>`` ∇* per parameter in ``net.parameters()`` order, ``labels`` (k,),
                      optionally ``init`` (k, C, H, W): a start in [0, 1] pixels instead of breaching's own

and reads back, per attack, ``<attack>.safetensors`` (``x``: (k, C, H, W) in [0, 1] pixels) and
``result.json`` (seconds, iterations, seconds per iteration, breaching's version and the attack config).

Only the architecture comes from unlearnleak (``unlearnleak.models`` and the suite's own model file, which need
nothing but torch), so that breaching attacks exactly the network our attack attacks. The call follows
/work/shared/peers/breaching.md: ``breaching.get_attack_config(name, overrides)``, then
``breaching.attacks.prepare_attack(net, CrossEntropyLoss(), cfg, setup).reconstruct([payload], [shared], {})``
with the model's buffers sent (else breaching resets batch norm), attribute-style metadata, and the result
mapped back from breaching's normalised space (x·std + mean, clamped to [0, 1]).
"""

from __future__ import annotations

import importlib
import json
import sys
import time
from pathlib import Path

import torch


def main(job_dir: Path) -> int:
    import breaching
    from omegaconf import OmegaConf
    from safetensors.torch import load_file, save_file

    from unlearnleak.models import ModelSpec, build_model

    job = json.loads((job_dir / "job.json").read_text())
    for module in job.get("model_modules", []):
        importlib.import_module(module)  # registers the suite's own architectures
    torch.set_num_threads(int(job["threads"]))
    tensors = load_file(str(job_dir / "job.safetensors"))
    m = job["model"]
    spec = ModelSpec(m["name"], tuple(m["input_shape"]), int(m["num_classes"]), tuple(m["mean"]), tuple(m["std"]),
                     m["kwargs"])
    net = build_model(spec).net  # breaching feeds normalised inputs: the network inside the normaliser
    state = {k.removeprefix("state."): v for k, v in tensors.items() if k.startswith("state.")}
    net.load_state_dict(state, strict=True)
    net.eval()
    gradients = [tensors[f"gradient.{i}"].float() for i in range(len(list(net.parameters())))]
    labels = tensors["labels"].long()
    metadata = OmegaConf.create({"shape": list(spec.input_shape), "mean": list(spec.mean), "std": list(spec.std),
                                 "modality": "vision", "classes": spec.num_classes})
    mean = torch.tensor(spec.mean).reshape(1, -1, 1, 1)
    std = torch.tensor(spec.std).reshape(1, -1, 1, 1)
    device = torch.device(job.get("device", "cpu"))
    net.to(device)
    gradients = [g.to(device) for g in gradients]
    labels = labels.to(device)
    setup = {"device": device, "dtype": torch.float}
    results = {}
    for attack in job["attacks"]:
        cfg = breaching.get_attack_config(attack, overrides=[f"optim.max_iterations={int(job['iterations'])}",
                                                             f"restarts.num_trials={int(job['restarts'])}"])
        payload = {"parameters": [p.detach().clone() for p in net.parameters()],
                   "buffers": [b.detach().clone() for b in net.buffers()], "metadata": metadata}
        shared = {"gradients": [g.clone() for g in gradients], "buffers": None,
                  "metadata": {"num_data_points": int(labels.numel()), "labels": labels.clone(),
                               "local_hyperparams": None}}
        attacker = breaching.attacks.prepare_attack(net, torch.nn.CrossEntropyLoss(), cfg, setup)
        torch.manual_seed(int(job["seed"]))
        init = None
        if "init" in tensors:  # a given start (pixels), e.g. to compare trajectories; breaching's space is normalised
            init = ((tensors["init"].float() - mean) / std).to(device)
        started = time.perf_counter()
        reconstruction, _ = attacker.reconstruct([payload], [shared], {}, initial_data=init, dryrun=False)
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - started
        x = (reconstruction["data"].detach().float().cpu() * std + mean).clamp(0, 1).contiguous()
        save_file({"x": x}, str(job_dir / f"{attack}.safetensors"))
        iterations = int(job["iterations"]) * int(job["restarts"])
        results[attack] = {"seconds": seconds, "iterations": iterations, "sec_per_iter": seconds / iterations,
                           "config": OmegaConf.to_container(cfg, resolve=True)}
    versions = {"breaching": getattr(breaching, "__version__", None) or _version("breaching"),
                "torch": torch.__version__}
    (job_dir / "result.json").write_text(json.dumps({"attacks": results, "versions": versions}))
    return 0


def _version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
