"""ms per inversion step, ours beside breaching's, on the same network, target, iterations and thread count.

    python benchmarks/peer_speed.py [--cases bn-gelu-tanh,vgg-bn,resnet-gn,convnet64-paper] [--iterations 1000]
        [--rounds 3] [--threads 1] [--out benchmarks/results/peer_speed.json]

The suite's ms/iter columns come from cells that ran hours apart, at different loads, so they cannot tell
whether one of our steps costs ≤ 1.2× one of breaching's. Here each round runs, back to back on the same
∇*: our default (``best``: the race and its continuation) and our ``modern`` preset, then
breaching's ``invertinggradients`` and ``modern`` (its own code in its own environment, ``breaching_peer.py``),
and the rounds alternate so that both sides see the same load; the figure is each method's median over the
rounds. Ours is timed around ``invert`` (set-up included); breaching's by its runner around ``reconstruct``
(its process start and imports excluded). The networks are the suite cases' architectures with random
weights and a random [0, 1] image (the step cost does not depend on the weights); k = 1, true label.
breaching's environment has its own torch build (``versions`` in the output): a difference of builds is part
of what is measured.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from torch.nn import functional as F

import suite_models  # noqa: F401  (registers the suite's architectures)
from breaching_peer import find_python, run_breaching
from suite_cases import CASES
from unlearnleak.attacks.feature_recovery import TargetGradient, invert, preset
from unlearnleak.data.cifar import CIFAR10_MEAN, CIFAR10_STD
from unlearnleak.models import ModelSpec, build_model
from unlearnleak.storage import environment_record, write_json_atomic

OURS = ("best", "modern")  # one trajectory each, as breaching's (the `paper` preset batches 5 restarts)
PEERS = {"breaching_ig": "invertinggradients", "breaching_modern": "modern"}
TARGET = 1.2  # one of our steps ≤ 1.2 × one of breaching's (its `modern`, the recipe ours races)


def case_model(name: str) -> tuple[torch.nn.Module, ModelSpec]:
    """The suite case's network with random weights (seeded), as the suite builds it."""
    case = CASES.get(name)
    if case.dataset != "cifar10":
        raise SystemExit(f"{name}: only the CIFAR-10 cases are timed here (it is {case.dataset})")
    spec = ModelSpec(case.model, (3, 32, 32), 10, CIFAR10_MEAN, CIFAR10_STD, dict(case.model_kwargs))
    torch.manual_seed(0)
    return build_model(spec).eval(), spec


def target_of(model: torch.nn.Module, spec: ModelSpec) -> tuple[TargetGradient, torch.Tensor]:
    """∇* of one random image with label 3 (approximate unlearning's form: a gradient on θ)."""
    x = torch.rand(1, *spec.input_shape, generator=torch.Generator().manual_seed(1))
    y = torch.tensor([3])
    params = [p for p in model.parameters() if p.requires_grad]
    grads = torch.autograd.grad(F.cross_entropy(model(x), y), params)
    names = tuple(n for n, p in model.named_parameters() if p.requires_grad)
    return TargetGradient(names, tuple(g.detach().double() for g in grads), "approximate", "original"), y


def ours_ms(model: torch.nn.Module, spec: ModelSpec, target: TargetGradient, y: torch.Tensor, name: str,
            iterations: int) -> float:
    """Wall ms per budgeted iteration of one ``invert`` call of preset ``name``."""
    started = time.perf_counter()
    invert(model, target, y, tuple(spec.input_shape), preset(name, iterations=iterations), log_every=0)
    return (time.perf_counter() - started) / iterations * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", default="bn-gelu-tanh,vgg-bn,resnet-gn,convnet64-paper")
    parser.add_argument("--iterations", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--breaching-python", default=None)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "peer_speed.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    python, where = find_python(args.breaching_python)
    print(where)
    if python is None:
        return 2
    rows: list[dict[str, Any]] = []
    versions: dict[str, Any] = {}
    for name in args.cases.split(","):
        model, spec = case_model(name)
        target, y = target_of(model, spec)
        ours_ms(model, spec, target, y, "modern", 5)  # warm-up: torch.func set-up, allocator
        times: dict[str, list[float]] = {m: [] for m in (*OURS, *PEERS)}
        loads = []
        for _ in range(args.rounds):
            loads.append(os.getloadavg()[0])
            for method in OURS:
                times[method].append(ours_ms(model, spec, target, y, method, args.iterations))
            results, info = run_breaching(python, model, spec, target, y, iterations=args.iterations, seed=0,
                                          threads=args.threads, attacks=tuple(PEERS.values()))
            versions = info["versions"]
            for method, attack in PEERS.items():
                times[method].append(results[attack].sec_per_iter * 1000)
        medians = {m: statistics.median(v) for m, v in times.items()}
        row = {"case": name, "parameters": sum(p.numel() for p in model.parameters()),
               "ms_per_iter": {m: round(v, 2) for m, v in medians.items()},
               "rounds_ms": {m: [round(t, 2) for t in v] for m, v in times.items()},
               "ratio_best_to_breaching_modern": round(medians["best"] / medians["breaching_modern"], 3),
               "ratio_modern_to_breaching_modern": round(medians["modern"] / medians["breaching_modern"], 3),
               "load_1min": [round(x, 2) for x in loads]}
        row["pass"] = row["ratio_best_to_breaching_modern"] <= TARGET
        rows.append(row)
        print(json.dumps(row), flush=True)
    write_json_atomic(args.out, {"rows": rows, "iterations": args.iterations, "rounds": args.rounds,
                                 "threads": args.threads, "breaching_versions": versions,
                                 "target": f"ms/iter of the default ≤ {TARGET} × breaching modern's",
                                 "environment": environment_record()})
    print(json.dumps({"cases": len(rows), "pass": all(r["pass"] for r in rows),
                      "ratios": {r["case"]: r["ratio_best_to_breaching_modern"] for r in rows}}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
