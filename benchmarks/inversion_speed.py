"""ms per inversion step: a plain PyTorch loop of the paper's recipe vs our engine, side by side (issue 8, item 6).

    python benchmarks/inversion_speed.py [--steps 60] [--threads 1] [--out benchmarks/results/inversion_speed.json]

One run measures, on the same model, target and thread count, (i) a ~30-line loop written below (autograd with
create_graph, AdamW on the signed gradient, TV 1e-2, clamp to [0, 1], MultiStepLR), (ii) the engine with the
``paper`` preset and 1 restart, (iii) the engine with 5 batched restarts (reported per restart). Models: a
small CNN without batch norm (LeakyReLU) and the paper's ConvNet (width 16), CIFAR-sized inputs, k = 1,
random weights (the step cost does not depend on them). Target: (ii) ≤ 1.2 × (i). Timings are medians of
three repeats after a warm-up, so run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from unlearnleak.attacks.feature_recovery import TargetGradient, invert, preset
from unlearnleak.models import ModelSpec, Normalized, build_model
from unlearnleak.storage import environment_record, write_json_atomic


class NoBNCNN(nn.Module):
    """A small CNN without batch norm, LeakyReLU (the issue's first model)."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 32, 3, padding=1), nn.LeakyReLU(0.2), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.LeakyReLU(0.2), nn.MaxPool2d(2),
            nn.Conv2d(64, 64, 3, padding=1), nn.LeakyReLU(0.2), nn.AdaptiveAvgPool2d(4), nn.Flatten())
        self.fc = nn.Linear(64 * 16, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.body(x))


def plain_loop(model: nn.Module, target: list[torch.Tensor], y: torch.Tensor, steps: int,
               generator: torch.Generator) -> torch.Tensor:
    """The paper's recipe in plain PyTorch: cosine + TV 1e-2, signed AdamW lr 0.04, ×0.5 at 3/8, 5/8, 7/8."""
    params = [p for p in model.parameters() if p.requires_grad]
    t_flat = torch.cat([t.reshape(-1) for t in target])
    x = torch.randn(1, 3, 32, 32, generator=generator).requires_grad_(True)
    opt = torch.optim.AdamW([x], lr=0.04, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.MultiStepLR(
        opt, milestones=[int(steps // 2.667), int(steps // 1.6), int(steps // 1.142)], gamma=0.5)
    for _ in range(steps):
        with torch.no_grad():
            x.clamp_(0, 1)
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        g = torch.cat([a.reshape(-1) for a in torch.autograd.grad(loss, params, create_graph=True)])
        cost = 1 - (g @ t_flat) / (g.norm() * t_flat.norm())
        tv = (x[..., :, 1:] - x[..., :, :-1]).abs().mean() + (x[..., 1:, :] - x[..., :-1, :]).abs().mean()
        (cost + 0.01 * tv).backward()
        assert x.grad is not None
        x.grad.sign_()
        opt.step()
        sched.step()
    return x.detach()


def _median_ms(fn: object, steps: int, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()  # type: ignore[operator]
        times.append((time.perf_counter() - started) / steps * 1000)
    return statistics.median(times)


def measure(name: str, model: nn.Module, steps: int) -> dict[str, float | str]:
    """ms/step of the plain loop, the engine with 1 restart and with 5 batched restarts (per restart)."""
    model.eval()
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 3, 32, 32, generator=g)
    y = torch.tensor([3])
    grads = torch.autograd.grad(F.cross_entropy(model(x), y), list(model.parameters()))
    names = tuple(n for n, _ in model.named_parameters())
    target = TargetGradient(names, tuple(t.detach().double() for t in grads), "approximate", "original")
    plain_target = [t.detach() for t in grads]
    one = preset("paper", iterations=steps, restarts=1)
    five = preset("paper", iterations=steps, restarts=5)
    for cfg in (one, five):  # warm-up (torch.func set-up, allocator)
        invert(model, target, y, (3, 32, 32), cfg.with_overrides(iterations=3), log_every=0)
    plain_loop(model, plain_target, y, 3, g)
    plain = _median_ms(lambda: plain_loop(model, plain_target, y, steps, g), steps)
    engine = _median_ms(lambda: invert(model, target, y, (3, 32, 32), one, log_every=0), steps)
    batched = _median_ms(lambda: invert(model, target, y, (3, 32, 32), five, log_every=0), steps) / 5
    return {"model": name, "plain_ms": round(plain, 3), "engine_1_restart_ms": round(engine, 3),
            "engine_5_restarts_ms_per_restart": round(batched, 3), "ratio_engine_to_plain": round(engine / plain, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "inversion_speed.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    convnet = build_model(ModelSpec("convnet", (3, 32, 32), 10, (0.5,) * 3, (0.25,) * 3, {"width": 16}))
    no_bn = Normalized(NoBNCNN(), (0.5,) * 3, (0.25,) * 3, image=True)
    rows = [measure("cnn_no_bn_leakyrelu", no_bn, args.steps), measure("convnet16", convnet, args.steps)]
    for row in rows:
        print(json.dumps(row))
    write_json_atomic(args.out, {"rows": rows, "steps": args.steps, "threads": args.threads,
                                 "target": "engine_1_restart_ms <= 1.2 * plain_ms",
                                 "environment": environment_record()})


if __name__ == "__main__":
    main()
