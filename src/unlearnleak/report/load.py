"""Read a run folder (results.jsonl, run.json, experiment.yaml, cells/) whole and checked, before anything is written.

Every problem a user can cause — no folder, no results.jsonl, a malformed line, a missing or unreadable cell
artifact — raises :class:`~unlearnleak.errors.CheckpointError` with one line naming the file and the fix, so
that ``unlearnleak report`` fails before it writes anything. Tensors are read from safetensors only.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import torch

from unlearnleak.errors import CheckpointError
from unlearnleak.experiments.rows import inside_without_links, result_problem, valid_cell_name
from unlearnleak.storage import read_safetensors

RESULTS_FILE = "results.jsonl"
RUN_FILE = "run.json"
EXPERIMENT_FILE = "experiment.yaml"
CELLS_DIR = "cells"
AUDIT_FILE = "report.json"
AUDIT_FORMAT = "unlearnleak.audit/1"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Tensor names accepted in the cells' safetensors (the pipeline's, the Reconstruction file's, the audit's).
IMAGE_KEYS = ("x", "images", "forget_x", "rows")
LABEL_KEYS = ("y", "labels", "forget_y")


@dataclass
class CellTensors:
    """A feature-recovery cell's truth (D_u) and reconstruction, both (k, C, H, W) in [0, 1]."""

    truth: torch.Tensor
    truth_labels: torch.Tensor | None
    reconstruction: torch.Tensor


@dataclass
class RunData:
    """Everything the report reads from one run folder."""

    folder: Path
    rows: list[dict[str, Any]]  # one per cell: its last "ok" row, else its last row
    run: dict[str, Any] = field(default_factory=dict)  # run.json ({} when absent)
    experiment_yaml: str | None = None
    tensors: dict[str, CellTensors] = field(default_factory=dict)  # cell hash → tensors (image recovery)
    superseded: int = 0  # rows replaced by a later row of the same cell (retried errors)

    @property
    def ok(self) -> list[dict[str, Any]]:
        """The rows of cells that finished."""
        return [r for r in self.rows if r.get("status") == "ok"]

    @property
    def errors(self) -> list[dict[str, Any]]:
        """The rows of cells that failed."""
        return [r for r in self.rows if r.get("status") != "ok"]


def is_audit_folder(folder: Path) -> bool:
    """An audit folder (``unlearnleak audit --out``) holds report.json and no results.jsonl."""
    return (folder / AUDIT_FILE).is_file() and not (folder / RESULTS_FILE).exists()


def load_run(folder: str | Path) -> RunData:
    """Read and check the run folder ``folder``; raise CheckpointError (one line) on any bad input."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"RUN_DIR {folder} is not a folder; give the --out folder of `unlearnleak run` or "
                              f"`unlearnleak sweep` (or of `unlearnleak audit`)")
    results = folder / RESULTS_FILE
    if not results.is_file():
        raise CheckpointError(f"{results} is missing: {folder} is not a run folder; give the --out folder of "
                              f"`unlearnleak run`/`sweep` (cells write their rows there when they finish)")
    for name in (RESULTS_FILE, RUN_FILE, EXPERIMENT_FILE, CELLS_DIR):
        _refuse_link(folder, folder / name)
    rows, superseded = _read_rows(results)
    data = RunData(folder=folder, rows=[_unless_empty(row, results) for row in rows], superseded=superseded)
    data.run = _read_run_json(folder / RUN_FILE)
    yaml_path = folder / EXPERIMENT_FILE
    if yaml_path.is_file():
        data.experiment_yaml = _read_text(yaml_path)
    for row in data.ok:
        _check_artifacts(folder, row)
        tensors = _read_tensors(folder, row)
        if tensors is not None:
            data.tensors[row["cell"]] = tensors
    return data


def _refuse_link(folder: Path, path: Path) -> None:
    """Refuse a file of the run that is a symbolic link (or lies behind one): a report never reads outside it."""
    if os.path.lexists(path):
        problem = inside_without_links(folder, path)
        if problem is not None:
            raise CheckpointError(f"{problem}; copy the file into the run folder instead of linking it")


def _unless_empty(row: dict[str, Any], results: Path) -> dict[str, Any]:
    """An "ok" row without the results its config asks for is shown as a failed cell, never left out."""
    if row.get("status") != "ok":
        return row
    problem = result_problem(row)
    if problem is None:
        return row
    return {**row, "status": "error", "error": f"the row in {results.name} says ok, but {problem}; run the same "
                                              "`unlearnleak run|sweep` command on this folder to rerun the cell"}


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path} cannot be read as UTF-8 text ({exc}); restore it from the run") from None


def _read_rows(path: Path) -> tuple[list[dict[str, Any]], int]:
    """The rows of results.jsonl, one per cell (a later "ok" row replaces an earlier error row)."""
    by_cell: dict[str, dict[str, Any]] = {}
    count = 0
    lines = _read_text(path).splitlines()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path} line {number}"
        fix = "re-run `unlearnleak sweep` on the same folder to repair a torn last line, or remove the line"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise CheckpointError(f"{where} is not valid JSON ({exc.msg}); {fix}") from None
        if not isinstance(row, dict):
            raise CheckpointError(f"{where} is a JSON {type(row).__name__}, not an object (a row); {fix}")
        cell, status = row.get("cell"), row.get("status")
        if not valid_cell_name(cell):
            raise CheckpointError(f"{where} has no valid \"cell\" (the cell's hash, letters and digits); {fix}")
        if status not in ("ok", "error"):
            raise CheckpointError(f"{where} has \"status\" {status!r}; expected \"ok\" or \"error\"; {fix}")
        if status == "ok":
            _check_row_shape(row, where)
        count += 1
        previous = by_cell.get(cell)
        if previous is None or status == "ok" or previous.get("status") != "ok":
            by_cell[cell] = row
    return list(by_cell.values()), count - len(by_cell)


def _check_row_shape(row: dict[str, Any], where: str) -> None:
    """The sections the report reads must have the contract's types (a hand-edited row fails here)."""
    expected: dict[str, type | tuple[type, ...]] = {
        "params": dict, "utility": (dict, type(None)), "feature_recovery": (dict, type(None)),
        "label_inference": (dict, type(None))}
    for key, kind in expected.items():
        if key in row and not isinstance(row[key], kind):
            raise CheckpointError(f"{where}: \"{key}\" is a {type(row[key]).__name__}, not an object; the row "
                                  f"was not written by `unlearnleak run`; remove the line and re-run the cell")
    fr = row.get("feature_recovery")
    if fr is not None:
        for key in ("metrics", "baselines", "artifacts"):
            if not isinstance(fr.get(key, {}), dict):
                raise CheckpointError(f"{where}: feature_recovery.{key} is not an object; remove the line and "
                                      f"re-run the cell")
        if not isinstance(fr.get("samples", []), list):
            raise CheckpointError(f"{where}: feature_recovery.samples is not a list; remove the line and re-run")
    li = row.get("label_inference")
    if li is not None and not isinstance(li.get("changes", []), list):
        raise CheckpointError(f"{where}: label_inference.changes is not a list; remove the line and re-run")


def _read_run_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        value = json.loads(_read_text(path))
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path} is not valid JSON ({exc.msg}); restore it or delete it (the report then "
                              f"lacks the run's provenance)") from None
    if not isinstance(value, dict):
        raise CheckpointError(f"{path} is not a JSON object; restore it or delete it")
    return value


def artifact_path(folder: Path, row: dict[str, Any], name: str) -> Path:
    """The file a row's artifact entry names, refused if it would leave the cell's folder (also by a link)."""
    rel = PurePosixPath(name)
    if rel.is_absolute() or ".." in rel.parts or not rel.parts or "\x00" in name:
        raise CheckpointError(f"cell {row['cell']}: artifact path {name!r} leaves the cell folder; the row was not "
                              f"written by `unlearnleak run`")
    path = folder / CELLS_DIR / row["cell"] / Path(*rel.parts)
    _refuse_link(folder, path)
    return path


def _artifacts(row: dict[str, Any]) -> dict[str, str]:
    out: dict[str, str] = {}
    for section in ("feature_recovery", "label_inference"):
        part = row.get(section) or {}
        for key, value in (part.get("artifacts") or {}).items():
            if value is not None:
                if not isinstance(value, str):
                    raise CheckpointError(f"cell {row['cell']}: {section}.artifacts.{key} is not a path")
                out[f"{section}.{key}"] = value
    return out


def _check_artifacts(folder: Path, row: dict[str, Any]) -> None:
    for key, name in _artifacts(row).items():
        path = artifact_path(folder, row, name)
        if not path.is_file():
            raise CheckpointError(f"{path} ({key} of cell {row['cell']}) is missing; re-run the cell (delete its "
                                  f"row from {RESULTS_FILE} and run the sweep again) or restore the file")
        if path.suffix.lower() == ".png":
            with path.open("rb") as handle:
                if handle.read(8) != PNG_SIGNATURE:
                    raise CheckpointError(f"{path} ({key} of cell {row['cell']}) is not a PNG image; re-run the "
                                          f"cell or restore the file")


def _first(tensors: dict[str, torch.Tensor], keys: tuple[str, ...]) -> torch.Tensor | None:
    return next((tensors[k] for k in keys if k in tensors), None)


def _read_tensors(folder: Path, row: dict[str, Any]) -> CellTensors | None:
    """Truth and reconstruction of an image feature-recovery cell (None for tabular rows or no artifacts)."""
    fr = row.get("feature_recovery") or {}
    arts = fr.get("artifacts") or {}
    if not fr.get("image", True) or "truth" not in arts or "reconstruction" not in arts:
        return None
    found: dict[str, torch.Tensor] = {}
    truth_labels = None
    for key in ("truth", "reconstruction"):
        path = artifact_path(folder, row, arts[key])
        tensors = read_safetensors(path, f"feature_recovery.artifacts.{key} of cell {row['cell']}")
        x = _first(tensors, IMAGE_KEYS)
        if x is None:
            raise CheckpointError(f"{path} holds none of the tensors {', '.join(IMAGE_KEYS)}; re-run the cell")
        if x.ndim != 4 or x.shape[1] not in (1, 3):
            raise CheckpointError(f"{path}: images of shape {tuple(x.shape)}; expected (k, 1 or 3, H, W)")
        if not bool(torch.isfinite(x.float()).all()):
            raise CheckpointError(f"{path} holds NaN or Inf pixels; re-run the cell")
        found[key] = x.float()
        if key == "truth":
            truth_labels = _first(tensors, LABEL_KEYS)
    if found["truth"].shape != found["reconstruction"].shape:
        raise CheckpointError(f"cell {row['cell']}: truth {tuple(found['truth'].shape)} and reconstruction "
                              f"{tuple(found['reconstruction'].shape)} differ in shape; re-run the cell")
    return CellTensors(found["truth"], None if truth_labels is None else truth_labels.long().flatten(),
                       found["reconstruction"])
