"""Feature-recovery benchmark suite: `paper` vs the default at equal wall time, with baselines, on registered cases.

Each cell is (case, setting, sample): a fresh D_ft of N rows from the case's private pool (seeded by the sample
index), θ = θ0 fine-tuned on it (the paper's one step, BN frozen), D_u = k of its rows, θ_u by gradient ascent
(approx) or retraining (exact). `paper` runs ``--paper-iterations`` steps × ``--paper-restarts``; the default
(``recover``'s default preset) then gets the same optimisation seconds on the same pair, in the same worker.
Baselines: each true image's mean colour, and its 4×4 thumbnail upsampled bilinearly (tabular: the mean public
row). Labels are inferred from ∇* as in an audit. One JSON line per cell goes to ``--out`` (resumable: a cell
whose key is already there is skipped), then a summary table per (case, setting) with mean ± 95 % t-interval
over samples, the item-3 targets on the held-out half, and one final JSON line (also written to ``--summary``).

    python benchmarks/suite.py --quick                       # smoke run (5 cheap cases, ≤ 5 min)
    python benchmarks/suite.py --split heldout --jobs 2      # the held-out half
    python benchmarks/suite.py --case convnet16-60 --jobs 2  # one case (rerun per case after a change)
    python benchmarks/suite.py --summary-only                # re-print the table from the JSON lines

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
from torch.nn import functional as F

from suite_cases import Case, Setting, cases
from unlearnleak.attacks.feature_recovery import PRESETS, recover
from unlearnleak.cache import cache_dir
from unlearnleak.data import Dataset, load_dataset
from unlearnleak.errors import UnlearnleakError
from unlearnleak.experiments.pipeline import recover_and_evaluate
from unlearnleak.experiments.schema import FeatureRecoverySpec
from unlearnleak.knowledge import ServerKnowledge
from unlearnleak.metrics import LPIPS, image_metrics, load_lpips
from unlearnleak.pair import ModelPair
from unlearnleak.scenario import base_of, pretrained_base
from unlearnleak.stages import Stage, theta_stages
from unlearnleak.storage import environment_record, write_json_atomic

VERSION = 1
RESULTS = Path(__file__).resolve().parent / "results"
QUICK_CASES = ["lenet", "cnn-nobn-random", "tabular-mlp", "mlp-cifar10", "bn-gelu-tanh"]
IMAGE_METRICS = ("psnr", "ssim", "lpips")
TABULAR_METRICS = ("mse", "max_abs_error")
LPIPS_FILES = (Path(os.environ.get("UNLEARNLEAK_LPIPS_WEIGHTS", "/nonexistent")),
               Path(__file__).resolve().parents[1].parent / "shared" / "weights" / "lpips_alex_v0.1.safetensors",
               Path("/work/shared/weights/lpips_alex_v0.1.safetensors"))


def default_preset() -> str:
    """The preset ``recover`` uses when none is named (what an auditor gets)."""
    return str(inspect.signature(recover).parameters["preset"].default)


def default_identity() -> dict[str, Any]:
    """The default's name and settings: part of each cell key, so a changed default reruns its cells."""
    name = default_preset()
    config = PRESETS.get(name).model_dump(mode="json") if name in PRESETS else None
    return {"preset": name, "config": config}


def _key_object(case: Case, setting: Setting, sample: int, args: argparse.Namespace,
                data_dir: str | None = None) -> dict[str, Any]:
    config = case.config(n_train=setting.n).model_dump(mode="json", exclude={"data_dir"})  # same files, any path
    if data_dir is not None:
        config["data_dir"] = data_dir
    return {"v": VERSION, "case": case.name, "config": config, "setting": setting.name, "sample": sample,
            "paper_iterations": args.paper_iterations, "paper_restarts": args.paper_restarts,
            "default": default_identity(), "device": args.device}


def _digest(obj: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def cell_key(case: Case, setting: Setting, sample: int, args: argparse.Namespace) -> str:
    """A hash of everything that determines a cell's numbers (case recipe, setting, sample, budgets, default)."""
    return _digest(_key_object(case, setting, sample, args))


# The first rows of results/suite*.jsonl were keyed with the data folder's path in the key; these are the two
# paths of the same shared folder they were written with (same files), so those rows still resume.
LEGACY_DATA_DIRS = ("/work/shared/data", "/work/wt/shared/data")


def cell_keys(case: Case, setting: Setting, sample: int, args: argparse.Namespace) -> set[str]:
    """The current key and the legacy (path-naming) keys of a cell."""
    return {cell_key(case, setting, sample, args)} | {
        _digest(_key_object(case, setting, sample, args, d)) for d in LEGACY_DATA_DIRS}


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


def build_pair(case: Case, setting: Setting, sample: int, device: str
               ) -> tuple[ModelPair, torch.Tensor, torch.Tensor, Dataset]:
    """The cell's pair and ground truth: D_ft of N pool rows and D_u of k of them, both seeded by ``sample``; θ and
    θ_u are the scenario's cached stages (unlearnleak.stages), so a rerun reads them back bit for bit."""
    base, train_set = _base(case, device)
    cfg = case.config(n_train=setting.n, device=device)
    pool = torch.randperm(case.holdout, generator=torch.Generator().manual_seed(10_000 + sample))[:setting.n]
    x_ft, y_ft = train_set.x[pool], train_set.y[pool]
    positions = torch.randperm(setting.n, generator=torch.Generator().manual_seed(20_000 + sample))[:setting.k]
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


def baselines(truth: torch.Tensor) -> dict[str, torch.Tensor]:
    """Images an attacker-free guess could give: each image's mean colour; its 4×4 thumbnail upsampled."""
    mean = truth.mean(dim=(2, 3), keepdim=True).expand_as(truth).contiguous()
    thumb = F.interpolate(F.adaptive_avg_pool2d(truth, 4), size=truth.shape[-2:], mode="bilinear",
                          align_corners=False).clamp(0, 1)
    return {"mean_colour": mean, "thumbnail": thumb}


def _avg(samples: list[dict[str, Any]], keys: tuple[str, ...]) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for key in keys:
        values = [float(s[key]) for s in samples if s.get(key) is not None]
        out[key] = statistics.fmean(values) if values else None
    return out


def run_cell(job: tuple[Case, Setting, int, str, argparse.Namespace]) -> dict[str, Any]:
    """`paper`, then the default at `paper`'s optimisation seconds, then the baselines, on one cell."""
    case, setting, sample, key, args = job
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    pair, knowledge, truth_x, truth_y, train_set = build_pair(case, setting, sample, args.device)
    mode = "approximate" if setting.method == "approx" else "exact"
    image = case.kind == "image"
    lpips = _lpips("cpu") if image else None  # scoring runs on the CPU (evaluate_reconstruction moves to it)
    keys = IMAGE_METRICS if image else TABULAR_METRICS
    row: dict[str, Any] = {"key": key, "case": case.name, "split": case.split, "setting": setting.name,
                           "method": setting.method, "k": setting.k, "n": setting.n, "sample": sample,
                           "kind": case.kind, "paper_iterations": args.paper_iterations,
                           "paper_restarts": args.paper_restarts, "default_preset": default_preset()}
    paper_overrides: dict[str, Any] = {} if image else {"boxed": False}  # rows are standardised, not in [0, 1]
    specs = {  # both attacks go through the pipeline's stage (attack → evaluation), as every entry point does
        "paper": lambda budget: FeatureRecoverySpec(preset="paper", iterations=args.paper_iterations,
                                                    restarts=args.paper_restarts, mode=mode,
                                                    overrides={"method": "inversion", **paper_overrides}),
        "default": lambda budget: FeatureRecoverySpec(mode=mode, time_budget=budget,
                                                      iterations=args.default_max_iterations if image else None),
    }
    budget: float | None = None
    for name, spec in specs.items():
        try:
            evaluation = recover_and_evaluate(pair, knowledge, spec(budget), (truth_x, truth_y), seed=sample,
                                              device=args.device, lpips=lpips,
                                              metrics=("psnr", "ssim", "lpips") if image else ())
        except (ValueError, UnlearnleakError) as exc:  # e.g. a row with no first-layer gradient: a real miss
            row[name] = {**dict.fromkeys(keys), "error": f"{type(exc).__name__}: {exc}"}
            continue
        rec, scored = evaluation.reconstruction, evaluation.scores
        assert scored is not None  # the truth was given
        if name == "paper":
            budget = float(rec.timings.get("optimise_seconds", rec.seconds))
        row[name] = {**_avg(scored["samples"], keys), "label_accuracy": scored["label_accuracy"],
                     "seconds": rec.seconds, "iterations": rec.iterations, "preset": rec.preset,
                     "method": rec.method, "cost": rec.best_cost, "error": None}
    if image:
        for name, guess in baselines(truth_x).items():
            row[name] = _avg(image_metrics(guess, truth_x, lpips=lpips), keys)
    else:
        public = train_set.x[case.holdout:]
        guess = public.mean(0, keepdim=True).expand_as(truth_x)
        diff = (guess.double() - truth_x.double())
        row["mean_row"] = {"mse": float(diff.pow(2).mean(1).mean()), "max_abs_error": float(diff.abs().amax(1).mean())}
    row["budget_seconds"] = budget
    row["cell_seconds"] = time.perf_counter() - started
    return row


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


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (case, setting): every method's metrics as mean ± 95 % interval over the cell's samples."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["case"], row["setting"]), []).append(row)
    out = []
    for (case, setting), rs in groups.items():
        kind = rs[0]["kind"]
        keys = IMAGE_METRICS if kind == "image" else TABULAR_METRICS
        methods = ("paper", "default", "mean_colour", "thumbnail") if kind == "image" else (
            "paper", "default", "mean_row")
        entry: dict[str, Any] = {"case": case, "split": rs[0]["split"], "setting": setting, "kind": kind,
                                 "samples": len(rs)}
        for m in methods:
            entry[m] = {k: interval([float(r[m][k]) for r in rs if r[m].get(k) is not None]) for k in keys}
        both = [r for r in rs if r["paper"].get("error") is None and r["default"].get("error") is None]
        entry["default_minus_paper_psnr"] = interval([r["default"]["psnr"] - r["paper"]["psnr"] for r in both]) \
            if kind == "image" else None
        entry["failures"] = {m: sum(r[m].get("error") is not None for r in rs) for m in ("paper", "default")}
        entry["default_preset"] = sorted({r["default"].get("preset") or "failed" for r in rs})
        entry["default_method"] = sorted({r["default"].get("method") or "failed" for r in rs})
        entry["budget_seconds"] = statistics.fmean(r["budget_seconds"] or 0.0 for r in rs)
        entry["label_accuracy"] = {m: statistics.fmean(r[m]["label_accuracy"] for r in rs if r[m].get("error") is None)
                                   if any(r[m].get("error") is None for r in rs) else None
                                   for m in ("paper", "default")}
        out.append(entry)
    return out


def _mean(entry: dict[str, Any], method: str, metric: str) -> float | None:
    cell = entry[method].get(metric)
    return None if cell is None else float(cell["mean"])


def targets(table: list[dict[str, Any]]) -> dict[str, Any]:
    """Item 3 on the held-out image cells: never > 0.5 dB below paper; ≥ 3 dB above on average with lower
    LPIPS; beats the thumbnail wherever paper does. Each as pass/miss with the cells that decide it."""
    cells = [e for e in table if e["split"] == "heldout" and e["kind"] == "image"]
    if not cells:
        return {"evaluated": False, "reason": "no held-out image cells in these results"}
    below = [(e["case"], e["setting"], e["default_minus_paper_psnr"]["mean"]) for e in cells
             if e["default_minus_paper_psnr"]["mean"] < -0.5]
    gains = [e["default_minus_paper_psnr"]["mean"] for e in cells]
    lp_d = [v for e in cells if (v := _mean(e, "default", "lpips")) is not None]
    lp_p = [v for e in cells if (v := _mean(e, "paper", "lpips")) is not None]
    thumb_miss = []
    for e in cells:
        p, d, t = _mean(e, "paper", "psnr"), _mean(e, "default", "psnr"), _mean(e, "thumbnail", "psnr")
        if p is not None and d is not None and t is not None and p > t and d <= t:
            thumb_miss.append((e["case"], e["setting"], round(d, 2), round(t, 2)))
    mean_gain = statistics.fmean(gains)
    lpips_lower = bool(lp_d and lp_p and len(lp_d) == len(lp_p) and statistics.fmean(lp_d) < statistics.fmean(lp_p))
    # the same mean over the cells where the default inverted (no closed form, e.g. an image MLP's first layer)
    inverted = [e for e in cells if e.get("default_method", ["inversion"]) == ["inversion"]]
    lpi_d = [v for e in inverted if (v := _mean(e, "default", "lpips")) is not None]
    lpi_p = [v for e in inverted if (v := _mean(e, "paper", "lpips")) is not None]
    return {
        "evaluated": True, "cells": len(cells), "cases": sorted({e["case"] for e in cells}),
        "never_0.5dB_below_paper": {"pass": not below, "misses": below,
                                    "worst": min(((e["default_minus_paper_psnr"]["mean"], e["case"], e["setting"])
                                                  for e in cells), default=None)},
        "mean_gain_3dB_and_lower_lpips": {"pass": mean_gain >= 3.0 and lpips_lower, "mean_gain_db": mean_gain,
                                          "lpips_default": statistics.fmean(lp_d) if lp_d else None,
                                          "lpips_paper": statistics.fmean(lp_p) if lp_p else None},
        "beats_thumbnail_where_paper_does": {"pass": not thumb_miss, "misses": thumb_miss},
        "inversion_cells_only": {
            "cells": len(inverted),
            "mean_gain_db": statistics.fmean(e["default_minus_paper_psnr"]["mean"] for e in inverted)
            if inverted else None,
            "lpips_default": statistics.fmean(lpi_d) if lpi_d else None,
            "lpips_paper": statistics.fmean(lpi_p) if lpi_p else None},
    }


def _num(v: float | None) -> str:
    return "failed" if v is None else f"{v:.3g}" if abs(v) < 1e-2 or abs(v) >= 1e3 else f"{v:.2f}"


def _fmt(cell: dict[str, Any] | None, spec: str = ".2f") -> str:
    if cell is None:
        return "–"
    half = cell["ci95"]
    return f"{cell['mean']:{spec}}±{half:{spec}}" if half == half else f"{cell['mean']:{spec}}"


def print_table(table: list[dict[str, Any]]) -> None:
    """Human-readable rows: PSNR / SSIM / LPIPS (or MSE for rows) per method, mean ± 95 % interval."""
    for split in ("tune", "heldout"):
        part = [e for e in table if e["split"] == split]
        if not part:
            continue
        print(f"\n{'TUNING' if split == 'tune' else 'HELD-OUT'} half")
        print(f"{'case':22s} {'setting':16s} {'n':>2s}  {'paper PSNR':>12s} {'default PSNR':>12s} "
              f"{'Δ dB':>11s} {'mean-col':>11s} {'thumb':>11s}  {'SSIM p/d':>11s}  {'LPIPS p/d':>11s}  {'s':>5s}")
        for e in part:
            if e["kind"] == "image":
                print(f"{e['case']:22s} {e['setting']:16s} {e['samples']:2d}  {_fmt(e['paper']['psnr']):>12s} "
                      f"{_fmt(e['default']['psnr']):>12s} {_fmt(e['default_minus_paper_psnr']):>11s} "
                      f"{_fmt(e['mean_colour']['psnr']):>11s} {_fmt(e['thumbnail']['psnr']):>11s}  "
                      f"{_fmt(e['paper']['ssim'], '.2f')}/{_fmt(e['default']['ssim'], '.2f')}  "
                      f"{_fmt(e['paper']['lpips'], '.2f')}/{_fmt(e['default']['lpips'], '.2f')}  "
                      f"{e['budget_seconds']:5.1f}")
            else:
                print(f"{e['case']:22s} {e['setting']:16s} {e['samples']:2d}  "
                      f"MSE paper {_fmt(e['paper']['mse'], '.3g')}"
                      f"  default {_fmt(e['default']['mse'], '.3g')}  mean row {_fmt(e['mean_row']['mse'], '.3g')}"
                      f"  ({e['budget_seconds']:.1f} s; failures {e['failures']})")


def markdown_table(table: list[dict[str, Any]]) -> str:
    """The image cells as a Markdown table (mean ± 95 % interval), for benchmarks/README.md."""
    lines = ["| half | case | setting | n | `paper` PSNR | default PSNR | default − paper | mean colour | "
             "4×4 thumbnail | SSIM paper / default | LPIPS paper / default | seconds each |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for e in sorted(table, key=lambda e: (e["split"] != "tune", e["case"], e["setting"])):
        if e["kind"] != "image":
            lines.append(f"| {e['split']} | {e['case']} | {e['setting']} | {e['samples']} | MSE "
                         f"{_fmt(e['paper']['mse'], '.3g')} | MSE {_fmt(e['default']['mse'], '.3g')} | | mean row "
                         f"{_fmt(e['mean_row']['mse'], '.3g')} | | | | {e['budget_seconds']:.1f} |")
            continue
        lines.append(f"| {e['split']} | {e['case']} | {e['setting']} | {e['samples']} | {_fmt(e['paper']['psnr'])} | "
                     f"{_fmt(e['default']['psnr'])} | {_fmt(e['default_minus_paper_psnr'])} | "
                     f"{_fmt(e['mean_colour']['psnr'])} | {_fmt(e['thumbnail']['psnr'])} | "
                     f"{_fmt(e['paper']['ssim'])} / {_fmt(e['default']['ssim'])} | "
                     f"{_fmt(e['paper']['lpips'])} / {_fmt(e['default']['lpips'])} | {e['budget_seconds']:.1f} |")
    return "\n".join(lines)


# --- driver ---------------------------------------------------------------------------------------------
def read_rows(path: Path) -> dict[str, dict[str, Any]]:
    """Existing JSON lines by key (a torn last line from an interrupted run is ignored)."""
    rows: dict[str, dict[str, Any]] = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            rows[row["key"]] = row
    return rows


def append_row(path: Path, row: dict[str, Any]) -> None:
    """One JSON line, written with a single ``write`` call and flushed (resume reads whole lines only)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        handle.write(json.dumps(row) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def select_rows(rows: Any, jobs: list[Any], args: argparse.Namespace) -> list[dict[str, Any]]:
    """The rows of the selected cells, matched by key (current or legacy); the last line of a cell wins."""
    by_key = {key: (job[0].name, job[1].name, job[2]) for job in jobs
              for key in cell_keys(job[0], job[1], job[2], args)}
    chosen: dict[tuple[str, str, int], dict[str, Any]] = {}
    for row in rows:
        if row["key"] in by_key:
            chosen[by_key[row["key"]]] = row
    return list(chosen.values())


def jobs_for(args: argparse.Namespace) -> list[tuple[Case, Setting, int, str, argparse.Namespace]]:
    """Every (case, setting, sample) cell selected by the arguments."""
    selected = cases(args.split, args.case or (QUICK_CASES if args.quick else None))
    out = []
    for case in selected:
        settings = case.settings[:1] if args.quick else case.settings
        if args.setting:
            settings = tuple(s for s in case.settings if s.name in args.setting)
        for setting in settings:
            for sample in range(args.samples):
                out.append((case, setting, sample, cell_key(case, setting, sample, args), args))
    return out


def _run(jobs: list[Any], processes: int) -> Iterator[dict[str, Any]]:
    if processes <= 1:
        for job in jobs:
            yield run_cell(job)
        return
    with ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn")) as pool:
        pending: set[Future[dict[str, Any]]] = {pool.submit(run_cell, job) for job in jobs}
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                yield future.result()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="5 cheap cases, 1 setting, 8 samples, 40 iterations")
    parser.add_argument("--split", choices=("tune", "heldout", "all"), default="all")
    parser.add_argument("--case", action="append", help="run only this case (repeatable)")
    parser.add_argument("--setting", action="append", help="run only this setting, e.g. approx-k1-N32")
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--paper-iterations", type=int, default=100,
                        help="paper's steps per sample (100 keeps the whole suite within ~90 min on 2 CPU cores)")
    parser.add_argument("--paper-restarts", type=int, default=1)
    parser.add_argument("--default-max-iterations", type=int, default=100_000,
                        help="cap for the default, whose iteration count is fitted to paper's seconds")
    parser.add_argument("--jobs", type=int, default=1, help="cells in parallel processes")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, help="JSON lines (default results/suite.jsonl, quick: suite_quick.jsonl)")
    parser.add_argument("--summary", type=Path, help="summary JSON (default beside --out, .json)")
    parser.add_argument("--summary-only", action="store_true", help="only re-print the table from --out")
    parser.add_argument("--markdown", action="store_true", help="also print the table as Markdown")
    args = parser.parse_args()
    if args.quick:
        args.paper_iterations = 40 if args.paper_iterations == 100 else args.paper_iterations
    out = args.out or RESULTS / ("suite_quick.jsonl" if args.quick else "suite.jsonl")
    summary_path = args.summary or out.with_suffix(".json")
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    jobs = jobs_for(args)
    existing = read_rows(out)
    done = {(r["case"], r["setting"], r["sample"]) for r in select_rows(existing.values(), jobs, args)}
    todo = [job for job in jobs if (job[0].name, job[1].name, job[2]) not in done]
    print(f"{len(jobs)} cells selected, {len(jobs) - len(todo)} already in {out}, {len(todo)} to run; "
          f"default preset {default_preset()!r}", flush=True)
    if not args.summary_only and todo:
        for case in {job[0].name: job[0] for job in todo}.values():  # θ0s first, in this process (cached)
            pretrained_base(case.config(device=args.device))
        for row in _run(todo, args.jobs):
            append_row(out, row)
            existing[row["key"]] = row
            if row["kind"] == "image":
                print(f"{row['case']:22s} {row['setting']:16s} #{row['sample']}  paper {_num(row['paper']['psnr'])}  "
                      f"default {_num(row['default']['psnr'])}  thumb {_num(row['thumbnail']['psnr'])} dB  "
                      f"({row['budget_seconds'] or 0:.1f} s each)", flush=True)
            else:
                print(f"{row['case']:22s} {row['setting']:16s} #{row['sample']}  MSE paper {_num(row['paper']['mse'])} "
                      f"default {_num(row['default']['mse'])} mean row {_num(row['mean_row']['mse'])}"
                      + "".join(f"  [{m} failed: {row[m]['error']}]" for m in ("paper", "default")
                                if row[m].get("error")), flush=True)
    rows = select_rows(existing.values(), jobs, args)
    wanted = {job[3] for job in jobs}
    table = summarise(rows)
    print_table(table)
    if args.markdown:
        print("\n" + markdown_table(table))
    verdict = targets(table)
    print("\nTargets (held-out half):" if verdict["evaluated"] else f"\nTargets: {verdict['reason']}")
    if verdict["evaluated"]:
        for name in ("never_0.5dB_below_paper", "mean_gain_3dB_and_lower_lpips", "beats_thumbnail_where_paper_does"):
            print(f"  {name:34s} {'PASS' if verdict[name]['pass'] else 'MISS'}  "
                  f"{json.dumps({k: v for k, v in verdict[name].items() if k != 'pass'})}")
        print(f"  {'(cells the default inverted)':34s}       {json.dumps(verdict['inversion_cells_only'])}")
    missing = len(wanted) - len(rows)  # cells selected but not (yet) run
    summary = {"cells": len(rows), "cells_missing": missing, "default": default_identity()["preset"],
               "paper_iterations": args.paper_iterations, "paper_restarts": args.paper_restarts,
               "samples": args.samples, "targets": verdict, "seconds": time.perf_counter() - started}
    write_json_atomic(summary_path, {"summary": summary, "table": table,
                                     "args": {k: str(v) for k, v in vars(args).items()},
                                     "environment": environment_record()})
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
