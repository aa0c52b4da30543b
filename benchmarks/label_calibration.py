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
from unlearnleak.attacks.label_inference import (
    PROBE_GENERATORS,
    ProbeSet,
    calibrate_on_nulls,
    gap_statistic,
    generate_probes,
    null_statistic,
)
from unlearnleak.attacks.label_inference.calibration import calibrate
from unlearnleak.attacks.label_inference.decision import confidence_changes
from unlearnleak.errors import ConfigError
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
    """NAME=GENERATOR:PER_CLASS[:key=value,...] → {name: (generator, per_class, params)}.

    The generator gets the case's public data when it is ``public`` or when the params say ``data=public``
    (``nes`` then starts from public samples, starts.py); otherwise it works from θ's answers alone."""
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
            settings = {key: v for key, v in params.items() if key != "data"}
            public = scn.public if gen == "public" or params.get("data") == "public" else None
            try:
                probes = generate_probes(gen, target, k, per_class, shape, args.seed, public=public,
                                         max_seconds=args.probe_seconds, device=args.device, **settings)
            except ConfigError as exc:  # e.g. no probe within the time box: recorded, the other sets go on
                print(f"[{case.name}] {name}: {exc}", flush=True)
                meta_probes[name] = {"generator": gen, "per_class": per_class, "params": params, "failed": str(exc)}
                continue
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
MIN_PER_CLASS = 3  # the decision's default: a case whose probe set lacks a class gives no verdict


def _tune(split: str, pair: dict[str, Any]) -> bool:
    if split != "tune":
        return False
    return pair["seed"] % 2 == 0 if pair["kind"] != "deletion" else pair["class"] in TUNE_CLASSES


def analyse(out: Path, cases: list[str]) -> dict[str, Any]:
    """Choose the rule on the tuning half, report false and true detections on the held-out half."""
    pairs: list[dict[str, Any]] = []  # every pair of every case, with its case and half
    means: dict[tuple[str, str, int], torch.Tensor] = {}  # (probe set, statistic, pair) → (K,) class means
    lacking: dict[tuple[str, str], list[int]] = {}  # (case, probe set) → classes without enough probes
    cost: dict[str, dict[str, Any]] = {}
    metas = {c: json.loads((out / c / "pairs.json").read_text()) for c in cases}
    sets = [name for name in metas[cases[0]]["probes"]
            if all(name in m["probes"] and "failed" not in m["probes"][name] for m in metas.values())]
    generators = {name: metas[cases[0]]["probes"][name]["generator"] for name in sets}
    for case, meta in metas.items():
        offset = len(pairs)
        pairs += [p | {"case": case, "split": meta["split"]} for p in meta["pairs"]]
        for name in sets:
            probes = ProbeSet.load(out / case / f"probes_{name}")
            answers = load_file(str(out / case / f"answers_{name}.safetensors"))
            keep = probes.on_target
            lacking[(case, name)] = probes.lacking(MIN_PER_CLASS)
            cost.setdefault(name, {})[case] = {"queries": probes.total_queries, "probes": len(probes),
                                               "seconds": round(probes.seconds, 1),
                                               "on_target_per_class": probes.class_counts()}
            for stat in ("log_odds", "probability"):
                for i in range(len(meta["pairs"])):
                    _, m, _ = confidence_changes(probes.original_proba[keep], answers[str(i)][keep],
                                                 probes.target[keep], stat)
                    means[(name, stat, offset + i)] = m
    k = int(metas[cases[0]]["num_classes"])
    tuning_nulls = [i for i, p in enumerate(pairs) if p["kind"] != "deletion" and _tune(p["split"], p)]
    rows: dict[str, Any] = {}
    for stat, test, cal in VARIANTS:
        name = f"{stat}/{test}/{cal}"
        rows[name] = {}
        for g in sets:
            if cal.startswith("null_pairs"):  # the default training-conditional rank, or the marginal one
                calibration = calibrate_on_nulls([means[(g, stat, i)] for i in tuning_nulls], level=LEVEL, test=test,
                                                 source="tuning half",
                                                 **({"confidence": None} if cal.endswith("marginal") else {}))
            else:
                gap = gap_statistic(torch.zeros(k, dtype=torch.float64), torch.ones(k, dtype=torch.long), [0], test)
                calibration = calibrate(cal, level=LEVEL, gap=gap, test=test, statistic=stat, generator=g,
                                        top_k=1, z=3.0)
            verdicts = []
            for i, p in enumerate(pairs):
                m = means[(g, stat, i)]
                if lacking[(p["case"], g)]:
                    verdicts.append(("no_verdict", None))
                    continue
                t = null_statistic(m, test=test)
                best = int(torch.nan_to_num(m, nan=math.inf).argmin())
                verdicts.append(("detected" if t > calibration.threshold else "not_detected", best))
            rows[name][g] = _rates(pairs, verdicts, cases) | {"threshold": calibration.threshold}
    chosen = _choose(rows, sets)
    default = _default_set(rows[chosen], sets, generators,
                           {name: metas[cases[0]]["probes"][name].get("params", {}) for name in sets})
    write_json_atomic(out / "null_changes.json", _null_table(metas, means, pairs, tuning_nulls, sets, generators))
    summary = {"level": LEVEL, "chosen": chosen, "default_set": default, "variants": rows, "cost": cost,
               "generators": generators, "cases": {c: {"split": m["split"], "note": m.get("note", ""),
                                                       "metrics": m["metrics"]} for c, m in metas.items()},
               "lacking": {f"{c}/{g}": v for (c, g), v in lacking.items()},
               "pairs": {"null": sum(p["kind"] != "deletion" for p in pairs),
                         "deletion": sum(p["kind"] == "deletion" for p in pairs)},
               "split": {"tuning": "tuning cases: even null seeds, deletions of classes 0-4",
                         "held_out": "tuning cases: odd null seeds, classes 5-9; held-out cases: every pair"}}
    write_json_atomic(out / "summary.json", summary)
    _print(rows, chosen, sets)
    return {"chosen": chosen, "default_set": default,
            "held_out": {g: rows[chosen][g]["held_out"] for g in sets}}


def _rates(pairs: list[dict[str, Any]], verdicts: list[tuple[str, int | None]], cases: list[str]) -> dict[str, Any]:
    """False-detection rates per null kind and true-detection rates per method × p_u, per half (and, on the
    held-out half, per case); a pair without a verdict counts as not detected and is counted apart."""
    out: dict[str, Any] = {}
    halves = [("tuning", lambda p: _tune(p["split"], p)), ("held_out", lambda p: not _tune(p["split"], p))]
    halves += [(f"held_out/{c}", lambda p, c=c: p["case"] == c and not _tune(p["split"], p)) for c in cases]
    for half, keep in halves:
        sel = [i for i, p in enumerate(pairs) if keep(p)]
        res: dict[str, Any] = {"no_verdict": sum(verdicts[i][0] == "no_verdict" for i in sel), "pairs": len(sel)}
        for kind in (*NULL_KINDS, "all_null"):
            idx = [i for i in sel
                   if pairs[i]["kind"] == kind or (kind == "all_null" and pairs[i]["kind"] != "deletion")]
            res[f"false/{kind}"] = _rate(sum(verdicts[i][0] == "detected" for i in idx), len(idx))
        for m in METHODS:
            for frac in FRACTIONS:
                idx = [i for i in sel if pairs[i]["kind"] == "deletion" and pairs[i]["method"] == m
                       and pairs[i]["fraction"] == frac]
                res[f"true/{m}/{frac}"] = _rate(sum(verdicts[i] == ("detected", pairs[i]["class"]) for i in idx),
                                                len(idx))
                res[f"argmin/{m}/{frac}"] = _rate(sum(verdicts[i][1] == pairs[i]["class"] for i in idx), len(idx))
        out[half] = res
    return out


def _rate(hits: int, n: int) -> dict[str, Any]:
    lo, hi = _wilson(hits, n)
    return {"rate": hits / n if n else None, "hits": hits, "n": n, "ci95": [lo, hi]}


def _power(half: dict[str, Any]) -> float:
    vals = [v["rate"] for key, v in half.items() if key.startswith("true/") and v["rate"] is not None]
    return sum(vals) / len(vals) if vals else 0.0


def _choose(rows: dict[str, Any], sets: list[str]) -> str:
    """The variant with the highest mean true-detection rate on the tuning half among those whose tuning
    false-detection rate is ≤ LEVEL for every probe set."""
    def ok(name: str) -> bool:
        return all((rows[name][g]["tuning"]["false/all_null"]["rate"] or 0.0) <= LEVEL for g in sets)

    def power(name: str) -> float:
        return sum(_power(rows[name][g]["tuning"]) for g in sets) / len(sets)

    candidates = [n for n in rows if ok(n) and not n.endswith(("/fixed", "_marginal"))] or list(rows)
    return max(candidates, key=power)


def _default_set(by_set: dict[str, Any], sets: list[str], generators: dict[str, str],
                 params: dict[str, dict[str, Any]]) -> str:
    """The probe set a user without data can run (black-box, no public data) with the highest mean
    true-detection rate on the tuning half (chosen rule): the default of `infer-label`."""
    free = [g for g in sets if PROBE_GENERATORS.get(generators[g]).black_box and generators[g] != "public"
            and params[g].get("data") != "public"] or sets
    return max(free, key=lambda g: _power(by_set[g]["tuning"]))


def _null_table(metas: dict[str, Any], means: dict[tuple[str, str, int], torch.Tensor], pairs: list[dict[str, Any]],
                tuning_nulls: list[int], sets: list[str], generators: dict[str, str]) -> dict[str, Any]:
    """The tuning half's null class means per generator and statistic: the package's null_pairs table.

    A generator's entry comes from the probe set named after it (its default settings)."""
    changes: dict[str, dict[str, list[list[float]]]] = {}
    for g in sets:
        if g != generators[g]:
            continue
        for stat in ("log_odds", "probability"):
            changes.setdefault(g, {})[stat] = [[float(v) for v in means[(g, stat, i)]] for i in tuning_nulls]
    tune = [f"{c} ({m.get('note', '')})" for c, m in metas.items() if m["split"] == "tune"]
    return {"setting": "benchmarks/label_calibration.py tuning half: " + "; ".join(tune) + " — CIFAR-10, θ "
                       "fine-tuned on 500 samples; null θ_u = one more SGD step, or a handful of samples deleted by "
                       "gradient ascent or exact retraining", "num_classes": metas[next(iter(metas))]["num_classes"],
            "pairs": len(tuning_nulls), "changes": changes}


def _print(rows: dict[str, Any], chosen: str, sets: list[str]) -> None:
    print(f"chosen on the tuning half: {chosen}")
    for name, by_g in rows.items():
        for g in sets:
            h = by_g[g]["held_out"]
            false = " ".join(f"{kind}={_fmt(h[f'false/{kind}'])}" for kind in NULL_KINDS)
            true = " ".join(f"{m[:3]}{f}={_fmt(h[f'true/{m}/{f}'])}" for m in METHODS for f in FRACTIONS)
            print(f"{'*' if name == chosen else ' '} {name:32s} {g:9s} τ={by_g[g]['threshold']:7.3f} | false {false} "
                  f"| true {true}")


def _cell(r: dict[str, Any]) -> str:
    if r["rate"] is None:
        return "n/a"
    lo, hi = r["ci95"]
    return f"{100 * r['rate']:.0f} % ({r['hits']}/{r['n']}; {100 * lo:.0f}–{100 * hi:.0f})"


def markdown(summary: dict[str, Any]) -> str:
    """The power table of the chosen rule (probe set × method × p_u, with the false-detection row and the query
    cost), per held-out case, and the tuning/held-out means of every rule (held out unless a column says tuning)."""
    rows, chosen, cost = summary["variants"], summary["chosen"], summary["cost"]
    sets = list(next(iter(rows.values())))
    cases = list(summary["cases"])
    out = [f"Chosen on the tuning half: rule `{chosen}`; data-free probe set `{summary['default_set']}`.", "",
           "| probes | method | p_u = 0.1 | p_u = 0.5 | p_u = 1.0 | false detections (all nulls) | queries to θ per "
           "case |", "|---|---|---|---|---|---|---|"]
    for g in sets:
        h = rows[chosen][g]["held_out"]
        queries = ", ".join(f"{c} {cost[g][c]['queries']:,}" for c in cases)
        for m in METHODS:
            cells = [f"{_cell(h[f'true/{m}/{f}'])} [{h[f'argmin/{m}/{f}']['rate']:.2f}]" for f in FRACTIONS]
            out.append(f"| {g} | {m} | " + " | ".join(cells) + f" | {_cell(h['false/all_null'])} | {queries} |")
    out += ["", "Per held-out case (chosen rule): detected at p_u = 0.1 / p_u ≥ 0.5 (both methods), false detections, "
            "pairs without a verdict:", "", "| probes | case | p_u = 0.1 | p_u ≥ 0.5 | false | no verdict |",
            "|---|---|---|---|---|---|"]
    for g in sets:
        for c in cases:
            h = rows[chosen][g][f"held_out/{c}"]
            low = _pool(h, (0.1,))
            high = _pool(h, (0.5, 1.0))
            out.append(f"| {g} | {c} | {_cell(low)} | {_cell(high)} | {_cell(h['false/all_null'])} | "
                       f"{h['no_verdict']}/{h['pairs']} |")
    out += ["", "| rule | tuning: mean true / max false | held-out: mean true / max false |", "|---|---|---|"]
    for name, by_g in rows.items():
        cols = []
        for half in ("tuning", "held_out"):
            false = max(by_g[g][half]["false/all_null"]["rate"] or 0.0 for g in sets)
            cols.append(f"{sum(_power(by_g[g][half]) for g in sets) / len(sets):.2f} / {100 * false:.1f} %")
        out.append(f"| `{name}`{' (chosen)' if name == chosen else ''} | {cols[0]} | {cols[1]} |")
    return "\n".join(out)


def _pool(half: dict[str, Any], fractions: tuple[float, ...]) -> dict[str, Any]:
    hits = sum(half[f"true/{m}/{f}"]["hits"] for m in METHODS for f in fractions)
    n = sum(half[f"true/{m}/{f}"]["n"] for m in METHODS for f in fractions)
    return _rate(hits, n)


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
