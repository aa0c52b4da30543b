"""The learned prior (issue 16, item 2) on the suite's cases: decoder alone, decoder + refinement, the default
without the decoder, and the baselines, mean ± 95 % interval over samples, approximate and exact.

Per case the decoder is trained once on θ0's features of θ0's public pretraining rows (train rows ≥ the case's
``holdout``; the private pool D_ft and D_u are drawn from lies below it) and cached (``decoder.py``). Each cell
(case, setting, sample) builds the suite's pair (``suite.build_pair``: D_ft, D_u, θ fine-tuned from θ0, θ_u
by gradient ascent or retraining) and runs, through the pipeline's stage (``recover_and_evaluate``), at the
same number of iterations:

- ``default``: ``recover()``'s default without public data;
- ``learned``: the same with the learned prior; its decoded images alone are the ``decoder`` row;

with the image baselines (``own_mean_colour``, ``thumbnail_4x4``, ``dataset_mean_colour``). ``--default-from``
takes the default's row from a suite file where its key matches; ``--no-default`` skips it (a cell written so
keeps no default row, also when rerun without the flag). One JSON line per cell
goes to ``--out`` (resumable: a cell already there is skipped). ``--cross`` also measures, on the first
samples of each case, whether a decoder trained on θ0 serves θ (and one trained on θ serves θ0): it trains θ's
own decoder and decodes the deleted sample's features with both.

    python benchmarks/decoder_prior.py --case convnet16-60 --samples 8 --iterations 300
    python benchmarks/decoder_prior.py --split heldout --samples 8 --iterations 300 --jobs 2
    python benchmarks/decoder_prior.py --summary-only --markdown
    python benchmarks/decoder_prior.py --case bn-gelu-tanh --setting approx-k1-N32 --samples 4 --iterations 2000 \
        --out benchmarks/results/decoder_prior_heldout_2000.jsonl
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

from suite import (
    RESULTS,
    _base,
    append_row,
    build_pair,
    config_identity,
    interval,
    read_rows,
    row_key,
    save_cell_images,
)
from suite_cases import Case, Setting, cases
from unlearnleak.attacks.feature_recovery.config import FeatureRecoveryConfig
from unlearnleak.attacks.feature_recovery.decoder import DECODER_FORMAT, DecoderConfig, cached_decoder, penultimate
from unlearnleak.attacks.feature_recovery.inversion import PRESETS
from unlearnleak.attacks.feature_recovery.learned_prior import (
    REFINE,
    WEIGHTS,
    LearnedPrior,
    deleted_features,
)
from unlearnleak.attacks.feature_recovery.public_data import public_images
from unlearnleak.attacks.feature_recovery.target_gradient import target_gradient
from unlearnleak.experiments.pipeline import recover_and_evaluate
from unlearnleak.metrics import psnr
from unlearnleak.models import build_model, load_weights
from unlearnleak.storage import environment_record, write_json_atomic

VERSION = 2  # 2: the decoder races as a candidate beside the default's recipes (adaptive.Candidate)
METHODS = ("learned", "decoder", "default", "own_mean_colour", "thumbnail_4x4", "dataset_mean_colour")
METRICS = ("psnr", "ssim", "lpips")


def public_rows(case: Case) -> Any:
    """θ0's pretraining rows of the case (train rows ≥ holdout) as the learned prior's public images."""
    base, train = _base(case, "cpu")
    spec = base.spec
    x = train.x[case.holdout:]
    return public_images(x, f"{case.name}: θ0's pretraining rows (train rows >= {case.holdout}, {x.shape[0]} "
                            "images)", spec.input_shape)


def candidate_options(args: argparse.Namespace) -> dict[str, Any]:
    """The decoder candidate's recipe and raced weights from ``--decoder-recipe`` / ``--decoder-weights``."""
    recipe = REFINE if args.decoder_recipe == "refine" else PRESETS.get(args.decoder_recipe)
    weights = tuple(json.loads(args.decoder_weights)) if args.decoder_weights else WEIGHTS
    return {"recipe": recipe.with_overrides(race=(), prune_at=()), "weights": weights}


RECIPE_LATER_FIELDS = (("race_average", 0.0),)  # the recipe was keyed in full before this field existed


def cell_key(case: Case, setting: Setting, sample: int, args: argparse.Namespace) -> str:
    """A hash of what determines a cell's numbers."""
    obj = {"v": VERSION, "case": case.name, "config": case.config(n_train=setting.n).model_dump(
        mode="json", exclude={"data_dir"}), "setting": setting.name, "sample": sample,
        "iterations": args.iterations, "decoder": DecoderConfig(**json.loads(args.decoder)).model_dump(mode="json"),
        "refine": config_identity(candidate_options(args)["recipe"], later=RECIPE_LATER_FIELDS),
        "weights": candidate_options(args)["weights"],
        "decoder_format": DECODER_FORMAT}
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def reused_default(case: Case, setting: Setting, sample: int, args: argparse.Namespace) -> dict[str, Any] | None:
    """The cell's ``default`` row from the suite rows of ``--default-from``, found by the suite's own row key.

    The suite's ``default`` is the same ``recover()`` without public data on the same cached pair; its key covers
    the default's config, the case, the photo and the iterations, so a row from another default never matches
    (the cell is then computed). Checked on convnet64-paper: both ways give the same numbers to the digit. The
    row records where it came from.
    """
    if args.default_rows is None:
        return None
    suite_args = argparse.Namespace(iterations=args.iterations, device="cpu", paper_restarts=1)
    r = args.default_rows.get(row_key(case, setting, sample, "default", suite_args))
    if r is None or r["result"].get("error") is not None:
        return None
    res = r["result"]
    return {m: res.get(m) for m in METRICS} | {
        "seconds": res.get("seconds"), "iterations": res.get("iterations"),
        "label_accuracy": res.get("label_accuracy"), "from": f"{args.default_from} (key {r['key']})"}


def run_cell(case: Case, setting: Setting, sample: int, args: argparse.Namespace) -> dict[str, Any]:
    """The default and the learned prior on one pair, at the same iterations, with the baselines."""
    started = time.perf_counter()
    pair, knowledge, truth_x, truth_y, _ = build_pair(case, setting, sample, "cpu")
    mode = "approximate" if setting.method == "approx" else "exact"
    spec = FeatureRecoveryConfig(mode=mode, iterations=args.iterations, seed=sample)
    prior = LearnedPrior(public_rows(case), DecoderConfig(**json.loads(args.decoder)), **candidate_options(args))
    row: dict[str, Any] = {"key": cell_key(case, setting, sample, args), "case": case.name, "split": case.split,
                           "setting": setting.name, "sample": sample, "iterations": args.iterations}
    reused = None if args.no_default else reused_default(case, setting, sample, args)
    if reused is not None or args.no_default:
        row["default"] = reused  # None: not run here (--no-default)
    for name, learned in (("default", None), ("learned", prior)):
        if name in row:
            continue
        t0 = time.perf_counter()
        ev = recover_and_evaluate(pair, knowledge, spec, (truth_x, truth_y), lpips=args.lpips,
                                  learned_prior=learned)
        means = ev.metric_means() or {}
        row[name] = {m: means.get(m) for m in METRICS} | {
            "seconds": time.perf_counter() - t0, "iterations": ev.reconstruction.iterations,
            "label_accuracy": means.get("label_accuracy")}
        if learned is not None:
            row["decoder"] = ev.decoder_alone()
            record = ev.reconstruction.config["learned_prior"]
            row["learned_prior"] = {k: record.get(k) for k in ("status", "reason", "features", "decoder_model")}
            row["learned_prior"]["decoder_cache"] = (record.get("decoder") or {}).get("cache")
            row["learned_prior"]["decoder_seconds"] = (record.get("decoder") or {}).get("seconds")
            row["race"] = ev.reconstruction.config.get("race")
            if args.save_images is not None and ev.reconstruction.decoded is not None:
                save_cell_images(args.save_images, case.name, setting.name, sample,
                                 {"learned": ev.reconstruction.x, "decoder": ev.reconstruction.decoded})
        for base, values in (ev.baselines or {}).items():
            row[base] = {m: values.get(m) for m in METRICS}
    row["cell_seconds"] = time.perf_counter() - started
    return row


def cross_check(case: Case, setting: Setting, sample: int, args: argparse.Namespace) -> dict[str, Any]:
    """θ0's decoder on θ's features vs θ's own decoder (and the reverse), on the deleted sample and 64 public
    images: PSNR of each decoder's output against the true images."""
    pair, knowledge, truth_x, truth_y, _ = build_pair(case, setting, sample, "cpu")
    data = public_rows(case)
    config = DecoderConfig(**json.loads(args.decoder))
    models, decoders, seconds = {}, {}, {}
    for role in ("base", "original"):
        state = pair.state(role, knowledge)  # type: ignore[arg-type]
        model = build_model(pair.spec)
        load_weights(model, state)
        models[role] = model.eval()
        t0 = time.perf_counter()
        decoders[role], _ = cached_decoder(model, pair.spec, state, data, config)
        seconds[role] = time.perf_counter() - t0
    probe = data.x[-64:]
    out: dict[str, Any] = {"case": case.name, "setting": setting.name, "sample": sample, "decoder_seconds": seconds}
    target = target_gradient(pair, knowledge, "approximate")  # inverted on θ: θ's features of D_u
    features, _ = deleted_features(models["original"], target, truth_y, pair.spec.num_classes)
    assert features is not None
    for feat_role in ("base", "original"):
        h = penultimate(models[feat_role], probe, pair.spec.num_classes)
        for dec_role in ("base", "original"):
            with torch.no_grad():
                out[f"public_{dec_role}_decoder_on_{feat_role}_features"] = float(psnr(decoders[dec_role](h),
                                                                                    probe).mean())
    h0 = penultimate(models["base"], probe, pair.spec.num_classes)
    h1 = penultimate(models["original"], probe, pair.spec.num_classes)
    out["relative_feature_change"] = float(((h1 - h0).norm(dim=1) / h0.norm(dim=1)).mean())
    for dec_role in ("base", "original"):
        with torch.no_grad():
            out[f"deleted_{dec_role}_decoder_on_theta_features"] = float(psnr(decoders[dec_role](features),
                                                                            truth_x).mean())
    return out


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (case, setting): each method's metrics as mean ± 95 % interval over samples."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["case"], row["setting"]), []).append(row)
    table = []
    for (case, setting), rs in sorted(groups.items()):
        entry: dict[str, Any] = {"case": case, "split": rs[0]["split"], "setting": setting, "samples": len(rs)}
        for method in METHODS:
            entry[method] = {m: interval([float(r[method][m]) for r in rs if r.get(method) and
                                          r[method].get(m) is not None]) for m in METRICS}
        entry["learned_minus_default_psnr"] = interval([r["learned"]["psnr"] - r["default"]["psnr"] for r in rs
                                                        if r.get("default")])
        entry["learned_minus_own_mean_psnr"] = interval([r["learned"]["psnr"] - r["own_mean_colour"]["psnr"]
                                                         for r in rs])
        entry["chosen_weights"] = sorted({(r.get("race") or {}).get("chosen_weight") for r in rs}, key=str)
        entry["chosen_recipes"] = [(r.get("race") or {}).get("chosen_recipe") for r in rs]
        entry["seconds_each"] = sum(r["learned"]["seconds"] for r in rs) / len(rs)
        table.append(entry)
    return table


def _psnr(method_row: dict[str, Any] | None) -> str:
    return "–" if not method_row else f"{method_row['psnr']:.2f}"


def _fmt(cell: dict[str, Any] | None) -> str:
    if cell is None:
        return "–"
    return f"{cell['mean']:.2f}±{cell['ci95']:.2f}" if cell["ci95"] == cell["ci95"] else f"{cell['mean']:.2f}"


def markdown(table: list[dict[str, Any]]) -> str:
    """PSNR per method (mean ± 95 % interval), for benchmarks/README.md."""
    lines = ["| half | case | setting | n | decoder + refinement | decoder alone | default (no decoder) | "
             "own mean colour | 4×4 thumbnail | dataset mean colour | learned − own mean | learned − default | "
             "SSIM learned / default |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for e in sorted(table, key=lambda e: (e["split"] != "tune", e["case"], e["setting"])):
        lines.append(f"| {e['split']} | {e['case']} | {e['setting']} | {e['samples']} | "
                     + " | ".join(_fmt(e[m]["psnr"]) for m in METHODS)
                     + f" | {_fmt(e['learned_minus_own_mean_psnr'])} | {_fmt(e['learned_minus_default_psnr'])} | "
                       f"{_fmt(e['learned']['ssim'])} / "
                       f"{_fmt((e.get('default') or {}).get('ssim'))} |")
    return "\n".join(lines)


def targets(table: list[dict[str, Any]]) -> dict[str, Any]:
    """Issue 16's learned-prior targets over the cells: above the thumbnail on average; ≥ own mean + 3 dB on each."""
    if not table:
        return {"evaluated": False}
    gap = [e["learned"]["psnr"]["mean"] - e["thumbnail_4x4"]["psnr"]["mean"] for e in table]
    misses = [(e["case"], e["setting"], round(e["learned_minus_own_mean_psnr"]["mean"], 2)) for e in table
              if e["learned_minus_own_mean_psnr"]["mean"] < 3.0]
    return {"evaluated": True, "cells": len(table),
            "above_thumbnail_on_average": {"pass": sum(gap) / len(gap) > 0, "mean_gap_db": sum(gap) / len(gap)},
            "own_mean_plus_3dB_each": {"pass": not misses, "misses": misses}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--split", choices=("tune", "heldout", "all"), default="all")
    parser.add_argument("--case", action="append", help="run only this case (repeatable)")
    parser.add_argument("--setting", action="append", help="e.g. approx-k1-N32 (default: both k = 1, N = 32)")
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--first-sample", type=int, default=0, help="photos first … first + samples − 1")
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--decoder", default="{}", help="DecoderConfig fields as JSON (default: the defaults)")
    parser.add_argument("--decoder-recipe", default="modern",
                        help="the decoder candidate's recipe: a preset name (default: modern, the library's) or "
                             "refine (learned_prior.REFINE, the former one)")
    parser.add_argument("--decoder-weights", default="", help="its raced prior weights as JSON (default: WEIGHTS)")
    parser.add_argument("--threads", type=int, default=1)
    default = parser.add_mutually_exclusive_group()
    default.add_argument("--default-from", type=Path, help="take each cell's default row from this suite JSONL "
                         "when it holds that row (same suite key; saves one trajectory per cell)")
    default.add_argument("--no-default", action="store_true", help="run the learned prior only: no default row "
                         "(its rows come from elsewhere; learned − default is then not summarised)")
    parser.add_argument("--lpips", action="store_true", help="also LPIPS (slower)")
    parser.add_argument("--cross", type=int, default=0, help="θ0-vs-θ decoder check on this many samples per case")
    parser.add_argument("--out", type=Path, default=RESULTS / "decoder_prior.jsonl")
    parser.add_argument("--save-images", type=Path, help="keep the learned and decoded images under this folder, "
                        "beside suite.py --save-images's (for suite_grid.py)")
    parser.add_argument("--summary-only", action="store_true")
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.lpips:
        from suite import _lpips
        args.lpips = _lpips("cpu")
    else:
        args.lpips = None
    args.default_rows = None
    if args.default_from is not None:
        if not args.default_from.is_file():
            print(f"error: --default-from {args.default_from}: no such file (a suite.py --out JSONL)",
                  file=sys.stderr)
            return 2
        args.default_rows = read_rows(args.default_from)
    selected = [c for c in cases(args.split, args.case) if c.kind == "image"]
    settings = tuple(args.setting or ("approx-k1-N32", "exact-k1-N32"))
    jobs = [(c, s, i) for c in selected for s in c.settings if s.name in settings
            for i in range(args.first_sample, args.first_sample + args.samples)]
    existing = read_rows(args.out, field="learned")
    started = time.perf_counter()
    if not args.summary_only:
        for case, setting, sample in jobs:
            key = cell_key(case, setting, sample, args)
            if key in existing:
                continue
            row = run_cell(case, setting, sample, args)
            append_row(args.out, row)
            existing[key] = row
            print(f"{case.name:22s} {setting.name:14s} #{sample}  learned {row['learned']['psnr']:.2f}  decoder "
                  f"{row['decoder']['psnr']:.2f}  default {_psnr(row.get('default'))}  own mean "
                  f"{row['own_mean_colour']['psnr']:.2f}  thumb {row['thumbnail_4x4']['psnr']:.2f} dB  "
                  f"(won: {(row['race'] or {}).get('chosen_recipe')}, w {(row['race'] or {}).get('chosen_weight')}, "
                  f"{row['cell_seconds']:.0f} s)", flush=True)
        for case in selected:
            for sample in range(args.cross):
                print(json.dumps({"cross": cross_check(case, case.settings[0], sample, args)}), flush=True)
    keys = {cell_key(c, s, i, args) for c, s, i in jobs}
    rows = [r for k, r in existing.items() if k in keys]
    table = summarise(rows)
    for e in table:
        print(f"{e['case']:22s} {e['setting']:14s} n={e['samples']}  " + "  ".join(
            f"{m} {_fmt(e[m]['psnr'])}" for m in METHODS))
    if args.markdown:
        print("\n" + markdown(table))
    verdict = targets(table)
    summary = {"cells": len(rows), "iterations": args.iterations, "targets": verdict,
               "seconds": time.perf_counter() - started}
    write_json_atomic(args.out.with_suffix(".json"), {"summary": summary, "table": table,
                                                      "args": {k: str(v) for k, v in vars(args).items()},
                                                      "environment": environment_record()})
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
