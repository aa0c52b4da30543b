"""Label-inference benchmark (PAPER.md §4.2): accuracy of the inferred deleted class, per probe generator.

Setting: the benchmarks' ConvNet (width 16) pretrained on CIFAR-10 batches 2–5 of the shared subset
(``common.bench_config``, cached θ0); θ = θ0 fine-tuned on D_ft = 500 samples of batch 1 (1 epoch, SGD lr
1e-3, batch 128, BN frozen — the paper's fine-tune). For every class c and p_u ∈ {0.1, 0.5, 1.0}, the first
⌊n_c·p_u⌋ samples of class c in D_ft are deleted by exact unlearning (re-fine-tune θ0 without them, same data
order) and by approximate unlearning (gradient ascent from θ, τ = 1e-3, one epoch, batch min(128, n_u)).
Probes (10 per class) are made once per generator against θ, then replayed to each θ_u.

Accuracy = fraction of the classes c for which the most negative mean confidence change is c (the paper's
argmin rule, Eq. 11), with the change measured in log-odds (the toolkit's default; "accuracy" in the JSON)
and in probability (the paper's; "accuracy_probability_rule"); "detected" = how often the decision rule's
significance test also fired. ``--reuse`` replays saved probes and θ_u (e.g. after a change of the rule).

``zoo`` costs up to 2,049 queries per iteration; on a 2-core CPU it cannot make 100 probes in an hour. It
gets the time left after the other generators (minus a reserve for the evaluation); its queries per
accepted probe are measured on the probes that fit, and its accuracy is computed over the classes that
have at least one zoo probe (the output says how many).

Usage: python benchmarks/label_inference.py [--total-minutes 60] [--out benchmarks/out/label_inference]
The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table
from safetensors.torch import load_file

from common import bench_config
from unlearnleak.attacks.label_inference import LabelGuess, ProbeSet
from unlearnleak.attacks.label_inference.probes import PROBE_GENERATORS
from unlearnleak.experiments.pipeline import generate_label_probes, infer_and_evaluate
from unlearnleak.experiments.schema import LabelInferenceSpec
from unlearnleak.models import build_model, load_weights
from unlearnleak.oracle import ModelOracle
from unlearnleak.progress import track
from unlearnleak.report.label_figures import plot_confidence_changes, plot_probe_grid
from unlearnleak.scenario import ForgetConfig, UnlearningConfig, build_scenario, choose_forget
from unlearnleak.storage import save_tensors_atomic, write_json_atomic
from unlearnleak.training import TrainConfig
from unlearnleak.unlearning import UnlearningContext, unlearn

FRACTIONS = (0.1, 0.5, 1.0)
METHODS = {"exact": ("exact", {}), "approximate": ("gradient_ascent", {"lr": 1e-3, "epochs": 1})}
GENERATION_ORDER = ("public", "gradient", "nes", "zoo")  # zoo last: it takes the time that is left


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--generators", nargs="+", default=list(GENERATION_ORDER), choices=PROBE_GENERATORS.names())
    parser.add_argument("--per-class", type=int, default=10)
    parser.add_argument("--fractions", nargs="+", type=float, default=list(FRACTIONS))
    parser.add_argument("--classes", nargs="+", type=int, default=None)
    parser.add_argument("--n-train", type=int, default=500)
    parser.add_argument("--total-minutes", type=float, default=60.0, help="wall-clock budget of the whole run")
    parser.add_argument("--zoo-seconds", type=float, default=None, help="zoo's time (default: what is left)")
    parser.add_argument("--eval-reserve", type=float, default=240.0, help="seconds kept for the evaluation")
    parser.add_argument("--set", dest="overrides", nargs="*", default=[],
                        help="generator parameters, e.g. zoo.nb_parallel=512 nes.directions=8")
    parser.add_argument("--reuse", action="store_true", help="reuse probes / unlearned models saved in --out")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "out" / "label_inference")
    args = parser.parse_args()
    started = time.perf_counter()
    deadline = started + 60 * args.total_minutes
    console = Console(stderr=False)
    args.out.mkdir(parents=True, exist_ok=True)
    params = _generator_params(args.overrides)

    # --- θ0 (cached), θ on D_ft, the public pool -------------------------------------------------------------
    cfg = bench_config(width=16, n_train=args.n_train, device=args.device,
                       forget=ForgetConfig(kind="class", class_id=0, fraction=1.0),
                       unlearning=UnlearningConfig(method="gradient_ascent", params={"lr": 1e-3}),
                       finetune=TrainConfig(epochs=1, lr=1e-3, batch_size=128, freeze_bn=True))
    t0 = time.perf_counter()
    scn = build_scenario(cfg)
    setup_s = time.perf_counter() - t0
    spec, pair = scn.pair.spec, scn.pair
    x_ft, y_ft = scn.train.x[scn.ft_indices], scn.train.y[scn.ft_indices]
    k = spec.num_classes
    classes = args.classes if args.classes is not None else list(range(k))
    names = list(scn.train.classes)
    metrics = dict(scn.record.metrics)
    console.print(f"setup {setup_s:.0f} s: θ0 test acc {metrics.get('base_test_accuracy', float('nan')):.3f}, "
                  f"θ test acc {metrics.get('original_test_accuracy', float('nan')):.3f}; D_ft per class "
                  f"{torch.bincount(y_ft, minlength=k).tolist()}; public pool {len(scn.public)}")

    # --- the unlearned models (independent of the probes) ------------------------------------------------------
    t0 = time.perf_counter()
    unlearned = _unlearned_models(args, spec, pair, scn.knowledge.base, x_ft, y_ft, cfg.finetune, classes)
    unlearn_s = time.perf_counter() - t0
    console.print(f"{len(unlearned)} unlearned models in {unlearn_s:.0f} s")

    # --- probes, once per generator, against θ only ------------------------------------------------------------
    theta = pair.model("original", args.device)
    probe_sets: dict[str, ProbeSet] = {}
    for name in [g for g in GENERATION_ORDER if g in args.generators]:
        folder = args.out / f"probes_{name}"
        if args.reuse and (folder / "probes.json").is_file():
            probe_sets[name] = ProbeSet.load(folder)
            console.print(f"{name}: reused {len(probe_sets[name])} probes from {folder}")
            continue
        max_seconds = None
        if name == "zoo":
            left = deadline - time.perf_counter() - args.eval_reserve
            max_seconds = args.zoo_seconds if args.zoo_seconds is not None else max(60.0, left)
            console.print(f"zoo gets {max_seconds:.0f} s")
        oracle = ModelOracle(theta, num_classes=k, input_shape=tuple(spec.input_shape), device=args.device)
        attack = LabelInferenceSpec(generator=name, per_class=args.per_class, max_seconds=max_seconds,
                                    params=params.get(name, {}))
        probes = generate_label_probes(attack, oracle, public=scn.public, seed=args.seed, device=args.device,
                                       white_box=theta)
        probes.save(folder)
        probe_sets[name] = probes
        console.print(f"{name}: {len(probes)} probes ({probes.num_accepted} accepted) in {probes.seconds:.0f} s, "
                      f"{probes.queries_per_accepted:,.0f} queries per accepted probe"
                      + (f" — {probes.notes}" if probes.notes else ""))
        plot_probe_grid(probes, args.out / f"probes_{name}.png", class_names=names)

    # --- replay to every θ_u ----------------------------------------------------------------------------------
    t0 = time.perf_counter()
    results: dict[str, dict[str, dict[str, list[dict[str, Any]]]]] = {}
    guesses: dict[tuple[str, str, str, int], LabelGuess] = {}
    cells = [(g, m, p, c) for g in probe_sets for m in METHODS for p in args.fractions for c in classes]
    oracles: dict[str, ModelOracle] = {}
    for g, m, p, c in track(cells, "replaying probes to θ_u", total=len(cells)):
        key = _key(m, p, c)
        if key not in oracles:
            model = build_model(spec)
            load_weights(model, unlearned[key])
            oracles[key] = ModelOracle(model, num_classes=k, input_shape=tuple(spec.input_shape), device=args.device)
        orig = ModelOracle(theta, num_classes=k, input_shape=tuple(spec.input_shape), device=args.device)
        rules = (LabelInferenceSpec(generator=g), LabelInferenceSpec(generator=g, statistic="probability"))
        guess, paper = (infer_and_evaluate(orig, oracles[key], rule, [c], probes=probe_sets[g]).guess
                        for rule in rules)  # the default statistic (log-odds), then the paper's (Eq. 11)
        guesses[(g, m, str(p), c)] = guess
        results.setdefault(g, {}).setdefault(m, {}).setdefault(str(p), []).append(
            {"class": c, "best": guess.best, "detected": guess.detected, "label": guess.label,
             "changes": guess.to_dict()["changes"], "probe_counts": list(guess.probe_counts),
             "center": guess.center, "scale": guess.scale, "probability_rule": {
                 "best": paper.best, "detected": paper.detected, "label": paper.label,
                 "changes": paper.to_dict()["changes"]}})
    eval_s = time.perf_counter() - t0

    # --- report -----------------------------------------------------------------------------------------------
    covered = {g: [c for c in classes if int((probe_sets[g].predicted == c).sum()) > 0] for g in results}
    accuracy, detected = _accuracy(results, covered, lambda r: r)
    accuracy_p, detected_p = _accuracy(results, covered, lambda r: r["probability_rule"])
    _print_tables(console, accuracy, detected, probe_sets, covered, classes, args.fractions,
                  "log-odds change (default)")
    _print_tables(console, accuracy_p, detected_p, None, covered, classes, args.fractions,
                  "probability change (the paper's Eq. 11)")
    fig = _figure(args, guesses, names)
    write_json_atomic(args.out / "results.json", {
        "accuracy": accuracy, "detected": detected, "accuracy_probability_rule": accuracy_p,
        "detected_probability_rule": detected_p, "cells": results, "covered_classes": covered,
        "probes": {g: {"count": len(ps), "accepted": ps.num_accepted, "total_queries": ps.total_queries,
                       "seconds": ps.seconds, "notes": ps.notes, "per_probe_queries": ps.queries.tolist(),
                       "params": dict(ps.params)} for g, ps in probe_sets.items()},
        "metrics": metrics, "setup_seconds": setup_s, "unlearn_seconds": unlearn_s, "eval_seconds": eval_s})
    total_s = time.perf_counter() - started
    console.print(f"wall time {total_s / 60:.1f} min (setup {setup_s:.0f} s, unlearning {unlearn_s:.0f} s, "
                  f"probes {sum(ps.seconds for ps in probe_sets.values()):.0f} s, replay {eval_s:.0f} s); "
                  f"Fig. 4: {fig}; details: {args.out / 'results.json'}")
    # queries per accepted probe; a generator that finished none reports the queries it spent (a lower bound)
    lower = [g for g, ps in probe_sets.items() if ps.num_accepted == 0]
    summary: dict[str, Any] = {
        "accuracy": accuracy,
        "accuracy_probability_rule": accuracy_p,
        "queries_per_probe": {g: round(ps.queries_per_accepted if ps.num_accepted else float(ps.total_queries), 1)
                              for g, ps in probe_sets.items()},
        "black_box_generators": [g for g in probe_sets if PROBE_GENERATORS.get(g).black_box],
        "seconds": {g: round(ps.seconds, 1) for g, ps in probe_sets.items()},
        "statistic": "log_odds",
    }
    if lower:
        summary["queries_per_probe_lower_bound"] = lower
    sys.stdout.flush()
    print(json.dumps(summary))


def _generator_params(overrides: list[str]) -> dict[str, dict[str, Any]]:
    import yaml

    out: dict[str, dict[str, Any]] = {}
    for item in overrides:
        key, _, raw = item.partition("=")
        gen, _, field = key.partition(".")
        out.setdefault(gen, {})[field] = yaml.safe_load(raw)
    return out


def _key(method: str, fraction: float, c: int) -> str:
    return f"{method}/{fraction}/{c}"


def _unlearned_models(args: argparse.Namespace, spec: Any, pair: Any, base: Any, x_ft: torch.Tensor,
                      y_ft: torch.Tensor, finetune: TrainConfig,
                      classes: list[int]) -> dict[str, dict[str, torch.Tensor]]:
    """θ_u for every (method, p_u, class): exact re-fine-tune from θ0 and gradient ascent from θ."""
    path = args.out / "unlearned.safetensors"
    fingerprint = f"{float(sum(v.double().sum() for v in pair.original.values())):.12e}"
    cells = [(m, p, c) for m in METHODS for p in args.fractions for c in classes]
    if args.reuse and path.is_file():
        flat = load_file(str(path))
        states: dict[str, dict[str, torch.Tensor]] = {}
        for name, v in flat.items():
            key, _, param = name.partition("|")
            states.setdefault(key, {})[param] = v
        stored = states.pop("_fingerprint", {}).get("x")
        if all(_key(*cell) in states for cell in cells) and stored is not None \
                and f"{float(stored):.12e}" == fingerprint:
            return states
    states = {}
    for m, p, c in track(cells, "unlearning", total=len(cells)):
        positions = choose_forget(ForgetConfig(kind="class", class_id=c, fraction=p), y_ft, args.seed)
        mask = torch.zeros(y_ft.numel(), dtype=torch.bool)
        mask[positions] = True
        method, params = METHODS[m]
        ctx = UnlearningContext(spec=spec, original=pair.original, base=base, x_train=x_ft, y_train=y_ft,
                                forget_mask=mask, finetune=finetune, params=params, seed=args.seed,
                                device=args.device)
        states[_key(m, p, c)] = unlearn(method, ctx)
    flat = {f"{key}|{param}": v for key, state in states.items() for param, v in state.items()}
    flat["_fingerprint|x"] = torch.tensor(float(fingerprint), dtype=torch.float64)
    save_tensors_atomic(path, flat)
    return states


def _print_tables(console: Console, accuracy: dict[str, Any], detected: dict[str, Any],
                  probe_sets: dict[str, ProbeSet] | None, covered: dict[str, list[int]], classes: list[int],
                  fractions: list[float], statistic: str) -> None:
    table = Table(title=f"Label-inference accuracy (argmin of the mean {statistic}) over the deleted class; "
                        "[detected by the significance test]")
    table.add_column("generator")
    table.add_column("method")
    for p in fractions:
        table.add_column(f"p_u={p}", justify="right")
    for g, by_method in accuracy.items():
        for m, by_p in by_method.items():
            table.add_row(g, m, *(_fmt(by_p[str(p)]) + f" [{_fmt(detected[g][m][str(p)])}]" for p in fractions))
    console.print(table)
    if probe_sets is None:
        return
    q = Table(title="Probes (made once, against θ)")
    for col in ("generator", "black-box", "probes", "accepted", "queries/accepted probe", "seconds", "classes covered"):
        q.add_column(col, justify="right" if col not in ("generator", "black-box") else "left")
    for g, ps in probe_sets.items():
        q.add_row(g, "yes" if ps.black_box else "no (weights)", str(len(ps)), str(ps.num_accepted),
                  f"{ps.queries_per_accepted:,.0f}", f"{ps.seconds:.0f}", f"{len(covered[g])}/{len(classes)}")
    console.print(q)
    for g, ps in probe_sets.items():
        if ps.notes:
            console.print(f"note ({g}): {ps.notes}; accuracy over the {len(covered[g])} classes with probes")


def _accuracy(results: dict[str, Any], covered: dict[str, list[int]], pick: Callable[[dict[str, Any]], Any]
              ) -> tuple[dict[str, Any], dict[str, Any]]:
    """Accuracy of the argmin and of the detected label per generator × method × p_u, over covered classes."""
    accuracy: dict[str, dict[str, dict[str, float | None]]] = {}
    detected: dict[str, dict[str, dict[str, float | None]]] = {}
    for g, by_method in results.items():
        for m, by_p in by_method.items():
            for p, rows in by_p.items():
                scored = [(r["class"], pick(r)) for r in rows if r["class"] in covered[g]]
                n = len(scored)
                accuracy.setdefault(g, {}).setdefault(m, {})[p] = (
                    sum(v["best"] == c for c, v in scored) / n if n else None)
                detected.setdefault(g, {}).setdefault(m, {})[p] = (
                    sum(v["detected"] and v["label"] == c for c, v in scored) / n if n else None)
    return accuracy, detected


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def _figure(args: argparse.Namespace, guesses: dict[tuple[str, str, str, int], LabelGuess],
            names: list[str]) -> Path | None:
    """Fig. 4 for one run: nes (else another generator), approximate unlearning, p_u = 0.5, class 3 (cat)."""
    if not guesses:
        return None
    gens = sorted({key[0] for key in guesses})
    g = "nes" if "nes" in gens else gens[0]
    cells = sorted(key for key in guesses if key[0] == g and key[1] == "approximate")
    key = next((k for k in cells if k[2] == "0.5" and k[3] == 3), cells[0])
    return plot_confidence_changes(guesses[key], args.out / "fig4_confidence_change.png", class_names=names,
                                   deleted=[key[3]], title=f"{g} probes, approximate unlearning, p_u={key[2]}, "
                                                           f"deleted: {names[key[3]]}")


if __name__ == "__main__":
    main()
