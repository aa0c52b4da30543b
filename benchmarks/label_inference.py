"""Label-inference benchmark (docs/paper.md §4.2; issue 18): the user attack end to end, as `infer-label` runs it.

For each case of ``label_cases.py`` (LeNet; ConvNet-16 with batch norm; held out: a BN/GELU CNN with a tanh
head and a ResNet-18 at width 8) the attack's probes are made once against θ through the facade
(``LabelInference.probe``, timed, every query counted), then replayed to every θ_u of
the calibration benchmark's pairs (``label_calibration.py`` stores them in ``--pairs``/<case>/states.safetensors:
null pairs — one more SGD step, a handful of samples deleted by gradient ascent or by exact retraining — and
deletions of p_u ∈ {0.1, 0.5, 1.0} of each class, exact and approximate). The decision is the package's
(``infer_and_evaluate``) with, by default (``--calibration own``), the per-model calibration of a server-side
audit: 200 null pairs of θ itself made on the case's public rows (``calibrate_on_own_model``: one SGD step or one
gradient-ascent step on a handful; never the benchmark's own null pairs, which are made on private rows), the
coupled-drift residual test chosen on the tuning half; ``--calibration shipped``: a black-box user's ``auto``
(the shipped LeNet null table). Only the held-out half (label_cases.py) is reported; ``--half tune`` replays the
tuning half, on which the rules were chosen.

Per probe set: probes per class (on target), queries to θ and seconds of the generation, then the share of
deletions detected (and named right) per method × p_u, the argmin accuracy, the deleted class's mean rank,
false detections on the null pairs and the pairs without a verdict.

Usage: python benchmarks/label_inference.py [--cases ...] [--probes NAME=GEN:PER_CLASS ...]
       [--pairs benchmarks/out/label_calibration] [--out benchmarks/out/label_inference]
The last line printed is one JSON object (also written to ``--out``/summary.json).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from label_calibration import FRACTIONS, METHODS, NULL_KINDS, _tune, _wilson, parse_probe_sets
from label_cases import LABEL_CASES
from unlearnleak.attacks.label_inference import ProbeSet, calibrate_on_own_model
from unlearnleak.attacks.label_inference.config import LabelInferenceConfig
from unlearnleak.attacks.label_inference.facade import LabelInference
from unlearnleak.attacks.label_inference.own_nulls import OWN_NULL_PAIRS
from unlearnleak.experiments.pipeline import infer_and_evaluate
from unlearnleak.models import build_model, load_weights
from unlearnleak.oracle import ModelOracle
from unlearnleak.scenario import build_scenario
from unlearnleak.storage import write_json_atomic

HERE = Path(__file__).resolve().parent
OWN_NULLS = OWN_NULL_PAIRS  # own null pairs per probe set (rank 195 of 200 at 5 %, 90 % confidence)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="+", default=list(LABEL_CASES), choices=list(LABEL_CASES))
    parser.add_argument("--probes", nargs="+", default=["nes=nes:10", "public=public:10"],
                        help="probe sets NAME=GENERATOR:PER_CLASS[:key=value,...] (default: the defaults)")
    parser.add_argument("--pairs", type=Path, default=HERE / "out" / "label_calibration",
                        help="the calibration benchmark's output (θ_u states and pair keys per case)")
    parser.add_argument("--max-seconds", type=float, default=None, help="time box of each probe generation")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--reuse", action="store_true", help="reuse probes saved in --out")
    parser.add_argument("--calibration", choices=("own", "shipped"), default="own",
                        help="own: the audited model's own null pairs (calibrate_on_own_model, server side); "
                             "shipped: the decision's default (the shipped LeNet null table)")
    parser.add_argument("--own-nulls", type=int, default=OWN_NULLS, help="own null pairs per probe set")
    parser.add_argument("--half", choices=("heldout", "tune"), default="heldout",
                        help="replay the held-out half (reported) or the tuning half (rules are chosen on it)")
    parser.add_argument("--out", type=Path, default=HERE / "out" / "label_inference")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    rows: dict[str, Any] = {}
    for name in args.cases:
        rows[name] = run_case(args, name)
    summary = {"cases": rows, "probes": args.probes}
    write_json_atomic(args.out / "summary.json", summary)
    print(markdown(rows))
    sys.stdout.flush()
    print(json.dumps({c: {g: {k: v for k, v in r.items() if k != "pairs"} for g, r in by.items()}
                      for c, by in rows.items()}))


def run_case(args: argparse.Namespace, name: str) -> dict[str, Any]:
    """Probes through the pipeline against θ, replayed to the held-out θ_u of one case."""
    case = LABEL_CASES[name]
    meta = json.loads((args.pairs / name / "pairs.json").read_text())
    flat = load_file(str(args.pairs / name / "states.safetensors"))
    states: dict[int, dict[str, torch.Tensor]] = {}
    for key, v in flat.items():
        i, _, param = key.partition("|")
        states.setdefault(int(i), {})[param] = v
    scn = build_scenario(case.config(device=args.device))
    spec, pair = scn.pair.spec, scn.pair
    k, shape = spec.num_classes, tuple(spec.input_shape)
    theta = pair.model("original", args.device)
    held = [i for i, p in enumerate(meta["pairs"]) if _tune(case.split, p) == (args.half == "tune")]
    out: dict[str, Any] = {}
    for set_name, (gen, per_class, params) in parse_probe_sets(args.probes).items():
        settings = {key: v for key, v in params.items() if key != "data"}  # data=public: nes from public starts
        public = scn.public if gen == "public" or params.get("data") == "public" else None
        attack = LabelInferenceConfig(generator=gen, per_class=per_class, max_seconds=args.max_seconds,
                                      params=settings, seed=args.seed, device=args.device)
        folder = args.out / name / f"probes_{set_name}"
        if args.reuse and (folder / "probes.json").is_file():
            probes = ProbeSet.load(folder)
        else:
            oracle = ModelOracle(theta, num_classes=k, input_shape=shape, device=args.device)
            probes = LabelInference(attack).probe(oracle, public=public, white_box=theta)
            probes.save(folder)
        print(f"[{name}] {set_name}: {len(probes)} probes, on target per class {probes.class_counts()}, "
              f"{probes.total_queries:,} queries to θ, {probes.seconds:.0f} s"
              + (f" — {probes.notes}" if probes.notes else ""), flush=True)
        t0 = time.perf_counter()
        calibration = None
        if args.calibration == "own":
            calibration = calibrate_on_own_model(theta, probes, scn.public.x, scn.public.y, pairs=args.own_nulls,
                                                 seed=args.seed, device=args.device, cache=args.out / "own_nulls")
        calibration_seconds = time.perf_counter() - t0
        t0 = time.perf_counter()
        results = []
        for i in held:
            model = build_model(spec)
            load_weights(model, states[i])
            key = meta["pairs"][i]
            deleted = [key["class"]] if key["kind"] == "deletion" else None
            ev = infer_and_evaluate(ModelOracle(theta, num_classes=k, input_shape=shape, device=args.device),
                                    ModelOracle(model, num_classes=k, input_shape=shape, device=args.device),
                                    attack, deleted, probes=probes, calibration=calibration)
            g = ev.guess
            results.append({**key, "verdict": g.verdict, "best": g.best, "rank": ev.deleted_rank,
                            "p_value": g.p_value, "detected_correct": ev.detected_correct})
        out[set_name] = summarise(results) | {
            "generator": gen, "per_class": per_class, "params": params, "probes": len(probes),
            "on_target_per_class": probes.class_counts(), "queries_original": probes.total_queries,
            "probe_seconds": round(probes.seconds, 1), "replay_seconds": round(time.perf_counter() - t0, 1),
            "calibration_seconds": round(calibration_seconds, 1), "calibration": g.calibration,
            "calibration_source": g.calibration_source, "pairs": results, "notes": probes.notes}
    return out


def summarise(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Detection, argmin accuracy and mean rank per method × p_u; false detections per null kind."""
    out: dict[str, Any] = {"no_verdict": sum(r["verdict"] == "no_verdict" for r in results), "n": len(results)}
    for kind in (*NULL_KINDS, "all_null"):
        sel = [r for r in results if r["kind"] == kind or (kind == "all_null" and r["kind"] != "deletion")]
        out[f"false/{kind}"] = _rate(sum(r["verdict"] == "detected" for r in sel), len(sel))
    for m in METHODS:
        for f in FRACTIONS:
            sel = [r for r in results if r["kind"] == "deletion" and r["method"] == m and r["fraction"] == f]
            out[f"true/{m}/{f}"] = _rate(sum(bool(r["detected_correct"]) for r in sel), len(sel))
            out[f"argmin/{m}/{f}"] = _rate(sum(r["best"] == r["class"] for r in sel), len(sel))
            ranks = [r["rank"] for r in sel if r["rank"] is not None]
            out[f"rank/{m}/{f}"] = sum(ranks) / len(ranks) if ranks else None
    return out


def _rate(hits: int, n: int) -> dict[str, Any]:
    lo, hi = _wilson(hits, n)
    return {"rate": hits / n if n else None, "hits": hits, "n": n, "ci95": [lo, hi]}


def _cell(r: dict[str, Any]) -> str:
    return "n/a" if r["rate"] is None else f"{100 * r['rate']:.0f} % ({r['hits']}/{r['n']})"


def markdown(rows: dict[str, Any]) -> str:
    """One table: case × probe set × method, detected per p_u [argmin accuracy], false detections, the fewest
    probes θ predicts as their class in any class, cost."""
    out = ["| case | probes | method | p_u = 0.1 | p_u = 0.5 | p_u = 1.0 | false detections | no verdict | "
           "probes per class (fewest) | queries to θ (s) |", "|---|---|---|---|---|---|---|---|---|---|"]
    for case, by_set in rows.items():
        for g, r in by_set.items():
            for m in METHODS:
                cells = [f"{_cell(r[f'true/{m}/{f}'])} [{_fmt(r[f'argmin/{m}/{f}']['rate'])}]" for f in FRACTIONS]
                out.append(f"| {case} | {g} | {m} | " + " | ".join(cells) + f" | {_cell(r['false/all_null'])} | "
                           f"{r['no_verdict']}/{r['n']} | {min(r['on_target_per_class'])} | "
                           f"{r['queries_original']:,} ({r['probe_seconds']:.0f}) |")
    return "\n".join(out)


def _fmt(v: float | None) -> str:
    return "n/a" if v is None or math.isnan(v) else f"{v:.2f}"


if __name__ == "__main__":
    main()
