"""Does a recipe's PSNR on the server's OWN images predict its PSNR on the deleted photo? (issue 16 lead)

The race picks a recipe per photo from ∇* alone, and on trained networks its held-out score prefers `paper`'s
colour noise (results in benchmarks/README.md, "Would another score judge the recipes better?"). But the server
also holds the model and same-distribution images (θ0's public pretraining rows): it can *simulate* the attack
on this model — take the gradient of an image it knows, invert it with each recipe, and measure how well each
recipe recovers it. If which recipe wins on such stand-ins tracks which recipe wins on the deleted photo, the
choice of recipe can be made per model, truth-free, from the model itself.

Per cell (case, setting, sample = the suite's pair): on the model the attack inverts on, each recipe in
``--recipes`` runs alone (``adaptive.invert``, 1 restart, ``--iterations`` steps, the true label)
(a) on ``--stand-ins`` public images' own gradients (images ``sample·M … sample·M + M − 1`` of θ0's public rows,
each with its true label; the clean single-image gradient on that model, eval mode; or, with ``--stand-ins-by
retained``, M photos of the cell's own D_ft deleted from θ by the cell's own unlearning, the closest simulation the
server can run) and (b) on the cell's real ∇* (or its PSNRs reused from an earlier rows file, ``--deleted-from``).
One JSON line per cell with every PSNR; ``--summary`` prints, per case, the mean recipe gap on the stand-ins beside
the gap on the deleted photos, and how often the stand-ins' winner is the deleted photos' winner.

    python benchmarks/recipe_calibration.py --cases convnext-ln,vgg-bn --samples 2 \
        --out results/recipe_calibration.jsonl
    python benchmarks/recipe_calibration.py --summary --out results/recipe_calibration.jsonl
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

import suite
from decoder_prior import public_rows
from sketch_cost import positive
from suite_cases import CASES, Setting
from unlearnleak.attacks.closed_forms import penultimate_features
from unlearnleak.attacks.feature_recovery import preset, target_gradient
from unlearnleak.attacks.feature_recovery.adaptive import invert
from unlearnleak.attacks.feature_recovery.decoder import penultimate
from unlearnleak.attacks.feature_recovery.inversion import PRESETS
from unlearnleak.attacks.feature_recovery.target_gradient import TargetGradient
from unlearnleak.metrics import psnr


def own_gradient(model: torch.nn.Module, like: TargetGradient, x: torch.Tensor, y: torch.Tensor) -> TargetGradient:
    """The clean gradient of (x, y) on ``model`` (eval mode), shaped as ``like`` (a stand-in for ∇*)."""
    named = dict(model.named_parameters())
    params = [named[n] for n in like.names]
    loss = torch.nn.functional.cross_entropy(model.eval()(x), y)
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    tensors = tuple((torch.zeros_like(p) if g is None else g).detach().double() for p, g in zip(params, grads,
                                                                                               strict=True))
    return TargetGradient(like.names, tensors, like.mode, like.invert_on)


def nearest_rows(model: torch.nn.Module, target: TargetGradient, images: torch.Tensor, num_classes: int,
                 count: int, pool: int) -> list[int]:
    """The ``count`` of the first ``pool`` public images whose penultimate features (on ``model``) are nearest, by
    cosine, to the deleted photo's, read off ∇* in closed form (k = 1): the images this model sees most alike."""
    read = penultimate_features(model, dict(zip(target.names, target.tensors, strict=True)), num_classes)
    if read is None:
        raise SystemExit("error: --stand-ins-by nearest needs the output layer's bias gradient (k = 1)")
    feats = penultimate(model, images[:pool], num_classes)
    similarity = torch.nn.functional.cosine_similarity(feats.double(), read[1].reshape(1, -1).double(), dim=1)
    return [int(i) for i in similarity.argsort(descending=True)[:count]]


def retained_positions(sample: int, n: int, count: int) -> list[int]:
    """``count`` positions of the cell's D_ft other than the deleted photo's, in a seeded order: the photos the
    server still holds, fitted by θ exactly like the deleted one."""
    deleted = int(torch.randperm(n, generator=torch.Generator().manual_seed(20_000 + sample))[0])
    order = torch.randperm(n, generator=torch.Generator().manual_seed(30_000 + sample)).tolist()
    return [j for j in order if j != deleted][:count]


def stand_in_targets(case: Any, method: str, sample: int, by: str, count: int, pool: int, model: torch.nn.Module,
                     target: TargetGradient, num_classes: int) -> tuple[list[Any], list[tuple[Any, ...]]]:
    """The stand-ins (their ids) and, for each, (model, target gradient, image, label) to invert: a public row's clean
    gradient on the model under attack (``rows``, ``nearest``), or the server's simulated deletion of a photo it
    still holds, through the same unlearning (``retained``: same θ, θ_u recomputed)."""
    if by == "retained":
        ids = retained_positions(sample, 32, count)
        out = []
        for j in ids:
            pair, knowledge, x, y, _ = suite.build_pair(case, Setting(method, 1, 32), sample, "cpu",
                                                        forget=torch.tensor([j]))
            own = target_gradient(pair, knowledge, "approximate" if method == "approx" else "exact")
            out.append((pair.model(own.invert_on, "cpu", knowledge), own, x, y))
        return ids, out
    public = public_rows(case)
    labels = suite._base(case, "cpu")[1].y[case.holdout:]  # the same rows' labels
    rows: list[int] = list(range(sample * count, (sample + 1) * count))
    if by == "nearest":
        rows = nearest_rows(model, target, public.x, num_classes, count, pool)
    return rows, [(model, own_gradient(model, target, public.x[i:i + 1], labels[i:i + 1].long()), public.x[i:i + 1],
                   labels[i:i + 1].long()) for i in rows]


def run_cell(case_name: str, method: str, sample: int, recipes: list[str], stand_ins: int,
             iterations: int, by: str = "rows", pool: int = 2000,
             deleted: dict[str, float] | None = None) -> dict[str, Any]:
    """Each recipe alone on the stand-ins' gradients and on the cell's ∇* (or the ``deleted`` PSNRs recorded for
    the same cell by an earlier run: the same seeds give the same numbers)."""
    case = CASES.get(case_name)
    pair, knowledge, truth_x, truth_y, _ = suite.build_pair(case, Setting(method, 1, 32), sample, "cpu")
    target = target_gradient(pair, knowledge, "approximate" if method == "approx" else "exact")
    model = pair.model(target.invert_on, "cpu", knowledge)
    shape = tuple(pair.spec.input_shape)
    ids, stands = stand_in_targets(case, method, sample, by, stand_ins, pool, model, target, pair.spec.num_classes)
    out: dict[str, Any] = {"stand_ins": {}, "deleted": {}, "stand_in_rows": ids}
    started = time.perf_counter()
    for name in recipes:
        config = preset(name, iterations=iterations, restarts=1)
        scores = []
        for on, own, x, y in stands:
            got = invert(on, own, y, shape, config, seed=sample, log_every=0)
            scores.append(float(psnr(got.x.clamp(0, 1), x).mean()))
        out["stand_ins"][name] = scores
        if deleted is not None and name in deleted:
            out["deleted"][name] = deleted[name]
            continue
        got = invert(model, target, truth_y, shape, config, seed=sample, log_every=0)
        out["deleted"][name] = float(psnr(got.x.clamp(0, 1), truth_x).mean())
    return {"case": case_name, "method": method, "sample": sample, "iterations": iterations, "by": by, "out": out,
            "seconds": time.perf_counter() - started}


def survivors(cell: dict[str, Any], delta: float) -> list[str]:
    """The recipes whose mean PSNR on the cell's stand-ins is within ``delta`` dB of the best one's (race order)."""
    means = {n: statistics.fmean(v) for n, v in cell["out"]["stand_ins"].items()}
    best = max(means.values())
    return [n for n in cell["out"]["stand_ins"] if means[n] >= best - delta]


def run_subset(cell: dict[str, Any], keep: list[str], iterations: int) -> dict[str, Any]:
    """The default (``best``) on the cell's ∇* with its race cut to ``keep`` (in ``best``'s order; the agreement gate
    only while `paper`, the recipe it is defined for, races first). One recipe left: it runs alone (its row is the
    cell's ``deleted`` entry, not rerun)."""
    if len(keep) == 1:
        return {"psnr": cell["out"]["deleted"][keep[0]], "chosen": keep[0], "rerun": False}
    case = CASES.get(cell["case"])
    pair, knowledge, truth_x, truth_y, _ = suite.build_pair(case, Setting(cell["method"], 1, 32), cell["sample"], "cpu")
    target = target_gradient(pair, knowledge, "approximate" if cell["method"] == "approx" else "exact")
    model = pair.model(target.invert_on, "cpu", knowledge)
    base = preset("best", iterations=iterations)
    entries = tuple(e for e in base.race if e.recipe in keep)
    config = base.with_overrides(race=entries, race_agreement=base.race_agreement if keep[0] == "paper" else 0.0)
    got = invert(model, target, truth_y, tuple(pair.spec.input_shape), config, seed=cell["sample"], log_every=0)
    race = got.race if isinstance(got.race, dict) else {}
    return {"psnr": float(psnr(got.x.clamp(0, 1), truth_x).mean()), "chosen": race.get("chosen_recipe"),
            "rerun": True}


def calibrated(rows: list[dict[str, Any]], deltas: list[float], path: Path, iterations: int,
               suite_rows: list[str]) -> None:
    """Run (or resume) the calibrated race of every cell for each ``delta`` and print it beside the recorded
    default and breaching's ``modern`` (``suite_rows``)."""
    done = {}
    if path.is_file():
        done = {(r["case"], r["method"], r["sample"], tuple(r["keep"])): r for r in
                map(json.loads, path.read_text().splitlines())}
    known = recorded(suite_rows)
    for delta in deltas:
        table: dict[tuple[str, str], list[tuple[float, float, float | None]]] = {}
        for cell in rows:
            keep = survivors(cell, delta)
            key = (cell["case"], cell["method"], cell["sample"], tuple(keep))
            if key not in done:
                if len(keep) == 3 and "default" in known.get(key[:3], {}):
                    result = {"psnr": known[key[:3]]["default"], "chosen": None, "rerun": False}
                else:
                    result = run_subset(cell, keep, iterations)
                done[key] = {"case": key[0], "method": key[1], "sample": key[2], "keep": keep, **result}
                with path.open("a") as f:
                    f.write(json.dumps(done[key]) + "\n")
            rec = known.get(key[:3], {})
            if "default" in rec:
                table.setdefault(key[:2], []).append((done[key]["psnr"], rec["default"], rec.get("breaching_modern")))
        print(f"\nδ = {delta} dB: the race cut to the recipes within δ of the best on the cell's stand-ins\n")
        print("| case | setting | cells | calibrated | recorded default | breaching `modern` | calibrated − default "
              "| calibrated − breaching `modern` |")
        print("|---|---|---|---|---|---|---|---|")
        diffs = []
        for (case, method), vals in sorted(table.items()):
            cal, dft = statistics.fmean(v[0] for v in vals), statistics.fmean(v[1] for v in vals)
            peers = [v[2] for v in vals if v[2] is not None]
            peer = statistics.fmean(peers) if len(peers) == len(vals) else None
            diffs += [v[0] - v[1] for v in vals]
            print(f"| {case} | {method} | {len(vals)} | {cal:.2f} | {dft:.2f} | "
                  f"{'–' if peer is None else f'{peer:.2f}'} | {cal - dft:+.2f} | "
                  f"{'–' if peer is None else f'{cal - peer:+.2f}'} |")
        if diffs:
            print(f"\nover {len(diffs)} cells: calibrated − default {statistics.fmean(diffs):+.2f} dB")


def recorded(pairs: list[str]) -> dict[tuple[str, str, int], dict[str, float]]:
    """``CASE=FILE`` pairs → (case, setting kind, sample) → method → PSNR of the suite's recorded rows of that case in
    that file (the default as recorded, breaching's ``modern``), to set beside the recipes alone."""
    out: dict[tuple[str, str, int], dict[str, float]] = {}
    for pair in pairs:
        case, _, path = pair.partition("=")
        for line in Path(path).read_text().splitlines():
            r = json.loads(line)
            psnr_ = (r.get("result") or {}).get("psnr")
            if r.get("case") == case and r.get("kind") == "image" and psnr_ is not None:
                kind = "approx" if r["setting"].startswith("approx") else "exact"
                out.setdefault((case, kind, r["sample"]), {})[r["name"]] = float(psnr_)
    return out


def summary(rows: list[dict[str, Any]], suite_rows: tuple[str, ...] | list[str] = ()) -> None:
    """Per case and setting: each recipe's mean PSNR on the stand-ins and on the deleted photos, the winners; with
    ``suite_rows``, the stand-ins' winner run alone on the deleted photos beside the recorded default and breaching's
    ``modern`` on the same cells."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["case"], r["method"]), []).append(r)
    names = list(rows[0]["out"]["deleted"])
    print("| case | setting | cells | stand-ins: " + " / ".join(names) + " | deleted photos: same "
          "| stand-ins' winner | deleted photos' winner | cells where the stand-ins' winner wins the photo |")
    print("|---|---|---|---|---|---|---|---|")
    for (case, method), cells in sorted(groups.items()):
        stand = {n: statistics.fmean(v for c in cells for v in c["out"]["stand_ins"][n]) for n in names}
        deleted = {n: statistics.fmean(c["out"]["deleted"][n] for c in cells) for n in names}
        right = sum(max(names, key=lambda n, c=c: statistics.fmean(c["out"]["stand_ins"][n]))
                    == max(names, key=lambda n, c=c: c["out"]["deleted"][n]) for c in cells)
        print(f"| {case} | {method} | {len(cells)} | " + " / ".join(f"{stand[n]:.2f}" for n in names) + " | "
              + " / ".join(f"{deleted[n]:.2f}" for n in names) + f" | {max(names, key=stand.__getitem__)} | "
              f"{max(names, key=deleted.__getitem__)} | {right} of {len(cells)} |")
    if not suite_rows:
        return
    known = recorded(list(suite_rows))
    print("\nThe stand-ins' winner (per case, pooled over its cells) run alone on the deleted photos, beside the "
          "recorded default and breaching's `modern` of the same cells (mean over the cells):\n")
    print("| case | setting | cells | stand-ins' winner | its PSNR alone | recorded default | breaching `modern` "
          "| winner − default | winner − breaching `modern` |")
    print("|---|---|---|---|---|---|---|---|---|")
    gains: list[float] = []
    for (case, method), cells in sorted(groups.items()):
        have = [c for c in cells if "default" in known.get((case, method, c["sample"]), {})]
        if not have:
            continue
        stand = {n: statistics.fmean(v for c in have for v in c["out"]["stand_ins"][n]) for n in names}
        win = max(names, key=stand.__getitem__)
        alone = [c["out"]["deleted"][win] for c in have]
        default = [known[(case, method, c["sample"])]["default"] for c in have]
        peer = [known[(case, method, c["sample"])].get("breaching_modern") for c in have]
        gains += [a - d for a, d in zip(alone, default, strict=True)]
        peer_mean = statistics.fmean(p for p in peer if p is not None) if None not in peer else None
        print(f"| {case} | {method} | {len(have)} | {win} | {statistics.fmean(alone):.2f} | "
              f"{statistics.fmean(default):.2f} | {'–' if peer_mean is None else f'{peer_mean:.2f}'} | "
              f"{statistics.fmean(alone) - statistics.fmean(default):+.2f} | "
              f"{'–' if peer_mean is None else f'{statistics.fmean(alone) - peer_mean:+.2f}'} |")
    if gains:
        print(f"\nover {len(gains)} cells: winner − default {statistics.fmean(gains):+.2f} dB")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", default="convnext-ln")
    parser.add_argument("--methods", default="approx")
    parser.add_argument("--samples", type=positive, default=2)
    parser.add_argument("--first-sample", type=int, default=0)
    parser.add_argument("--stand-ins", type=positive, default=3)
    parser.add_argument("--iterations", type=positive, default=1000)
    parser.add_argument("--recipes", default="paper,modern,smooth")
    parser.add_argument("--stand-ins-by", choices=("rows", "nearest", "retained"), default="rows",
                        help="rows: public rows sample·M … (the same for every model); nearest: the M of the first "
                             "--pool public rows whose features on the model are nearest the deleted photo's; "
                             "retained: M photos of the cell's D_ft other than the deleted one, each deleted from θ "
                             "by the same unlearning (the server's simulation of the attack on its own data)")
    parser.add_argument("--deleted-from", type=Path,
                        help="reuse each cell's deleted-photo PSNRs from this earlier rows file (same iterations)")
    parser.add_argument("--pool", type=positive, default=2000)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--summary", action="store_true")
    parser.add_argument("--calibrated", type=float, action="append", default=[], metavar="DELTA",
                        help="with --summary: run the default with its race cut to the recipes within DELTA dB of "
                             "the best on each cell's stand-ins (rows in --calibrated-out) and compare")
    parser.add_argument("--calibrated-out", type=Path)
    parser.add_argument("--suite-rows", action="append", default=[], metavar="CASE=FILE",
                        help="the suite's recorded rows of CASE (default, breaching) to set beside --summary")
    args = parser.parse_args()
    if args.calibrated and args.calibrated_out is None:
        print("error: --calibrated needs --calibrated-out FILE (its runs are kept there)", file=sys.stderr)
        return 2
    if not args.summary:
        names = args.cases.split(",")
        unknown = [n for n in names if n not in CASES.names()]
        recipes = [r for r in args.recipes.split(",") if r not in PRESETS.names() or PRESETS.get(r).race]
        if unknown or recipes:
            what = f"--cases: unknown case(s) {unknown}" if unknown else f"--recipes: not a single recipe {recipes}"
            print(f"error: {what}; choose from {CASES.names() if unknown else ['paper', 'modern', 'smooth']}",
                  file=sys.stderr)
            return 2
        if args.stand_ins_by == "retained" and args.stand_ins > 31:
            print(f"error: --stand-ins {args.stand_ins}: with --stand-ins-by retained at most 31 (D_ft holds 32 "
                  "photos, one of them deleted)", file=sys.stderr)
            return 2
        torch.set_num_threads(1)
        earlier: dict[tuple[str, str, int], dict[str, float]] = {}
        if args.deleted_from is not None:
            if not args.deleted_from.is_file():
                print(f"error: --deleted-from {args.deleted_from}: no such file", file=sys.stderr)
                return 2
            earlier = {(r["case"], r["method"], r["sample"]): r["out"]["deleted"]
                       for r in map(json.loads, args.deleted_from.read_text().splitlines())
                       if r.get("iterations") == args.iterations}
        done = set()
        if args.out.is_file():
            done = {(r["case"], r["method"], r["sample"], r.get("by", "rows"))
                    for r in map(json.loads, args.out.read_text().splitlines())}
        for sample in range(args.first_sample, args.first_sample + args.samples):
            for name in names:
                for method in args.methods.split(","):
                    if (name, method, sample, args.stand_ins_by) in done:
                        continue
                    row = run_cell(name, method, sample, args.recipes.split(","), args.stand_ins, args.iterations,
                                   args.stand_ins_by, args.pool, earlier.get((name, method, sample)))
                    with args.out.open("a") as f:
                        f.write(json.dumps(row) + "\n")
                    print(json.dumps(row), flush=True)
    if not args.out.is_file():
        print(f"error: --out {args.out}: no rows to summarise (run the cells first, without --summary)",
              file=sys.stderr)
        return 2
    rows = [json.loads(line) for line in args.out.read_text().splitlines() if line.strip()]
    summary(rows, args.suite_rows)
    if args.calibrated:
        torch.set_num_threads(1)
        calibrated(rows, args.calibrated, args.calibrated_out, args.iterations, args.suite_rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
