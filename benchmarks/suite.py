"""Feature-recovery benchmark suite: the default beside `paper`, breaching's attacks and the baselines, at equal
iterations, on registered cases (issue 16).

Each cell is (case, setting, sample): a fresh D_ft of N rows from the case's private pool (seeded by the sample
index), θ = θ0 fine-tuned on it (the paper's one step, BN frozen), D_u = k of its rows, θ_u by gradient ascent
(approx) or retraining (exact). On the cell's pair every method gets the same ``--iterations`` steps of one
trajectory (one restart):

- ours, through the pipeline's stage (``recover_and_evaluate``, labels inferred from ∇* as in an audit):
  ``default`` (``recover``'s default preset: its race and continuation together take the iterations),
  ``paper`` (the official recipe, 1 restart) and any further preset named with ``--presets`` (e.g. ``modern``);
- breaching's ``invertinggradients`` and ``modern`` (rows ``breaching_ig``, ``breaching_modern``), run by
  breaching's own code in its own environment (``breaching_peer.py``, ``breaching_runner.py``) on the same ∇*,
  model and iterations, with the true labels (as the issue measured them); skipped with a message when no
  breaching environment is found (``--breaching-python``, ``$UNLEARNLEAK_BREACHING_PYTHON``, /work/brv);
- the baselines of ``unlearnleak.metrics.baselines``: ``dataset_mean_colour``, ``own_mean_colour``,
  ``thumbnail_4x4`` (average-pooled, nearest-upsampled; before issue 16 the suite upsampled bilinearly).

Every method of a cell is its own JSON line in ``--out`` (keyed by the cell and the method's identity: a changed
default reruns only its own lines; resumable). Then a table per (case, setting) with mean ± 95 % t-interval
over samples, the issue-16 targets on the held-out half, and one final JSON line (also written to ``--summary``).
``--save-images`` keeps every reconstruction (for the picture grid, ``suite_grid.py``).

    python benchmarks/suite.py --quick                            # smoke run (5 cheap cases, 100 iterations)
    python benchmarks/suite.py --split heldout --jobs 2           # the held-out half, 1,000 iterations
    python benchmarks/suite.py --case bn-gelu-tanh --presets modern,smooth   # one case, more of our recipes
    python benchmarks/suite.py --split heldout --summary-only --markdown      # re-print the table

Cases and the tuning/held-out split are in ``suite_cases.py``; θ0s are cached (``suite_pretrain.py``).
"""

from __future__ import annotations

import argparse
import hashlib
import inspect
import json
import math
import multiprocessing
import os
import statistics
import sys
import time
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any

import torch

import suite_presets  # noqa: F401  (registers the benchmark-only presets)
from breaching_peer import find_python, run_breaching
from suite_cases import Case, Setting, cases
from unlearnleak.attacks.feature_recovery import PRESETS, InversionConfig, recover, target_gradient
from unlearnleak.attacks.feature_recovery.config import FeatureRecoveryConfig
from unlearnleak.cache import cache_dir
from unlearnleak.data import Dataset, load_dataset
from unlearnleak.errors import UnlearnleakError
from unlearnleak.experiments.executors.local import die_with_parent
from unlearnleak.experiments.pipeline import recover_and_evaluate
from unlearnleak.knowledge import ServerKnowledge
from unlearnleak.metrics import LPIPS, image_metrics, load_lpips
from unlearnleak.metrics.baselines import baseline_images
from unlearnleak.pair import ModelPair
from unlearnleak.scenario import base_of, pretrained_base
from unlearnleak.stages import Stage, theta_stages
from unlearnleak.storage import environment_record, save_tensors_atomic, write_json_atomic

VERSION = 2
RESULTS = Path(__file__).resolve().parent / "results"
QUICK_CASES = ["lenet", "cnn-nobn-random", "tabular-mlp", "mlp-cifar10", "bn-gelu-tanh"]
IMAGE_METRICS = ("psnr", "ssim", "lpips")
TABULAR_METRICS = ("mse", "max_abs_error")
PEERS = {"breaching_ig": "invertinggradients", "breaching_modern": "modern"}
BASELINES = ("dataset_mean_colour", "own_mean_colour", "thumbnail_4x4")
LPIPS_FILES = (Path(os.environ.get("UNLEARNLEAK_LPIPS_WEIGHTS", "/nonexistent")),
               Path(__file__).resolve().parents[1].parent / "shared" / "weights" / "lpips_alex_v0.1.safetensors",
               Path("/work/shared/weights/lpips_alex_v0.1.safetensors"))
# The reference for the paper-scale case: the official code on this CPU, 8 photos, 1,000 iterations.
OFFICIAL_PAPER_SCALE = {"approx-k1-N32": 15.54, "exact-k1-N32": 15.10}
PAPER_SCALE_CASE = "convnet64-paper"


def default_preset() -> str:
    """The preset ``recover`` uses when none is named (what an auditor gets)."""
    return str(inspect.signature(recover).parameters["preset"].default)


def method_identity(name: str) -> dict[str, Any]:
    """What determines a method's numbers beyond the cell: the preset's settings, or breaching's attack."""
    if name in PEERS:
        return {"peer": "breaching", "attack": PEERS[name]}
    if name == "baselines":
        return {"baselines": list(BASELINES)}
    preset = default_preset() if name == "default" else name
    return {"preset": preset, "config": config_identity(PRESETS.get(preset))}


LATER_FIELDS = (("best_by", "objective"), ("race_schedule", "compressed"), ("race_cooldown", 0.0),
                ("race_average", 0.0), ("race_agreement", 0.0), ("race_consensus", 0.0), ("race_pick", "tv"))


def config_identity(config: InversionConfig,
                    later: tuple[tuple[str, Any], ...] = LATER_FIELDS) -> dict[str, Any]:
    """An inversion config as it enters a row key: the ``later`` fields (added after rows were keyed) are left out
    while at their old behaviour, so rows from before those fields existed keep their keys."""
    dump = config.model_dump(mode="json")
    for field, unset in later:
        if dump.get(field) == unset:
            dump.pop(field, None)
    return dump


def _digest(obj: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def row_key(case: Case, setting: Setting, sample: int, method: str, args: argparse.Namespace) -> str:
    """A hash of everything that determines one method's numbers on one cell."""
    config = case.config(n_train=setting.n).model_dump(mode="json", exclude={"data_dir"})  # same files, any path
    if config.get("pretrain_rows") is None:  # unset: the key of rows from before the field existed (as schema.py)
        config.pop("pretrain_rows", None)
    identity = {"v": VERSION, "case": case.name, "config": config, "setting": setting.name, "sample": sample,
                "iterations": args.iterations, "device": args.device, "method": method,
                "identity": method_identity(method)}
    if method == "paper" and args.paper_restarts != 1:
        identity["restarts"] = args.paper_restarts
    return _digest(identity)


# What a row keeps of the race's record: enough to replay its pick rule (benchmarks/race_replay.py).
RACE_FIELDS = ("raced", "chosen_recipe", "chosen_weight", "heldout_costs", "total_variation", "eligible", "candidates",
               "tolerance", "agreement_db", "agreement_threshold", "agreements_db", "consensus")


# --- one cell (runs in a worker) -------------------------------------------------------------------------
_CACHE: dict[str, Any] = {}


def _lpips(device: str) -> LPIPS | None:
    if "lpips" not in _CACHE:
        path = next((p for p in LPIPS_FILES if p.is_file()), None)
        _CACHE["lpips"] = load_lpips(path, device=device) if path else load_lpips(device=device)
    return _CACHE["lpips"]  # type: ignore[no-any-return]


def _base(case: Case, device: str) -> tuple[Stage, Dataset]:
    if case.name not in _CACHE:
        cfg = case.config(device=device)
        train_set = load_dataset(case.dataset, cfg.train_split, cfg.data_dir, **case.dataset_options)
        _CACHE[case.name] = (base_of(cfg, train_set), train_set)
    return _CACHE[case.name]  # type: ignore[no-any-return]


def build_pair(case: Case, setting: Setting, sample: int, device: str, forget: torch.Tensor | None = None
               ) -> tuple[ModelPair, ServerKnowledge, torch.Tensor, torch.Tensor, Dataset]:
    """The cell's pair and ground truth: D_ft of N pool rows and D_u of k of them, both seeded by ``sample`` (or D_u
    at the given ``forget`` positions of the same D_ft: the same θ, another deletion); θ and θ_u are the scenario's
    cached stages (unlearnleak.stages), so a rerun reads them back bit for bit."""
    base, train_set = _base(case, device)
    cfg = case.config(n_train=setting.n, device=device)
    pool = torch.randperm(case.holdout, generator=torch.Generator().manual_seed(10_000 + sample))[:setting.n]
    x_ft, y_ft = train_set.x[pool], train_set.y[pool]
    positions = torch.randperm(setting.n, generator=torch.Generator().manual_seed(20_000 + sample))[:setting.k]
    if forget is not None:
        positions = forget
    mask = torch.zeros(setting.n, dtype=torch.bool)
    mask[positions] = True
    method = "gradient_ascent" if setting.method == "approx" else "exact"
    original, unlearned = theta_stages(cache_dir(cfg.cache_dir), base, x_ft, y_ft, pool, positions, cfg.finetune,
                                       method, seed=sample, device=device)
    pair = ModelPair(base.spec, original.state, unlearned.state)
    knowledge = ServerKnowledge(base=base.state, n_train=setting.n, n_forget=setting.k,
                                unlearning="approximate" if setting.method == "approx" else "exact",
                                batch_size=cfg.finetune.batch_size)
    return pair, knowledge, x_ft[mask], y_ft[mask], train_set


def _avg(samples: list[dict[str, Any]], keys: tuple[str, ...]) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for key in keys:
        values = [float(s[key]) for s in samples if s.get(key) is not None]
        out[key] = statistics.fmean(values) if values else None
    return out


def _ours(name: str, pair: ModelPair, knowledge: ServerKnowledge, truth: tuple[torch.Tensor, torch.Tensor],
          mode: str, sample: int, args: argparse.Namespace, image: bool,
          lpips: LPIPS | None) -> tuple[dict[str, Any], torch.Tensor | None]:
    """One of our presets through the pipeline's stage (attack → evaluation), at ``args.iterations``."""
    keys = IMAGE_METRICS if image else TABULAR_METRICS
    if name == "default":
        spec = FeatureRecoveryConfig(mode=mode, iterations=args.iterations,  # type: ignore[arg-type]
                                     seed=sample, device=args.device)
    else:
        overrides = {"method": "inversion"} if image else {"method": "inversion", "boxed": False}
        restarts = args.paper_restarts if name == "paper" else 1
        spec = FeatureRecoveryConfig(preset=name, iterations=args.iterations, restarts=restarts,  # type: ignore[arg-type]
                                     mode=mode, overrides=overrides, seed=sample, device=args.device)
    try:
        evaluation = recover_and_evaluate(pair, knowledge, spec, truth, lpips=lpips,
                                          metrics=IMAGE_METRICS if image else ())
    except (ValueError, UnlearnleakError) as exc:  # e.g. a row with no first-layer gradient: a real miss
        return {**dict.fromkeys(keys), "error": f"{type(exc).__name__}: {exc}"}, None
    rec, scored = evaluation.reconstruction, evaluation.scores
    assert scored is not None
    race = rec.config.get("race") if isinstance(rec.config, dict) else None
    result = {**_avg(scored["samples"], keys), "label_accuracy": scored["label_accuracy"], "seconds": rec.seconds,
              "optimise_seconds": rec.timings.get("optimise_seconds"), "iterations": rec.iterations,
              "sec_per_iter": rec.seconds / rec.iterations if rec.iterations else None,  # None: a closed form
              "preset": rec.preset, "method": rec.method,
              "cost": rec.best_cost, "error": None,
              "race": None if not race else {k: race.get(k) for k in RACE_FIELDS if k in race}}
    matched = rec.x.detach().cpu()[torch.tensor(scored["assignment"], dtype=torch.long)] if image else None
    return result, matched


def _peers(pair: ModelPair, knowledge: ServerKnowledge, truth_x: torch.Tensor, truth_y: torch.Tensor, mode: str,
           sample: int, args: argparse.Namespace, lpips: LPIPS | None,
           wanted: list[str]) -> dict[str, tuple[dict[str, Any], torch.Tensor | None]]:
    """breaching's attacks on the same ∇*, model and iterations, with the true labels."""
    target = target_gradient(pair, knowledge, mode)  # type: ignore[arg-type]
    model = pair.model(target.invert_on, "cpu", knowledge)
    attacks = tuple(PEERS[name] for name in wanted)
    try:
        results, info = run_breaching(Path(args.breaching_python), model, pair.spec, target, truth_y,
                                      iterations=args.iterations, seed=sample, threads=args.threads, attacks=attacks,
                                      device=args.device)
    except (RuntimeError, ValueError, OSError) as exc:
        return {name: ({**dict.fromkeys(IMAGE_METRICS), "error": str(exc)[-500:]}, None) for name in wanted}
    out = {}
    for name in wanted:
        peer = results[PEERS[name]]
        scores = _avg(image_metrics(peer.x, truth_x, lpips=lpips), IMAGE_METRICS)
        out[name] = ({**scores, "seconds": peer.seconds, "iterations": peer.iterations,
                      "sec_per_iter": peer.sec_per_iter, "versions": info["versions"], "error": None}, peer.x)
    return out


def run_cell(job: tuple[Case, Setting, int, dict[str, str], argparse.Namespace]) -> list[dict[str, Any]]:
    """The missing methods of one cell (``todo``: method → row key), on one pair."""
    case, setting, sample, todo, args = job
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    pair, knowledge, truth_x, truth_y, train_set = build_pair(case, setting, sample, args.device)
    mode = "approximate" if setting.method == "approx" else "exact"
    image = case.kind == "image"
    lpips = _lpips("cpu") if image else None  # scoring runs on the CPU (evaluate_reconstruction moves to it)
    base = {"case": case.name, "split": case.split, "setting": setting.name, "method_kind": setting.method,
            "k": setting.k, "n": setting.n, "sample": sample, "kind": case.kind, "iterations": args.iterations,
            "threads": args.threads, "default_preset": default_preset()}
    rows, images = [], {"truth": truth_x}
    for name, key in todo.items():
        if name in PEERS or name == "baselines":
            continue
        result, x = _ours(name, pair, knowledge, (truth_x, truth_y), mode, sample, args, image, lpips)
        rows.append({**base, "key": key, "name": name, "result": result})
        if x is not None:
            images[name] = x
    wanted = [n for n in todo if n in PEERS]
    if wanted and image:
        for name, (result, x) in _peers(pair, knowledge, truth_x, truth_y, mode, sample, args, lpips,
                                        wanted).items():
            rows.append({**base, "key": todo[name], "name": name, "result": result})
            if x is not None:
                images[name] = x
    if "baselines" in todo:
        if image:
            guesses = baseline_images(truth_x, pair.spec.mean)
            result = {name: _avg(image_metrics(g, truth_x, lpips=lpips), IMAGE_METRICS) for name, g in guesses.items()}
            images.update(guesses)
        else:
            public = train_set.x[case.holdout:]
            diff = public.mean(0, keepdim=True).expand_as(truth_x).double() - truth_x.double()
            result = {"mean_row": {"mse": float(diff.pow(2).mean(1).mean()),
                                   "max_abs_error": float(diff.abs().amax(1).mean())}}
        rows.append({**base, "key": todo["baselines"], "name": "baselines", "result": result})
    if args.save_images and image:
        save_cell_images(args.save_images, case.name, setting.name, sample, images)
    for row in rows:
        row["cell_seconds"] = time.perf_counter() - started
    return rows


def save_cell_images(root: Path, case: str, setting: str, sample: int, images: dict[str, torch.Tensor]) -> Path:
    """Keep a cell's images in ``root/<case>/<setting>/<sample>.safetensors`` (for ``suite_grid.py``), merged into
    what another run kept there (same keys replaced), written atomically."""
    folder = root / case / setting
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{sample}.safetensors"
    if path.is_file():
        from safetensors.torch import load_file
        images = {**load_file(str(path)), **images}
    save_tensors_atomic(path, {k: v.detach().float().contiguous() for k, v in images.items()})
    return path


# --- the table ------------------------------------------------------------------------------------------
def t_quantile(df: int) -> float:
    """0.975 quantile of Student's t with ``df`` degrees of freedom."""
    from scipy.stats import t

    return float(t.ppf(0.975, df))


def interval(values: list[float]) -> dict[str, float | int] | None:
    """Mean and the half-width of its 95 % t-interval over samples (half-width NaN for one sample)."""
    if not values:
        return None
    n = len(values)
    mean = statistics.fmean(values)
    half = t_quantile(n - 1) * statistics.stdev(values) / math.sqrt(n) if n > 1 else float("nan")
    return {"mean": mean, "ci95": half, "n": n}


def _methods_in(rows: list[dict[str, Any]]) -> list[str]:
    order = ["default", "paper", *PEERS, "modern", "smooth"]
    names = {r["name"] for r in rows if r["name"] != "baselines"}
    return [n for n in order if n in names] + sorted(names - set(order))


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (case, setting): every method's metrics as mean ± 95 % interval over the cell's samples, and the
    paired differences default − each other method."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["case"], row["setting"]), []).append(row)
    out = []
    for (case, setting), rs in groups.items():
        kind = rs[0]["kind"]
        keys = IMAGE_METRICS if kind == "image" else TABULAR_METRICS
        by_method: dict[str, dict[int, dict[str, Any]]] = {}
        for r in rs:
            by_method.setdefault(r["name"], {})[r["sample"]] = r["result"]
        entry: dict[str, Any] = {"case": case, "split": rs[0]["split"], "setting": setting, "kind": kind,
                                 "samples": len({r["sample"] for r in rs}), "methods": {}, "minus": {},
                                 "sec_per_iter": {}, "failures": {}, "races": {}}
        for name in _methods_in(rs):
            results = by_method[name]
            entry["methods"][name] = {k: interval([float(v[k]) for v in results.values() if v.get(k) is not None])
                                      for k in keys}
            entry["sec_per_iter"][name] = interval([float(v["sec_per_iter"]) for v in results.values()
                                                    if v.get("sec_per_iter") is not None
                                                    and v.get("iterations") != 0])  # closed forms take no step
            entry["failures"][name] = sum(v.get("error") is not None for v in results.values())
            if name == "default":
                entry["races"] = dict(sorted(_count(str((v.get("race") or {}).get("chosen_recipe"))
                                                    for v in results.values()).items()))
                entry["default_method"] = sorted({str(v.get("method")) for v in results.values()})
        for name, results in by_method.items():
            if name == "baselines":
                for b, scores in next(iter(results.values())).items():
                    entry["methods"][b] = {k: interval([float(v[b][k]) for v in results.values()
                                                        if v[b].get(k) is not None]) for k in scores}
        if kind == "image" and "default" in by_method:
            d = by_method["default"]
            for name in entry["methods"]:
                if name == "default":
                    continue
                if name in by_method:
                    other = by_method[name]
                    pairs = [(d[s]["psnr"], other[s]["psnr"]) for s in d if s in other
                             and d[s].get("psnr") is not None and other[s].get("psnr") is not None]
                else:  # a baseline
                    base = by_method.get("baselines", {})
                    pairs = [(d[s]["psnr"], base[s][name]["psnr"]) for s in d if s in base
                             and d[s].get("psnr") is not None]
                entry["minus"][name] = interval([a - b for a, b in pairs])
        out.append(entry)
    return sorted(out, key=lambda e: (e["split"] != "tune", e["case"], e["setting"]))


def _count(values: Iterator[str] | Any) -> dict[str, int]:
    out: dict[str, int] = {}
    for v in values:
        out[v] = out.get(v, 0) + 1
    return out


def _psnr(entry: dict[str, Any], method: str) -> float | None:
    cell = entry["methods"].get(method, {}).get("psnr")
    return None if cell is None else float(cell["mean"])


def targets(table: list[dict[str, Any]], cases_by_name: dict[str, Case]) -> dict[str, Any]:
    """Issue 16's targets on the held-out image cells, each as pass/miss with the cells that decide it."""
    cells = [e for e in table if e["split"] == "heldout" and e["kind"] == "image" and "default" in e["methods"]]
    if not cells:
        return {"evaluated": False, "reason": "no held-out image cells in these results"}
    with_modern = [e for e in cells if e["minus"].get("breaching_modern") is not None]
    below = [(e["case"], e["setting"], round(e["minus"]["breaching_modern"]["mean"], 2)) for e in with_modern
             if e["minus"]["breaching_modern"]["mean"] < -0.5]
    trained = [e for e in with_modern if cases_by_name[e["case"]].pretrain.epochs > 0
               and e.get("default_method") != ["analytic"]]
    gain = statistics.fmean(e["minus"]["breaching_modern"]["mean"] for e in trained) if trained else None
    paper_scale = {}
    for e in cells:
        if e["case"] == PAPER_SCALE_CASE and e["setting"] in OFFICIAL_PAPER_SCALE:
            ours = _psnr(e, "default")
            paper_scale[e["setting"]] = {"default": ours, "official": OFFICIAL_PAPER_SCALE[e["setting"]],
                                         "pass": ours is not None and ours >= OFFICIAL_PAPER_SCALE[e["setting"]]}
    slow = []
    for e in with_modern:
        ours, peer = e["sec_per_iter"].get("default"), e["sec_per_iter"].get("breaching_modern")
        if ours and peer and ours["mean"] > 1.2 * peer["mean"]:
            slow.append((e["case"], e["setting"], round(ours["mean"] * 1e3, 2), round(peer["mean"] * 1e3, 2)))
    measured = bool(with_modern) or None  # None: no breaching rows here, so "not measured" (never a MISS)
    return {
        "evaluated": True, "cells": len(cells), "cells_with_breaching": len(with_modern),
        "never_0.5dB_below_breaching_modern": {"pass": measured and not below, "misses": below},
        "2dB_above_breaching_modern_on_trained_nets": {
            "pass": None if gain is None else gain >= 2.0, "mean_gain_db": gain,
            "cells": [(e["case"], e["setting"]) for e in trained]},
        "paper_scale_at_least_official_code": paper_scale or {"pass": None, "reason": "case not run"},
        "iteration_at_most_1.2x_breaching": {"pass": measured and not slow, "misses_ms_ours_vs_breaching": slow},
    }


def _fmt(cell: dict[str, Any] | None, spec: str = ".2f") -> str:
    if cell is None:
        return "–"
    half = cell["ci95"]
    return f"{cell['mean']:{spec}}±{half:{spec}}" if half == half else f"{cell['mean']:{spec}}"


COLUMNS = ("default", "paper", "breaching_ig", "breaching_modern", "dataset_mean_colour", "own_mean_colour",
           "thumbnail_4x4")


def print_table(table: list[dict[str, Any]]) -> None:
    """Human-readable rows: PSNR per method (mean ± 95 % interval), default − breaching modern, the race's picks."""
    for split in ("tune", "heldout"):
        part = [e for e in table if e["split"] == split]
        if not part:
            continue
        print(f"\n{'TUNING' if split == 'tune' else 'HELD-OUT'} half — PSNR dB, mean±95 % interval")
        extra = sorted({m for e in part for m in e["methods"]} - set(COLUMNS))
        cols = [*COLUMNS, *extra]
        print(f"{'case':20s} {'setting':14s} {'n':>2s} " + " ".join(f"{c[:13]:>13s}" for c in cols)
              + f" {'d−modern':>12s}  picks")
        for e in part:
            if e["kind"] != "image":
                mse = {m: _fmt(e["methods"].get(m, {}).get("mse"), ".3g") for m in ("default", "paper")}
                print(f"{e['case']:20s} {e['setting']:14s} {e['samples']:2d} MSE default {mse['default']} paper "
                      f"{mse['paper']}")
                continue
            print(f"{e['case']:20s} {e['setting']:14s} {e['samples']:2d} "
                  + " ".join(f"{_fmt(e['methods'].get(c, {}).get('psnr')):>13s}" for c in cols)
                  + f" {_fmt(e['minus'].get('breaching_modern')):>12s}  {e['races']}")


def markdown_table(table: list[dict[str, Any]]) -> str:
    """The image cells as a Markdown table (mean ± 95 % interval), for benchmarks/README.md."""
    lines = ["| half | case | setting | n | default | `paper` | breaching IG | breaching modern | default − modern | "
             "dataset mean colour | own mean colour | 4×4 thumbnail | SSIM default / modern | LPIPS default / modern "
             "| ms/iter default / IG / modern | race picks |", "|" + "---|" * 16]
    for e in table:
        if e["kind"] != "image":
            continue
        m = e["methods"]
        ss, lp = (f"{_fmt(m.get('default', {}).get(k))} / {_fmt(m.get('breaching_modern', {}).get(k))}"
                  for k in ("ssim", "lpips"))
        ms = " / ".join(f"{s['mean'] * 1e3:.1f}" if (s := e["sec_per_iter"].get(n)) else "–"
                        for n in ("default", "breaching_ig", "breaching_modern"))
        picks = ", ".join(f"{k} {v}" for k, v in e["races"].items())
        lines.append(f"| {e['split']} | {e['case']} | {e['setting']} | {e['samples']} | "
                     + " | ".join(_fmt(m.get(c, {}).get("psnr")) for c in COLUMNS[:4])
                     + f" | {_fmt(e['minus'].get('breaching_modern'))} | "
                     + " | ".join(_fmt(m.get(c, {}).get("psnr")) for c in COLUMNS[4:])
                     + f" | {ss} | {lp} | {ms} | {picks} |")
    return "\n".join(lines)


def markdown_targets(verdict: dict[str, Any]) -> str:
    """The targets as Markdown bullets: PASS/MISS, and every miss with its case and figure."""
    if not verdict["evaluated"]:
        return f"- targets not evaluated: {verdict['reason']}"
    word = {True: "PASS", False: "MISS", None: "not measured"}
    below = verdict["never_0.5dB_below_breaching_modern"]
    gain = verdict["2dB_above_breaching_modern_on_trained_nets"]
    slow = verdict["iteration_at_most_1.2x_breaching"]
    out = [f"- default ≥ breaching modern − 0.5 dB on every case: **{word[below['pass']]}**"
           + "".join(f"; miss {c} {s}: default − modern {d:+.2f} dB" for c, s, d in below["misses"]),
           f"- default ≥ breaching modern + 2 dB on average over the trained-network cells: **{word[gain['pass']]}**"
           + (f" (mean default − modern {gain['mean_gain_db']:+.2f} dB over {len(gain['cells'])} cells)"
              if gain["mean_gain_db"] is not None else "")]
    scale = verdict["paper_scale_at_least_official_code"]
    if "reason" in scale:
        out.append(f"- paper-scale case ≥ the official code: **not measured** ({scale['reason']})")
    for setting, v in scale.items():
        if isinstance(v, dict):
            ours = "–" if v["default"] is None else f"{v['default']:.2f}"
            out.append(f"- paper-scale case {setting} ≥ the official code's {v['official']:.2f} dB: "
                       f"**{word[v['pass']]}** (default {ours} dB)")
    out.append(f"- one iteration ≤ 1.2 × breaching modern's: **{word[slow['pass']]}**"
               + "".join(f"; miss {c} {s}: {a:.1f} ms vs {b:.1f} ms" for c, s, a, b in
                         slow["misses_ms_ours_vs_breaching"]))
    return "\n".join(out)


# --- driver ---------------------------------------------------------------------------------------------
def read_rows(path: Path, field: str = "name") -> dict[str, dict[str, Any]]:
    """Existing JSON lines by key, those that have ``field`` (a method's row: its name; other scripts' rows name
    their own); a torn last line from an interrupted run is ignored."""
    rows: dict[str, dict[str, Any]] = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if row.get("key") and row.get(field):
                rows[row["key"]] = row
    return rows


def append_row(path: Path, row: dict[str, Any]) -> None:
    """One JSON line, written with a single ``write`` call and flushed (resume reads whole lines only)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        handle.write(json.dumps(row) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def methods_for(case: Case, args: argparse.Namespace) -> list[str]:
    """The method rows a cell of ``case`` should have: ours, breaching's (images, when available), baselines."""
    names = [*(["default"] if not args.no_default else []), *(["paper"] if not args.no_paper else []), *args.presets]
    if case.kind == "image" and args.breaching_python:
        names += [n for n, attack in PEERS.items() if attack in args.breaching_attacks]
    return [*names, "baselines"]


def jobs_for(args: argparse.Namespace, existing: dict[str, dict[str, Any]]) -> tuple[list[Any], list[str]]:
    """The cells with missing rows (each with its method → key map), and every selected row key."""
    selected = cases(args.split, args.case or (QUICK_CASES if args.quick else None))
    jobs, keys = [], []
    for case in selected:
        settings = case.settings[:1] if args.quick else case.settings
        if args.setting:
            settings = tuple(s for s in case.settings if s.name in args.setting)
        for setting in settings:
            for sample in range(args.samples):
                wanted = {m: row_key(case, setting, sample, m, args) for m in methods_for(case, args)}
                keys += list(wanted.values())
                todo = {m: k for m, k in wanted.items() if k not in existing}
                if todo:
                    jobs.append((case, setting, sample, todo, args))
    return jobs, keys


def _run(jobs: list[Any], processes: int) -> Iterator[list[dict[str, Any]]]:
    if processes <= 1:
        for job in jobs:
            yield run_cell(job)
        return
    with ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn"),
                             initializer=die_with_parent, initargs=(os.getpid(),)) as pool:  # none outlives us
        pending: set[Future[list[dict[str, Any]]]] = {pool.submit(run_cell, job) for job in jobs}
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                yield future.result()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="5 cheap cases, 1 setting, 8 samples, 100 iterations")
    parser.add_argument("--split", choices=("tune", "heldout", "all"), default="all")
    parser.add_argument("--case", action="append", help="run only this case (repeatable)")
    parser.add_argument("--setting", action="append", help="run only this setting, e.g. approx-k1-N32")
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--iterations", type=int, default=1000, help="steps of one trajectory, for every method")
    parser.add_argument("--presets", type=lambda s: [p for p in s.split(",") if p], default=[],
                        help="further presets of ours to run beside default and paper, e.g. modern,smooth")
    parser.add_argument("--paper-restarts", type=int, default=1, help="restarts of the paper rows (the paper: 5)")
    parser.add_argument("--no-default", action="store_true", help="skip the default's rows (e.g. to measure a "
                        "--presets rule beside default rows recorded in another file)")
    parser.add_argument("--no-paper", action="store_true", help="skip the paper recipe's rows (saves a trajectory "
                        "per cell on the costly cases)")
    parser.add_argument("--breaching-python", help="python of breaching's own environment (default: "
                        "$UNLEARNLEAK_BREACHING_PYTHON, else /work/brv/bin/python when present)")
    parser.add_argument("--no-breaching", action="store_true", help="skip breaching's rows")
    parser.add_argument("--breaching-attacks", type=lambda s: [p for p in s.split(",") if p],
                        default=list(PEERS.values()), help=f"breaching's attacks to run (default: "
                        f"{','.join(PEERS.values())}; each costs about one trajectory per cell)")
    parser.add_argument("--save-images", type=Path, help="keep every reconstruction under this folder")
    parser.add_argument("--jobs", type=int, default=1, help="cells in parallel processes")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per worker (and for breaching)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, help="JSON lines (default results/suite_v2.jsonl, quick: "
                        "suite_v2_quick.jsonl)")
    parser.add_argument("--summary", type=Path, help="summary JSON (default beside --out, .json)")
    parser.add_argument("--summary-only", action="store_true", help="only re-print the table from --out")
    parser.add_argument("--markdown", action="store_true", help="also print the table as Markdown")
    args = parser.parse_args()
    unknown = [a for a in args.breaching_attacks if a not in PEERS.values()]
    if unknown:
        print(f"error: --breaching-attacks {unknown}: choose among {list(PEERS.values())}", file=sys.stderr)
        return 2
    if args.quick and args.iterations == 1000:
        args.iterations = 100
    if args.no_breaching:
        args.breaching_python, message = None, "breaching rows skipped: --no-breaching"
    else:
        python, message = find_python(args.breaching_python)
        args.breaching_python = str(python) if python else None
    print(message, flush=True)
    out = args.out or RESULTS / ("suite_v2_quick.jsonl" if args.quick else "suite_v2.jsonl")
    summary_path = args.summary or out.with_suffix(".json")
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    existing = read_rows(out)
    jobs, keys = jobs_for(args, existing)
    print(f"{len(keys)} rows selected, {sum(k in existing for k in keys)} already in {out}, {len(jobs)} cells to run; "
          f"default preset {default_preset()!r}, {args.iterations} iterations", flush=True)
    if not args.summary_only and jobs:
        for case in {job[0].name: job[0] for job in jobs}.values():  # θ0s first, in this process (cached)
            pretrained_base(case.config(device=args.device))
        for rows in _run(jobs, args.jobs):
            for row in rows:
                append_row(out, row)
                existing[row["key"]] = row
            cell = rows[0]
            shown = {r["name"]: r["result"].get("psnr") for r in rows if r["name"] != "baselines"}
            print(f"{cell['case']:20s} {cell['setting']:14s} #{cell['sample']}  "
                  + "  ".join(f"{n} {v:.2f}" if v is not None else f"{n} failed" for n, v in shown.items())
                  + f"  ({cell['cell_seconds']:.0f} s)", flush=True)
    rows = [existing[k] for k in keys if k in existing]
    table = summarise(rows)
    print_table(table)
    if args.markdown:
        print("\n" + markdown_table(table))
    from suite_cases import CASES

    verdict = targets(table, {n: CASES.get(n) for n in CASES})
    print("\nTargets (held-out half):" if verdict["evaluated"] else f"\nTargets: {verdict['reason']}")
    if verdict["evaluated"]:
        for name, value in verdict.items():
            if isinstance(value, dict):
                print(f"  {name:44s} {json.dumps(value)}")
    if args.markdown:
        print("\n" + markdown_targets(verdict))
    summary = {"rows": len(rows), "rows_missing": len(keys) - len(rows), "default": default_preset(),
               "iterations": args.iterations, "samples": args.samples, "breaching": message, "targets": verdict,
               "seconds": time.perf_counter() - started}
    write_json_atomic(summary_path, {"summary": summary, "table": table,
                                     "args": {k: str(v) for k, v in vars(args).items()},
                                     "environment": environment_record()})
    print(json.dumps(summary, default=str), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
