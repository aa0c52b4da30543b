"""Label-inference calibration and power benchmark (issues 8 and 18): do "detected" verdicts mean what they say,
and how often do they fire?

Cases (``label_cases.py``): LeNet (no BN) and the ConvNet-16 with batch norm form the tuning cases; the
BN/GELU CNN with a tanh head (another architecture) and the ConvNet-16 with the 3-epoch θ0 of
``label_inference_pu --quick`` are held out whole. θ = θ0 fine-tuned on D_ft = 500 private rows (1 epoch,
SGD lr 1e-3, batch 128, BN frozen). Probe sets (``--probes``) are made once per case against θ, then replayed
to every θ_u below; θ_u's weights (``states.safetensors``) and answers (``answers_<set>.safetensors``) are
stored, so a new probe set replays without retraining and the analysis reruns without any model (``--reuse``).

θ_u kinds:

- **null pairs** (no class was deleted), ``--null-seeds`` each:
  ``step`` — θ plus one more SGD step (lr 1e-3) on a random batch of 128 retained rows;
  ``handful_ga`` / ``handful_exact`` — one random sample from each of ``--handful`` random distinct classes
  deleted, by gradient ascent (τ = 1e-3, one epoch) or by exact retraining (same data order).
- **true deletions**: for every class c and p_u ∈ {0.1, 0.5, 1.0}, the first ⌊n_c·p_u⌋ samples of class c
  deleted by exact and by approximate (gradient-ascent) unlearning; with ``--deletion-seeds S`` S − 1 more
  random subsets of that size (and unlearning seeds).

Split (chosen before looking at any result): the *tuning* half is the tuning cases' even null seeds and their
deletions of classes 0–4; the *held-out* half is their odd null seeds and classes 5–9, and every pair of the
held-out cases. Rules and the shipped null table are chosen on the tuning half only; every reported rate
comes from the held-out half. Rates carry Wilson 95 % intervals.

Usage: python benchmarks/label_calibration.py --cases lenet convnet16 [--probes NAME=GEN:PER_CLASS ...]
       [--out DIR] [--reuse] [--markdown]
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

from label_cases import LABEL_CASES, LabelCase
from unlearnleak.attacks.label_inference import ProbeSet, generate_probes
from unlearnleak.models import build_model, load_weights
from unlearnleak.oracle import ModelOracle
from unlearnleak.scenario import ForgetConfig, build_scenario, choose_forget
from unlearnleak.storage import save_tensors_atomic, write_json_atomic
from unlearnleak.training import TrainConfig, train
from unlearnleak.unlearning import UnlearningContext, state_of, unlearn

FRACTIONS = (0.1, 0.5, 1.0)
METHODS = {"exact": ("exact", {}), "approximate": ("gradient_ascent", {"lr": 1e-3, "epochs": 1})}
NULL_KINDS = ("step", "handful_ga", "handful_exact")
TUNE_CLASSES = frozenset(range(5))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="+", default=list(LABEL_CASES), choices=list(LABEL_CASES))
    parser.add_argument("--probes", nargs="+", default=list(PROBE_SETS),
                        help="probe sets NAME=GENERATOR:PER_CLASS[:key=value,...]")
    parser.add_argument("--probe-seconds", type=float, default=1800.0, help="time box of each probe set")
    parser.add_argument("--null-seeds", type=int, default=40, help="null pairs per kind (half tuning, half held out)")
    parser.add_argument("--deletion-seeds", type=int, default=1,
                        help="deletions per class × p_u × method (seed 0: the first rows of the class; then random)")
    parser.add_argument("--handful", type=int, default=5, help="samples (from distinct classes) in a handful")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--reuse", action="store_true", help="analyse the answers saved in --out, compute nothing")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "out" / "label_calibration")
    parser.add_argument("--markdown", action="store_true", help="also print the tables of docs/label_inference.md")
    parser.add_argument("--collect-only", action="store_true", help="collect the cases' answers, analyse nothing")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    if not args.reuse:
        for name in args.cases:
            collect(args, LABEL_CASES[name])
    if args.collect_only:
        return
    summary = analyse(args.out, args.cases)
    if args.markdown:
        print(markdown(json.loads((args.out / "summary.json").read_text())))
    sys.stdout.flush()
    print(json.dumps(summary))


# ------------------------------------------------------------------------------------------------- collect
PROBE_SETS = ("public=public:50", "nes=nes:10", "gradient=gradient:10")


def parse_probe_sets(items: list[str]) -> dict[str, tuple[str, int, dict[str, Any]]]:
    """NAME=GENERATOR:PER_CLASS[:key=value,...] → {name: (generator, per_class, params)}."""
    import yaml

    out: dict[str, tuple[str, int, dict[str, Any]]] = {}
    for item in items:
        name, _, rest = item.partition("=")
        gen, _, rest = rest.partition(":")
        count, _, extra = rest.partition(":")
        params = {k: yaml.safe_load(v) for k, _, v in (kv.partition("=") for kv in extra.split(",") if kv)}
        out[name] = (gen, int(count or 10), params)
    return out


def pair_keys(args: argparse.Namespace, k: int) -> list[dict[str, Any]]:
    """Every θ_u of a case: null pairs per kind and seed, deletions per seed × method × p_u × class."""
    keys: list[dict[str, Any]] = [{"kind": kind, "seed": s} for s in range(args.null_seeds) for kind in NULL_KINDS]
    keys += [{"kind": "deletion", "method": m, "fraction": p, "class": c, "seed": d}
             for d in range(args.deletion_seeds) for m in METHODS for p in FRACTIONS for c in range(k)
             if not (m == "exact" and p == 1.0 and d > 0)]  # exact deletion of a whole class: one θ_u
    return keys


def collect(args: argparse.Namespace, case: LabelCase) -> None:
    """θ_u of every pair (states, resumable), probes per probe set against θ, and θ_u's answers to them."""
    out = args.out / case.name
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    cfg = case.config(device=args.device)
    scn = build_scenario(cfg)
    spec, pair = scn.pair.spec, scn.pair
    x_ft, y_ft = scn.train.x[scn.ft_indices], scn.train.y[scn.ft_indices]
    k, shape = spec.num_classes, tuple(spec.input_shape)
    print(f"[{case.name}] setup {time.perf_counter() - started:.0f} s; accuracies {dict(scn.record.metrics)}; "
          f"D_ft per class {torch.bincount(y_ft, minlength=k).tolist()}", flush=True)
    keys = pair_keys(args, k)
    states = _unlearned_states(out, keys, spec, pair, scn.knowledge.base, x_ft, y_ft, cfg.finetune, args)
    theta = pair.model("original", args.device)
    meta_probes: dict[str, Any] = {}
    for name, (gen, per_class, params) in parse_probe_sets(args.probes).items():
        folder = out / f"probes_{name}"
        if (folder / "probes.json").is_file():
            probes = ProbeSet.load(folder)
        else:
            oracle = ModelOracle(theta, num_classes=k, input_shape=shape, device=args.device)
            target = theta if gen == "gradient" else oracle
            probes = generate_probes(gen, target, k, per_class, shape, args.seed, public=scn.public,
                                     max_seconds=args.probe_seconds, device=args.device, **params)
            probes.save(folder)
        counts = probes.class_counts()
        print(f"[{case.name}] {name}: {len(probes)} probes ({probes.num_accepted} accepted), on target per class "
              f"{counts}, {probes.total_queries:,} queries, {probes.seconds:.0f} s"
              + (f" — {probes.notes}" if probes.notes else ""), flush=True)
        meta_probes[name] = {"generator": gen, "per_class": per_class, "params": params, "count": len(probes),
                             "accepted": probes.num_accepted, "on_target_per_class": counts,
                             "total_queries": probes.total_queries, "seconds": probes.seconds, "notes": probes.notes}
        path = out / f"answers_{name}.safetensors"
        answers = load_file(str(path)) if path.is_file() else {}
        if len(answers) < len(keys):
            t0 = time.perf_counter()
            for i in range(len(keys)):
                if str(i) not in answers:
                    model = build_model(spec)
                    load_weights(model, states[i])
                    answers[str(i)] = ModelOracle(model, num_classes=k, input_shape=shape,
                                                  device=args.device).predict_proba(probes.x)
            save_tensors_atomic(path, answers)
            print(f"[{case.name}] {name}: answers of {len(keys)} θ_u in {time.perf_counter() - t0:.0f} s", flush=True)
    write_json_atomic(out / "pairs.json", {
        "case": case.name, "split": case.split, "note": case.note, "pairs": keys, "num_classes": k,
        "metrics": dict(scn.record.metrics), "probes": meta_probes,
        "collect_seconds": time.perf_counter() - started})


def _unlearned_states(out: Path, keys: list[dict[str, Any]], spec: Any, pair: Any, base: Any, x_ft: torch.Tensor,
                      y_ft: torch.Tensor, finetune: TrainConfig, args: argparse.Namespace
                      ) -> list[dict[str, torch.Tensor]]:
    """θ_u of every pair key, computed once and saved (``states.safetensors``, written every 20 pairs)."""
    path = out / "states.safetensors"
    flat = load_file(str(path)) if path.is_file() else {}
    states: dict[int, dict[str, torch.Tensor]] = {}
    for name, v in flat.items():
        i, _, param = name.partition("|")
        states.setdefault(int(i), {})[param] = v

    def context(mask: torch.Tensor, params: dict[str, Any], seed: int) -> UnlearningContext:
        return UnlearningContext(spec=spec, original=pair.original, base=base, x_train=x_ft, y_train=y_ft,
                                 forget_mask=mask, finetune=finetune, params=params, seed=seed, device=args.device)

    t0, made = time.perf_counter(), 0
    for i, key in enumerate(keys):
        if i in states:
            continue
        states[i] = _unlearned(key, context, pair, spec, x_ft, y_ft, finetune, args)
        made += 1
        if made % 20 == 0 or i == len(keys) - 1:
            save_tensors_atomic(path, {f"{j}|{p}": v for j, st in states.items() for p, v in st.items()})
            print(f"  {len(states)}/{len(keys)} θ_u ({time.perf_counter() - t0:.0f} s)", flush=True)
    if made:
        save_tensors_atomic(path, {f"{j}|{p}": v for j, st in states.items() for p, v in st.items()})
    return [states[i] for i in range(len(keys))]


def _unlearned(key: dict[str, Any], context: Any, pair: Any, spec: Any, x_ft: torch.Tensor, y_ft: torch.Tensor,
               finetune: TrainConfig, args: argparse.Namespace) -> dict[str, torch.Tensor]:
    """One θ_u: a null pair (one more SGD step, or a handful deleted) or a deletion of part of a class."""
    k, n = int(spec.num_classes), y_ft.numel()
    if key["kind"] != "deletion":
        g = torch.Generator().manual_seed(10_000 + key["seed"])
        batch = torch.randperm(n, generator=g)[:128]
        if key["kind"] == "step":
            model = build_model(spec)
            load_weights(model, pair.original)
            train(model, x_ft[batch], y_ft[batch], finetune, seed=key["seed"], device=args.device)
            return state_of(model)
        classes = torch.randperm(k, generator=g)[:args.handful]
        mask = torch.zeros(n, dtype=torch.bool)
        for c in classes.tolist():
            rows = torch.nonzero(y_ft == c).flatten()
            mask[rows[int(torch.randint(rows.numel(), (1,), generator=g))]] = True
        method, params = METHODS["approximate" if key["kind"] == "handful_ga" else "exact"]
        return unlearn(method, context(mask, params, args.seed))
    c, d = key["class"], key["seed"]
    positions = choose_forget(ForgetConfig(kind="class", class_id=c, fraction=key["fraction"]), y_ft, args.seed)
    if d > 0:  # another ⌊n_c·p_u⌋ rows of class c, and another unlearning seed
        rows = torch.nonzero(y_ft == c).flatten()
        g = torch.Generator().manual_seed(20_000 + 1000 * d + c)
        positions = rows[torch.randperm(rows.numel(), generator=g)[:positions.numel()]]
    mask = torch.zeros(n, dtype=torch.bool)
    mask[positions] = True
    method, params = METHODS[key["method"]]
    seed = args.seed if method == "exact" else args.seed + d  # exact retraining keeps θ's data order
    return unlearn(method, context(mask, params, seed))


# ------------------------------------------------------------------------------------------------- analyse
# rule variants: (statistic, test, calibration); "null_pairs" thresholds come from the tuning half's null pairs
VARIANTS = [(stat, test, cal) for stat in ("log_odds", "probability")
            for test, cal in (("student", "fixed"), ("student", "student_t"), ("student", "gaussian"),
                              ("robust", "gaussian"), ("lower", "gaussian"), ("student", "null_pairs"),
                              ("robust", "null_pairs"), ("lower", "null_pairs"), ("student", "null_pairs_marginal"),
                              ("lower", "null_pairs_marginal"))]
LEVEL = 0.05


def _tune(pair: dict[str, Any]) -> bool:
    return pair["seed"] % 2 == 0 if pair["kind"] != "deletion" else pair["class"] in TUNE_CLASSES


def analyse(out: Path) -> dict[str, Any]:
    """Choose the rule variant on the tuning half, report false and true detections on the held-out half."""
    meta = json.loads((out / "pairs.json").read_text())
    answers = load_file(str(out / "answers.safetensors"))
    pairs, k = meta["pairs"], int(meta["num_classes"])
    probes = {g: ProbeSet.load(out / f"probes_{g}") for g in meta["generators"]}
    means: dict[tuple[str, str, int], torch.Tensor] = {}  # (generator, statistic, pair) → (K,) class means
    for g, ps in probes.items():
        for stat in ("log_odds", "probability"):
            for i in range(len(pairs)):
                _, m, _ = confidence_changes(ps.original_proba, answers[f"{i}|{g}"], ps.predicted, stat)
                means[(g, stat, i)] = m
    rows: dict[str, Any] = {}
    for stat, test, cal in VARIANTS:
        name = f"{stat}/{test}/{cal}"
        rows[name] = {}
        for g in probes:
            ts = [null_statistic(means[(g, stat, i)], test=test) for i in range(len(pairs))]
            best = [int(torch.nan_to_num(means[(g, stat, i)], nan=math.inf).argmin()) for i in range(len(pairs))]
            if cal.startswith("null_pairs"):  # the default training-conditional rank, or the marginal one
                tune_null = [means[(g, stat, i)] for i, p in enumerate(pairs) if p["kind"] != "deletion" and _tune(p)]
                calibration = calibrate_on_nulls(tune_null, level=LEVEL, test=test, source="tuning half",
                                                 **({"confidence": None} if cal.endswith("marginal") else {}))
            else:
                gap = gap_statistic(torch.zeros(k, dtype=torch.float64), torch.ones(k, dtype=torch.long), [0], test)
                calibration = calibrate(cal, level=LEVEL, gap=gap, test=test, statistic=stat, generator=g,
                                        top_k=1, z=3.0)
            rows[name][g] = _rates(pairs, ts, best, calibration.threshold) | {"threshold": calibration.threshold}
    chosen = _choose(rows, list(probes))
    table = _null_table(meta, means, pairs)
    write_json_atomic(out / "null_changes.json", table)
    summary = {"level": LEVEL, "chosen": chosen, "variants": rows, "probes": meta["probes"],
               "pairs": {"null": sum(p["kind"] != "deletion" for p in pairs),
                         "deletion": sum(p["kind"] == "deletion" for p in pairs)},
               "split": {"tuning": "even null seeds, deletions of classes 0-4",
                         "held_out": "odd null seeds, deletions of classes 5-9"}}
    write_json_atomic(out / "summary.json", summary)
    _print(rows, chosen, list(probes))
    return {"chosen": chosen, "held_out": {g: rows[chosen][g]["held_out"] for g in probes}}


def _repeat(pair: dict[str, Any]) -> bool:
    """Exact unlearning of a whole class is the same θ_u for every deletion seed: counted once."""
    return (pair["kind"] == "deletion" and pair["method"] == "exact" and pair["fraction"] == 1.0
            and pair.get("seed", 0) > 0)


def _rates(pairs: list[dict[str, Any]], ts: list[float], best: list[int], threshold: float) -> dict[str, Any]:
    """False-detection rates per null kind and true-detection rates per method × p_u, on both halves."""
    out: dict[str, Any] = {}
    for half, keep in (("tuning", True), ("held_out", False)):
        sel = [i for i, p in enumerate(pairs) if _tune(p) == keep and not _repeat(p)]
        res: dict[str, Any] = {}
        for kind in (*NULL_KINDS, "all_null"):
            idx = [i for i in sel
                   if pairs[i]["kind"] == kind or (kind == "all_null" and pairs[i]["kind"] != "deletion")]
            hits = sum(ts[i] > threshold for i in idx)
            res[f"false/{kind}"] = _rate(hits, len(idx))
        for m in METHODS:
            for frac in FRACTIONS:
                idx = [i for i in sel if pairs[i]["kind"] == "deletion" and pairs[i]["method"] == m
                       and pairs[i]["fraction"] == frac]
                res[f"true/{m}/{frac}"] = _rate(sum(ts[i] > threshold and best[i] == pairs[i]["class"] for i in idx),
                                                len(idx))
                res[f"argmin/{m}/{frac}"] = _rate(sum(best[i] == pairs[i]["class"] for i in idx), len(idx))
        out[half] = res
    return out


def _rate(hits: int, n: int) -> dict[str, Any]:
    lo, hi = _wilson(hits, n)
    return {"rate": hits / n if n else None, "hits": hits, "n": n, "ci95": [lo, hi]}


def _choose(rows: dict[str, Any], generators: list[str]) -> str:
    """The variant with the highest mean true-detection rate on the tuning half among those whose tuning
    false-detection rate is ≤ LEVEL for every generator."""
    def ok(name: str) -> bool:
        return all((rows[name][g]["tuning"]["false/all_null"]["rate"] or 0.0) <= LEVEL for g in generators)

    def power(name: str) -> float:
        vals = [v["rate"] for g in generators for key, v in rows[name][g]["tuning"].items()
                if key.startswith("true/") and v["rate"] is not None]
        return sum(vals) / len(vals) if vals else 0.0

    candidates = [n for n in rows if ok(n) and not n.endswith(("/fixed", "_marginal"))] or list(rows)
    return max(candidates, key=power)


def _null_table(meta: dict[str, Any], means: dict[tuple[str, str, int], torch.Tensor],
                pairs: list[dict[str, Any]]) -> dict[str, Any]:
    """The tuning half's null class means per generator and statistic: the package's null_pairs table."""
    changes: dict[str, dict[str, list[list[float]]]] = {}
    for (g, stat, i), m in means.items():
        if pairs[i]["kind"] != "deletion" and _tune(pairs[i]):
            changes.setdefault(g, {}).setdefault(stat, []).append([float(v) for v in m])
    model = {"lenet": "LeNet", "convnet": "ConvNet-16"}.get(str(meta.get("model", "lenet")), str(meta.get("model")))
    return {"setting": f"benchmarks/label_calibration.py tuning half: {model} on CIFAR-10, θ fine-tuned on 500 "
                       "samples; null θ_u = one more SGD step, or a handful of samples deleted by gradient ascent "
                       "or exact retraining", "num_classes": meta["num_classes"], "changes": changes}


def _print(rows: dict[str, Any], chosen: str, generators: list[str]) -> None:
    print(f"chosen on the tuning half: {chosen}")
    for name, by_g in rows.items():
        for g in generators:
            h = by_g[g]["held_out"]
            false = " ".join(f"{kind}={_fmt(h[f'false/{kind}'])}" for kind in NULL_KINDS)
            true = " ".join(f"{m[:3]}{f}={_fmt(h[f'true/{m}/{f}'])}" for m in METHODS for f in FRACTIONS)
            print(f"{'*' if name == chosen else ' '} {name:32s} {g:9s} τ={by_g[g]['threshold']:7.3f} | false {false} "
                  f"| true {true}")


def _cell(r: dict[str, Any]) -> str:
    lo, hi = r["ci95"]
    return f"{100 * r['rate']:.1f} % ({r['hits']}/{r['n']}; {100 * lo:.0f}–{100 * hi:.0f})"


def markdown(summary: dict[str, Any]) -> str:
    """False detections per rule × generator × null kind, true detections of the chosen rule, and the
    tuning/held-out means per rule (all rates held out unless the column says tuning)."""
    rows, chosen = summary["variants"], summary["chosen"]
    generators = list(next(iter(rows.values())))
    out = ["| rule | generator | one more SGD step | handful, gradient ascent | handful, exact | all null |",
           "|---|---|---|---|---|---|"]
    for name in rows:
        if "/null_pairs" not in name and not name.endswith("/fixed") and name != "log_odds/student/gaussian":
            continue
        for g in generators:
            h = rows[name][g]["held_out"]
            label = f"`{name}`" + (" (chosen)" if name == chosen else "")
            out.append(f"| {label} | {g} | " + " | ".join(_cell(h[f"false/{kind}"]) for kind in
                                                            (*NULL_KINDS, "all_null")) + " |")
    out += ["", f"True detections (detected and named right) on held-out deletions, rule `{chosen}`; in brackets "
            "the argmin accuracy (detected or not):", "",
            "| generator | threshold τ | method | p_u = 0.1 | p_u = 0.5 | p_u = 1.0 |", "|---|---|---|---|---|---|"]
    for g in generators:
        h = rows[chosen][g]["held_out"]
        for m in METHODS:
            cells = [f"{_cell(h[f'true/{m}/{f}'])} [{h[f'argmin/{m}/{f}']['rate']:.2f}]" for f in FRACTIONS]
            out.append(f"| {g} | {rows[chosen][g]['threshold']:.2f} | {m} | " + " | ".join(cells) + " |")
    out += ["", "| rule | tuning: mean true / max false | held-out: mean true / max false |", "|---|---|---|"]
    for name, by_g in rows.items():
        cols = []
        for half in ("tuning", "held_out"):
            true = [v["rate"] for g in generators for key, v in by_g[g][half].items()
                    if key.startswith("true/") and v["rate"] is not None]
            false = max(by_g[g][half]["false/all_null"]["rate"] for g in generators)
            cols.append(f"{sum(true) / len(true):.2f} / {100 * false:.1f} %")
        out.append(f"| `{name}`{' (chosen)' if name == chosen else ''} | {cols[0]} | {cols[1]} |")
    return "\n".join(out)


def _fmt(r: dict[str, Any]) -> str:
    return "n/a" if r["rate"] is None else f"{r['hits']}/{r['n']}"


def _wilson(hits: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score 95 % interval of a rate hits/n."""
    if n == 0:
        return (math.nan, math.nan)
    p = hits / n
    denom = 1 + z * z / n
    mid = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, mid - half), min(1.0, mid + half))


if __name__ == "__main__":
    main()
