"""Power of the own-null label test against probes per class (the label_inference_pu --quick misses).

Why: ``label_inference_pu --quick`` (ConvNet-16, public probes, 10 per class, ``own_nulls``) named the deleted
class first in 24/24 deletions but detected 14/24. Is a miss per-class noise of 10 probes (then more probes
help, and the conformal calibration keeps the level), the null pairs' spread for that class, or the statistic?
This replays what ``label_calibration.py --collect-only`` stored — a large public probe set against θ and every
θ_u's answers to it — with the first n probes of each class (n = 10 is the ``public:10`` set: the public
generator screens rows in one seeded order and keeps the first that pass), calibrated on 200 own null pairs of
θ made on the case's public rows (``own_null_answers``, computed once for the whole probe set and cached), with
the package's decision (``decide``). Rules may only be chosen on ``--half tune`` (label_cases.py's split).

Per n: false detections on the half's null pairs (the benchmark's, made on private rows), detections per
method × p_u, the argmin accuracy, and (``--detail``) per deleted class its raw mean change, residual statistic T
and p-value; the "T only" counts are the verdicts without the decision's "the candidate's raw mean must drop" clause.

Usage: python benchmarks/label_power.py --pairs benchmarks/out/label_calibration --cases convnet16 lenet
       --probes public50 --per-class 10 20 30 50 --half tune [--own-nulls 200]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from label_calibration import FRACTIONS, METHODS, _tune
from label_cases import LABEL_CASES
from unlearnleak.attacks.label_inference import ProbeSet
from unlearnleak.attacks.label_inference.calibration import calibrate_on_own_nulls
from unlearnleak.attacks.label_inference.decision import DecisionConfig, confidence_changes, decide
from unlearnleak.attacks.label_inference.own_nulls import OWN_NULL_PAIRS, own_null_answers
from unlearnleak.scenario import build_scenario
from unlearnleak.storage import save_tensors_atomic


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=Path, required=True, help="label_calibration.py --out (collected)")
    parser.add_argument("--cases", nargs="+", default=["convnet16", "lenet"], choices=list(LABEL_CASES))
    parser.add_argument("--probes", default="public50", help="the collected probe set's name")
    parser.add_argument("--per-class", nargs="+", type=int, default=[10, 20, 30, 50])
    parser.add_argument("--half", choices=("tune", "heldout"), default="tune")
    parser.add_argument("--own-nulls", type=int, default=OWN_NULL_PAIRS)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--detail", action="store_true", help="print every deletion's statistic")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    summary = {name: run_case(args, name) for name in args.cases}
    print(json.dumps(summary))


def own_answers(args: argparse.Namespace, name: str, probes: ProbeSet) -> torch.Tensor:
    """(pairs, m_on, K) answers of the own null pairs of θ to the on-target probes (cached beside the pairs)."""
    path = args.pairs / name / f"own_answers_{args.probes}_{args.own_nulls}.safetensors"
    if path.is_file():
        return load_file(str(path))["answers"]
    scn = build_scenario(LABEL_CASES[name].config())
    theta = scn.pair.model("original", "cpu")
    t0 = time.perf_counter()
    answers = torch.stack(own_null_answers(theta, probes, scn.public.x, scn.public.y, pairs=args.own_nulls))
    print(f"[{name}] {args.own_nulls} own null pairs on {answers.shape[1]} probes: "
          f"{time.perf_counter() - t0:.0f} s", flush=True)
    save_tensors_atomic(path, {"answers": answers})
    return answers


def first_per_class(target: torch.Tensor, n: int) -> torch.Tensor:
    """Indices of the first n probes of each class, in the set's order."""
    seen: dict[int, int] = {}
    keep = []
    for i, c in enumerate(target.tolist()):
        if seen.get(c, 0) < n:
            keep.append(i)
            seen[c] = seen.get(c, 0) + 1
    return torch.tensor(keep, dtype=torch.long)


def run_case(args: argparse.Namespace, name: str) -> dict[str, Any]:
    case = LABEL_CASES[name]
    folder = args.pairs / name
    meta = json.loads((folder / "pairs.json").read_text())
    probes = ProbeSet.load(folder / f"probes_{args.probes}")
    keep_on = probes.on_target
    probes = probes.subset(keep_on)
    answers = load_file(str(folder / f"answers_{args.probes}.safetensors"))
    nulls = own_answers(args, name, probes)
    pairs = meta["pairs"]
    half = [i for i, p in enumerate(pairs) if _tune(case.split, p) == (args.half == "tune")]
    before, target = probes.original_proba, probes.target
    out: dict[str, Any] = {}
    for n in args.per_class:
        idx = first_per_class(target, n)
        b, t = before[idx], target[idx]
        own_means = [confidence_changes(b, a[idx], t)[1] for a in nulls]
        cal = calibrate_on_own_nulls(own_means)
        cfg = DecisionConfig(min_per_class=min(n, 3))
        rows = []
        for i in half:
            key = pairs[i]
            after = answers[str(i)][keep_on][idx]
            d = decide(b, after, t, cfg, calibration=cal, target=t)
            first = d.ranked[0] if d.ranked else None
            t_stat = d.gap.values[0] if d.gap is not None else float("nan")
            rows.append({**key, "detected": bool(d.significant), "best": first, "T": t_stat,
                         "T_pass": t_stat > cal.threshold, "p": d.p_value,
                         "raw": float(d.means[key["class"]]) if key["kind"] == "deletion" else None})
        out[str(n)] = report(name, n, rows, cal.threshold, args.detail)
    return out


def report(name: str, n: int, rows: list[dict[str, Any]], threshold: float, detail: bool) -> dict[str, Any]:
    nulls = [r for r in rows if r["kind"] != "deletion"]
    dels = [r for r in rows if r["kind"] == "deletion"]
    res: dict[str, Any] = {"threshold": threshold,
                           "false": sum(r["detected"] for r in nulls), "false_T": sum(r["T_pass"] for r in nulls),
                           "nulls": len(nulls)}
    parts = []
    for m in METHODS:
        for f in FRACTIONS:
            sel = [r for r in dels if r["method"] == m and r["fraction"] == f]
            hit = sum(r["detected"] and r["best"] == r["class"] for r in sel)
            hit_t = sum(r["T_pass"] and r["best"] == r["class"] for r in sel)
            arg = sum(r["best"] == r["class"] for r in sel)
            res[f"{m}/{f}"] = [hit, hit_t, arg, len(sel)]
            parts.append(f"{m[:3]}{f}={hit}|{hit_t}[{arg}]/{len(sel)}")
    det = sum(r["detected"] and r["best"] == r["class"] for r in dels)
    det_t = sum(r["T_pass"] and r["best"] == r["class"] for r in dels)
    res.update({"detected": det, "detected_T": det_t, "deletions": len(dels)})
    print(f"[{name}] n={n:3d} thr={threshold:6.2f} false {res['false']}/{len(nulls)} (T only {res['false_T']}) | "
          f"detected {det}/{len(dels)} (T only {det_t}) | " + " ".join(parts), flush=True)
    if detail:
        for r in dels:
            print(f"    {r['method'][:5]} p_u={r['fraction']} c={r['class']} best={r['best']} T={r['T']:.2f} "
                  f"p={r['p']:.3f} raw={r['raw']:+.2e} det={int(r['detected'])}")
    return res


if __name__ == "__main__":
    main()
