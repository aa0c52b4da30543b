"""Check a change to the race's pick rule on recorded suite cells: replay it, rerun only the cells it changes.

The suite's ``default`` rows record every raced candidate's held-out cost and image TV (``result.race``), and a
cell's run is deterministic for its seed and thread count. So a new *pick* rule (``race_tolerance``) can be
judged on recorded cells without rerunning all of them: ``--list`` replays the rule on the recorded costs (never
on the truth; the library's own ``pick_winner``) and prints the cells whose winner changes; ``--run`` reruns
exactly those cells with the rule (the default preset with ``race_tolerance`` set, in this process only) and
writes their rows; ``--summary`` prints, per (case,
setting), the recorded default, the default under the rule (recorded where the winner is the same, rerun where
it changed) and both beside breaching's ``modern`` row of the same cell, paired.

    python benchmarks/race_replay.py --rows results/suite_v2_main8.jsonl --tolerance 0 --list
    python benchmarks/race_replay.py --rows results/suite_v2_main8.jsonl --tolerance 0 --run --out results/x.jsonl
    python benchmarks/race_replay.py --rows results/suite_v2_main8.jsonl --tolerance 0 --summary --out results/x.jsonl

``--pick agreement`` replays the agreement tie-break (``race_pick``) instead of TV; it needs rows recorded since the
race keeps its agreement matrix (``agreements_db``), and leaves older rows out of the list and the table.

Rerun one recorded cell at today's rule first (``--check``): the rows must agree, or the replay does not stand
for a rerun (another torch, thread count or code).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch

import suite
from suite_cases import CASES, Setting
from unlearnleak.attacks.feature_recovery import PRESETS
from unlearnleak.attacks.feature_recovery.adaptive import candidate_support, pick_winner

Cell = tuple[str, str, int]


def recorded(paths: list[Path], args: argparse.Namespace) -> dict[Cell, dict[str, dict[str, Any]]]:
    """The recorded rows the suite itself would select today (their key is today's ``suite.row_key``: this
    default preset, these iterations): cell → method name → row."""
    cells: dict[Cell, dict[str, dict[str, Any]]] = {}
    for path in paths:
        for key, row in suite.read_rows(path).items():
            if row["case"] not in CASES:
                continue
            setting = _setting(row["setting"])
            if key == suite.row_key(CASES.get(row["case"]), setting, int(row["sample"]), row["name"], args):
                cells.setdefault((row["case"], row["setting"], int(row["sample"])), {})[row["name"]] = row
    return cells


def _setting(name: str) -> Setting:
    """``approx-k1-N32`` → Setting("approx", 1, 32)."""
    method, k, n = name.split("-")
    return Setting(method, int(k[1:]), int(n[1:]))


def replay(race: dict[str, Any], tolerance: float, pick: str = "tv") -> str:
    """The recipe the pick rule with ``tolerance`` chooses from the recorded held-out costs and TVs (and the
    recorded agreement gate: its measured agreement and threshold, the first recipe's restarts as faithful); with
    ``pick="agreement"`` the tie-break is the recorded agreement matrix (``race_pick``)."""
    first = race["candidates"][0]["recipe"]
    faithful = [i for i, c in enumerate(race["candidates"]) if c["recipe"] == first]
    support = candidate_support(race["agreements_db"], [c["recipe"] for c in race["candidates"]]) \
        if pick == "agreement" else None
    winner, _ = pick_winner(race["heldout_costs"], race["total_variation"], tolerance, faithful=faithful,
                            agreement=race.get("agreement_db"), threshold=race.get("agreement_threshold") or 0.0,
                            support=support)
    return str(race["candidates"][winner]["recipe"])


def replayable(race: dict[str, Any], pick: str) -> bool:
    """Whether a recorded race holds what the rule needs (the agreement matrix only since it was recorded)."""
    return bool(race.get("raced") and race.get("heldout_costs")) and (pick == "tv" or bool(race.get("agreements_db")))


def changed(cells: dict[Cell, dict[str, dict[str, Any]]], tolerance: float, pick: str = "tv") -> list[Cell]:
    """The raced cells whose winner differs under ``tolerance`` (and ``pick``)."""
    out = []
    for cell, methods in sorted(cells.items()):
        race = (methods.get("default", {}).get("result") or {}).get("race") or {}
        if replayable(race, pick) and replay(race, tolerance, pick) != race["chosen_recipe"]:
            out.append(cell)
    return out


def rerun(cell: Cell, tolerance: float, iterations: int, threads: int, pick: str = "tv") -> dict[str, Any]:
    """The suite's ``default`` row of ``cell`` with the default preset's ``race_tolerance`` (and ``race_pick``)
    set."""
    default = suite.default_preset()
    PRESETS._items[default] = PRESETS.get(default).with_overrides(race_tolerance=tolerance,  # this process only
                                                                  race_pick=pick)
    case_name, setting_name, sample = cell
    args = argparse.Namespace(iterations=iterations, device="cpu", threads=threads, paper_restarts=1,
                              save_images=None)
    rows = suite.run_cell((CASES.get(case_name), _setting(setting_name), sample,
                           {"default": f"replay-{pick}-tol{tolerance:g}-{case_name}-{setting_name}-{sample}"}, args))
    row = next(r for r in rows if r["name"] == "default")
    return {**row, "race_tolerance": tolerance, "race_pick": pick}


def summary(cells: dict[Cell, dict[str, dict[str, Any]]], reruns: dict[Cell, dict[str, Any]], moved: set[Cell],
            tolerance: float, pick: str = "tv") -> list[dict[str, Any]]:
    """Per (case, setting): recorded default, default under the rule, each minus breaching `modern`, paired (only
    the cells whose recorded race the rule can replay)."""
    groups: dict[tuple[str, str], list[tuple[float, float, float]]] = {}
    missing = 0
    for cell, methods in sorted(cells.items()):
        old, peer = methods.get("default"), methods.get("breaching_modern")
        if old is None or peer is None or old["result"].get("psnr") is None or peer["result"].get("psnr") is None:
            continue
        race = old["result"].get("race") or {}
        if race.get("raced") and not replayable(race, pick):
            continue
        if cell in moved and cell not in reruns:
            missing += 1
            continue
        new = reruns[cell]["result"]["psnr"] if cell in moved else old["result"]["psnr"]
        groups.setdefault(cell[:2], []).append((old["result"]["psnr"], new, peer["result"]["psnr"]))
    print(f"race_tolerance {tolerance:g}, race_pick {pick}: PSNR dB, mean ± 95 % t-interval, paired")
    print("| case | setting | n | recorded | under the rule | rule − recorded | recorded − modern | rule − modern |")
    print("|---|---|---|---|---|---|---|---|")
    table = []
    for (case, setting), v in groups.items():
        columns = {"recorded": [a for a, _, _ in v], "rule": [b for _, b, _ in v],
                   "rule_minus_recorded": [b - a for a, b, _ in v], "recorded_minus_modern": [a - m for a, _, m in v],
                   "rule_minus_modern": [b - m for _, b, m in v]}
        print(f"| {case} | {setting} | {len(v)} | "
              + " | ".join(_ci(c, "minus" in name) for name, c in columns.items()) + " |")
        table.append({"case": case, "setting": setting, **{k: suite.interval(c) for k, c in columns.items()}})
    if missing:
        print(f"({missing} changed cells not rerun yet: --run)")
    return table


def confidence(cells: dict[Cell, dict[str, dict[str, Any]]]) -> None:
    """Does the race's agreement predict how good the default's image is? Spearman's ρ between the highest PSNR
    between two recipes' scored images and the default's PSNR, per case and over all cells that record it."""
    from scipy.stats import spearmanr

    points: dict[str, list[tuple[float, float]]] = {}
    for (case, _, _), methods in sorted(cells.items()):
        result = methods.get("default", {}).get("result") or {}
        matrix = (result.get("race") or {}).get("agreements_db")
        if matrix and result.get("psnr") is not None:
            best = max(matrix[i][j] for i in range(len(matrix)) for j in range(i + 1, len(matrix)))
            points.setdefault(case, []).append((best, result["psnr"]))
    every = [p for v in points.values() for p in v]
    for case, v in [*points.items(), ("all", every)]:
        if len(v) > 2:
            rho = spearmanr([a for a, _ in v], [b for _, b in v]).statistic
            print(f"{case}: n = {len(v)}, agreement {min(a for a, _ in v):.1f}–{max(a for a, _ in v):.1f} dB, "
                  f"Spearman ρ {rho:+.2f}")


def _ci(values: list[float], signed: bool) -> str:
    """Mean ± half-width of the 95 % t-interval (the suite's); a difference with its sign."""
    iv = suite.interval(values)
    assert iv is not None
    mean = f"{iv['mean']:+.2f}" if signed else f"{iv['mean']:.2f}"
    return mean if iv["n"] < 2 else f"{mean}±{iv['ci95']:.2f}"


def _usage_error(args: argparse.Namespace) -> str | None:
    """What is wrong with the command line, as one sentence that says how to fix it (None: nothing)."""
    missing = [str(p) for p in args.rows if not p.is_file()]
    if missing:
        return f"--rows {', '.join(missing)}: no such file; give the suite's JSON lines (benchmarks/results/…)"
    if args.tolerance < 0:
        return f"--tolerance {args.tolerance:g}: a race tolerance is >= 0 (0: the lowest held-out cost alone)"
    if (args.run or args.summary) and args.out is None:
        return "--run and --summary need --out, the JSON lines of the reruns"
    if args.check and (len(args.check.split(":")) != 3 or not args.check.split(":")[2].isdigit()):
        return f"--check {args.check!r}: name a cell as case:setting:sample, e.g. convnet16-60:approx-k1-N32:0"
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=Path, action="append", required=True, help="recorded suite rows (repeatable)")
    parser.add_argument("--tolerance", type=float, required=True, help="the pick rule's race_tolerance to replay")
    parser.add_argument("--pick", choices=("tv", "agreement"), default="tv",
                        help="the tie-break to replay (race_pick; agreement needs rows that record the matrix)")
    parser.add_argument("--list", action="store_true", help="print the cells whose winner changes")
    parser.add_argument("--run", action="store_true", help="rerun the changed cells (missing from --out)")
    parser.add_argument("--check", help="rerun this recorded cell (case:setting:sample) at today's rule")
    parser.add_argument("--summary", action="store_true", help="the paired table (recorded / under the rule)")
    parser.add_argument("--confidence", action="store_true",
                        help="Spearman's ρ between the race's highest agreement and the default's PSNR")
    parser.add_argument("--out", type=Path, help="rows of the reruns (JSON lines, resumable)")
    parser.add_argument("--iterations", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    problem = _usage_error(args)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    args.device, args.paper_restarts = "cpu", 1  # what the suite's row keys hold besides the cell
    cells = recorded(args.rows, args)
    moved = changed(cells, args.tolerance, args.pick)
    if args.list:
        for case, setting, sample in moved:
            race = cells[(case, setting, sample)]["default"]["result"]["race"]
            print(f"{case}:{setting}:{sample}  {race['chosen_recipe']} -> {replay(race, args.tolerance, args.pick)}")
        usable = sum(replayable((m.get("default", {}).get("result") or {}).get("race") or {}, args.pick)
                     for m in cells.values())
        print(f"{len(moved)} of {usable} replayable recorded cells change winner")
    if args.check:
        case, setting, sample = args.check.split(":")
        cell = (case, setting, int(sample))
        if cell not in cells or "default" not in cells[cell]:
            print(f"error: no recorded default row for {args.check} in --rows", file=sys.stderr)
            return 2
        old = cells[cell]["default"]["result"]
        row = rerun(cell, PRESETS.get(suite.default_preset()).race_tolerance, args.iterations, args.threads)
        same = row["result"]["psnr"] == old["psnr"]
        print(f"{args.check}: recorded {old['psnr']:.6f}, rerun {row['result']['psnr']:.6f}: "
              f"{'identical' if same else 'DIFFERENT: the replay does not stand for a rerun here'}")
        if not same:
            return 1
    reruns = {(r["case"], r["setting"], int(r["sample"])): r for r in suite.read_rows(args.out).values()} \
        if args.out else {}
    if args.run:
        for cell in moved:
            if cell not in reruns:
                row = rerun(cell, args.tolerance, args.iterations, args.threads, args.pick)
                suite.append_row(args.out, row)
                reruns[cell] = row
                print(f"{':'.join(map(str, cell))}: {row['result']['psnr']:.2f} dB "
                      f"({row['result']['race']['chosen_recipe']})", flush=True)
    if args.confidence:
        confidence(cells)
    table = summary(cells, reruns, set(moved), args.tolerance, args.pick) if args.summary else None
    print(json.dumps({"tolerance": args.tolerance, "cells": sum("default" in m for m in cells.values()),
                      "changed": len(moved), "rerun": sum(c in reruns for c in moved), "summary": table}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
