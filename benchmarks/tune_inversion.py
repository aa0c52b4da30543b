"""Tuning harness of the adaptive default (issue 8, item 1) — TUNING cases only; the held-out cases are not here.

    python benchmarks/tune_inversion.py --cases lenet_random,cnn_nobn_random --modes approx,exact --ks 1 \\
        --ns 8 --samples 3 --iterations 200            # appends JSON lines to --out, then prints the summary
    python benchmarks/tune_inversion.py --summary      # the table of --out
    python benchmarks/tune_inversion.py --mechanism --iterations 300   # the held-out cost check (synthetic)

TUNING cases (CIFAR-10 images of the shared subset, ``unlearnleak.data.load_dataset``):
  - ``convnet16_1epoch``: the paper's ConvNet (width 16), θ0 after ONE epoch of pretraining on the public rows
    (as the official code; cached), batch norm;
  - ``lenet_random``: LeNet, random θ0;
  - ``cnn_nobn_random``: a small CNN without batch norm (LeakyReLU), random θ0 (``inversion_speed.NoBNCNN``).
HELD-OUT (not run here; benchmarks of helper i8suite report them): ConvNet trained to ~60 %, ResNet-18, MLP,
CIFAR-100, RetinaMNIST, a BN/GELU CNN.

Per case × unlearning mode (approximate: gradient ascent; exact: retraining, the server knows θ0, N, k) × k × N
and sample: θ = θ0 after one full-batch SGD step on D_ft (N rows of batch 1), θ_u per method, labels inferred
from ∇*; ``paper`` runs ``--iterations`` with ``--paper-restarts`` (5, the preset's) restarts, the default
(``best``) gets the same optimisation seconds. Each line of ``--out`` (JSON) holds PSNR/SSIM of both, the
4×4-thumbnail and mean-colour baselines of the truth, and the TV weight the default chose with its held-out costs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from torch.nn import functional as F

from common import DEFAULT_DATA
from unlearnleak.attacks.feature_recovery import evaluate_reconstruction, recover
from unlearnleak.data import load_dataset
from unlearnleak.knowledge import ServerKnowledge
from unlearnleak.metrics import psnr, ssim
from unlearnleak.models import ModelSpec, build_model
from unlearnleak.pair import ModelPair, StateDict
from unlearnleak.scenario import ScenarioConfig, finetune, pretrained_base
from unlearnleak.storage import environment_record
from unlearnleak.training import TrainConfig
from unlearnleak.unlearning import UnlearningContext, state_of, unlearn

NOBN = f"{Path(__file__).parent / 'inversion_speed.py'}:NoBNCNN"
ONE_EPOCH = TrainConfig(epochs=1, lr=0.05, momentum=0.9, weight_decay=5e-4, batch_size=128, augment=True,
                        drop_last=True)


def base_model(case: str, data_dir: Path, train_set: Any) -> tuple[ModelSpec, StateDict]:
    """θ0 of a tuning case: random (seed 0) or pretrained for one epoch (cached by config hash)."""
    mean, std = tuple(train_set.mean), tuple(train_set.std)
    if case == "convnet16_1epoch":
        cfg = ScenarioConfig(dataset="cifar10", data_dir=str(data_dir), model="convnet", model_kwargs={"width": 16},
                             holdout=4000, pretrain=ONE_EPOCH)
        return pretrained_base(cfg, train_set)
    name, kwargs = {"lenet_random": ("lenet", {}), "cnn_nobn_random": (NOBN, {})}[case]
    spec = ModelSpec(name, tuple(train_set.input_shape), 10, mean, std, kwargs)
    torch.manual_seed(0)
    return spec, state_of(build_model(spec))


def baselines(truth: torch.Tensor) -> dict[str, float]:
    """PSNR of trivial images made from the truth: its 4×4 thumbnail (bilinear up) and its mean colour."""
    thumb = F.interpolate(F.adaptive_avg_pool2d(truth, 4), size=truth.shape[-2:], mode="bilinear",
                          align_corners=False)
    mean = truth.mean(dim=(2, 3), keepdim=True).expand_as(truth)
    return {"thumbnail_psnr": float(psnr(thumb, truth).mean()), "mean_colour_psnr": float(psnr(mean, truth).mean())}


def run(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    train_set = load_dataset("cifar10", "train", args.data_dir)
    pool = torch.randperm(4000, generator=torch.Generator().manual_seed(0))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("a") as sink:
        for case in args.cases.split(","):
            spec, base = base_model(case, args.data_dir, train_set)
            for n in [int(v) for v in args.ns.split(",")]:
                x_ft, y_ft = train_set.x[pool[:n]], train_set.y[pool[:n]]
                ft = TrainConfig(freeze_bn=True)
                original = finetune(spec, base, x_ft, y_ft, ft, seed=0)
                for k in [int(v) for v in args.ks.split(",")]:
                    for sample in range(args.samples):
                        order = torch.randperm(n, generator=torch.Generator().manual_seed(1000 + sample))
                        mask = torch.zeros(n, dtype=torch.bool)
                        mask[order[:k]] = True
                        for mode in args.modes.split(","):
                            method = "gradient_ascent" if mode == "approx" else "exact"
                            ctx = UnlearningContext(spec=spec, original=original, base=base, x_train=x_ft,
                                                    y_train=y_ft, forget_mask=mask, finetune=ft, seed=0)
                            pair = ModelPair(spec, original, unlearn(method, ctx))
                            kind = "approximate" if mode == "approx" else "exact"
                            knowledge = ServerKnowledge(base=base, n_train=n, n_forget=k, unlearning=kind)
                            row = attack_both(pair, knowledge, x_ft[mask], y_ft[mask], args, kind)
                            row.update({"case": case, "mode": mode, "k": k, "n": n, "sample": sample,
                                        "default": args.default, "default_overrides": args.default_overrides})
                            print(json.dumps(row), flush=True)
                            sink.write(json.dumps(row) + "\n")
                            sink.flush()


def attack_both(pair: ModelPair, knowledge: ServerKnowledge, truth_x: torch.Tensor, truth_y: torch.Tensor,
                args: argparse.Namespace, mode: str) -> dict[str, Any]:
    """``paper`` for --iterations, then the default for the same optimisation seconds; metrics and baselines."""
    row: dict[str, Any] = baselines(truth_x)
    paper = recover(pair, knowledge, preset="paper", iterations=args.iterations, restarts=args.paper_restarts,
                    mode=mode, seed=args.seed)
    budget = paper.timings["optimise_seconds"]
    default = recover(pair, knowledge, preset=args.default, iterations=100_000, mode=mode, seed=args.seed,
                      time_budget=budget, **json.loads(args.default_overrides))
    for name, rec in (("paper", paper), ("default", default)):
        result = evaluate_reconstruction(rec, truth_x, truth_y)
        row[f"{name}_psnr"] = result["mean"]["psnr"]
        row[f"{name}_ssim"] = float(ssim(rec.x[result["assignment"]], truth_x).mean())
        row[f"{name}_seconds"] = rec.seconds
        row[f"{name}_iterations"] = rec.iterations
        row[f"{name}_label_accuracy"] = result["label_accuracy"]
    race = default.config.get("race") or {}
    row["race_share"] = default.config.get("race_share")
    row["chosen_total_variation"] = race.get("chosen_total_variation")
    row["heldout_costs"] = race.get("heldout_costs")
    return row


def mechanism(args: argparse.Namespace) -> None:
    """Does the held-out cost pick the TV weight that reconstructs best? A smooth 16×16 image, random LeNet.

    For an exact ∇* and for ∇* plus Gaussian noise of each tensor's size (SNR 1): every TV weight run alone
    (paper recipe, one restart, fitted on half of ∇*'s coordinates, scored on the other half), then the
    default, ``smooth`` (fixed TV 0.3) and ``paper`` with one restart, all for --iterations steps.
    """
    from unlearnleak.attacks.feature_recovery import TargetGradient, invert, preset
    from unlearnleak.attacks.feature_recovery.adaptive import holdout_mask
    from unlearnleak.attacks.feature_recovery.inversion import GradientMatcher, run_inversion

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = build_model(ModelSpec("lenet", (3, 16, 16), 10, (0.5,) * 3, (0.25,) * 3, {})).eval()
    g = torch.Generator().manual_seed(1)
    x = F.interpolate(torch.rand(1, 3, 4, 4, generator=g), size=(16, 16), mode="bilinear", align_corners=False)
    x[..., 4:10, 5:12] += 0.3
    x, y = x.clamp(0, 1), torch.tensor([3])
    grads = torch.autograd.grad(F.cross_entropy(model(x), y), list(model.parameters()))
    names = tuple(n for n, _ in model.named_parameters())
    for noise in (0.0, 1.0):
        gen = torch.Generator().manual_seed(5)
        target = TargetGradient(names, tuple(t.detach().double() + noise * t.norm() / t.numel() ** 0.5
                                             * torch.randn(t.shape, generator=gen, dtype=torch.float64)
                                             for t in grads), "approximate", "original")
        fit = holdout_mask(target.flat().numel(), 0.5, 0)
        for tv in (0.003, 0.01, 0.03, 0.1, 0.3):
            cfg = preset("paper", iterations=args.iterations, restarts=1, total_variation=tv)
            r = run_inversion(model, target, y, (3, 16, 16), cfg, mask=fit)
            held = GradientMatcher(model, target, y, cfg, mask=1 - fit, input_shape=(3, 16, 16))
            with held.hooks():
                cost = float(held.score(r.x[None], full=False)[0])
            print(json.dumps({"noise": noise, "fixed_tv": tv, "psnr": float(psnr(r.x, x)[0]), "heldout_cost": cost}))
        for name, restarts in (("best", None), ("smooth", None), ("paper", 1)):
            extra = json.loads(args.default_overrides) if name == "best" else {}
            r = invert(model, target, y, (3, 16, 16), preset(name, iterations=args.iterations, restarts=restarts,
                                                             **extra))
            print(json.dumps({"noise": noise, "preset": name, "psnr": float(psnr(r.x, x)[0]),
                              "chosen": r.race and r.race["chosen_total_variation"]}), flush=True)


def summarise(path: Path) -> None:
    """Mean PSNR per case and mode: default − paper, and the chosen TV weights."""
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    groups: dict[tuple[str, str, int, int, str], list[dict[str, Any]]] = {}
    for r in rows:
        key = (r["case"], r["mode"], r["k"], r["n"], str(r.get("race_share")))
        groups.setdefault(key, []).append(r)
    print("| case | mode | k | N | race_share | samples | paper dB | default dB | Δ dB | thumbnail dB "
          "| chosen TV |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for (case, mode, k, n, over), rs in sorted(groups.items()):
        p, d = statistics.mean(r["paper_psnr"] for r in rs), statistics.mean(r["default_psnr"] for r in rs)
        t = statistics.mean(r["thumbnail_psnr"] for r in rs)
        tv = [r["chosen_total_variation"] for r in rs]
        print(f"| {case} | {mode} | {k} | {n} | {over} | {len(rs)} | {p:.2f} | {d:.2f} | {d - p:+.2f} | {t:.2f} "
              f"| {tv} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", default="lenet_random,cnn_nobn_random,convnet16_1epoch")
    parser.add_argument("--modes", default="approx,exact")
    parser.add_argument("--ks", default="1,4")
    parser.add_argument("--ns", default="8,32")
    parser.add_argument("--samples", type=int, default=3)
    parser.add_argument("--iterations", type=int, default=300, help="iterations of the paper preset")
    parser.add_argument("--paper-restarts", type=int, default=5, help="the preset's own 5")
    parser.add_argument("--default", default="best", help="the preset compared with paper at equal seconds")
    parser.add_argument("--default-overrides", default="{}",
                        help='JSON InversionConfig fields for the default, e.g. {"race_share": 0.5}')
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "tune_inversion.jsonl")
    parser.add_argument("--summary", action="store_true", help="only summarise --out")
    parser.add_argument("--mechanism", action="store_true", help="only the synthetic held-out-cost check")
    args = parser.parse_args()
    if args.mechanism:
        mechanism(args)
        return
    if not args.summary:
        started = time.perf_counter()
        run(args)
        print(json.dumps({"seconds": round(time.perf_counter() - started, 1), "environment": environment_record()}))
    summarise(args.out)


if __name__ == "__main__":
    main()
