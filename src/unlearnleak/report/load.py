"""Read a run folder (results.jsonl, run.json, experiment.yaml, cells/) whole and checked, before anything is written.

Rows are read by the one reader (``run_folder.read_rows``) as typed :class:`~unlearnleak.rows.CellRow` models; the
tables and figures receive each as its dict (``CellRow.to_dict``). Every command writes such a folder (`run`,
`sweep`, `recover`, `infer-label`, `demo`); a `recover`/`infer-label` folder of an earlier unlearnleak (its
results.json or guess.json only) is converted here into the same one-cell row.

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
from unlearnleak.rows import CellRow, RowError, parse_row
from unlearnleak.run_folder import (
    CELLS_DIR,
    EXPERIMENT_FILE,
    RESULTS_FILE,
    RUN_FILE,
    inside_without_links,
    read_rows,
    result_problem,
)
from unlearnleak.storage import read_safetensors

AUDIT_FILE = "report.json"
AUDIT_FORMAT = "unlearnleak.audit/1"
AUDIT_CELL = "audit"  # the one cell of an audit folder (unlearnleak.audit.run_row)
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
    cells: list[CellRow] = field(default_factory=list)  # the typed rows (``rows`` holds their dicts)
    legacy: str | None = None  # the command of an earlier `recover`/`infer-label` folder (files at its top)

    @property
    def ok(self) -> list[dict[str, Any]]:
        """The rows of cells that finished."""
        return [r for r in self.rows if r.get("status") == "ok"]

    @property
    def errors(self) -> list[dict[str, Any]]:
        """The rows of cells that failed."""
        return [r for r in self.rows if r.get("status") != "ok"]


def is_audit_folder(folder: Path) -> bool:
    """An audit folder (``unlearnleak audit --out``) holds report.json, and either no results.jsonl (an earlier
    audit) or the one cell the audit writes (cells/audit/): its page is the audit's, verdict first."""
    if not (folder / AUDIT_FILE).is_file():
        return False
    return not (folder / RESULTS_FILE).exists() or (folder / CELLS_DIR / AUDIT_CELL).is_dir()


def _refuse_old_study(folder: Path) -> None:
    """A study folder of an earlier unlearnleak (summary.json naming its study, rows without cells) cannot be
    converted: its rows lack the cells' configs. Say so, where its tables are, and what writes a run folder now."""
    summary = folder / "summary.json"
    if (folder / RUN_FILE).exists() or not summary.is_file() or summary.is_symlink():
        return
    try:
        kind = json.loads(summary.read_text(encoding="utf-8")).get("study")
    except (OSError, ValueError, AttributeError):
        return
    if kind in ("methods", "defenses"):
        raise CheckpointError(f"{folder} is a `study {kind}` folder of an earlier unlearnleak (its tables are in "
                              f"table.md), which cannot be converted (its rows hold no cell configs); rerun "
                              f"`unlearnleak study {kind} --out NEW` (it now writes run folders) to report it")


def load_run(folder: str | Path) -> RunData:
    """Read and check the run folder ``folder``; raise CheckpointError (one line) on any bad input."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"RUN_DIR {folder} is not a folder; give the --out folder of `unlearnleak run` or "
                              f"`unlearnleak sweep` (or of `unlearnleak audit`)")
    results = folder / RESULTS_FILE
    if not results.is_file():
        single = _command_folder(folder)
        if single is not None:
            return single
        raise CheckpointError(f"{results} is missing: {folder} is not a run folder; give the --out folder of "
                              f"`unlearnleak run`/`sweep`, `recover`, `infer-label` or `audit`")
    for name in (RESULTS_FILE, RUN_FILE, EXPERIMENT_FILE, CELLS_DIR):
        _refuse_link(folder, folder / name)
    _refuse_old_study(folder)
    rows, superseded = _read_rows(results)
    data = _run_data(folder, [_unless_empty(row, results) for row in rows], superseded=superseded)
    data.run = _read_run_json(folder / RUN_FILE)
    yaml_path = folder / EXPERIMENT_FILE
    if yaml_path.is_file():
        data.experiment_yaml = _read_text(yaml_path)
    _read_cells(data)
    return data


def _run_data(folder: Path, cells: list[CellRow], *, superseded: int = 0, legacy: str | None = None) -> RunData:
    return RunData(folder=folder, rows=[cell.to_dict() for cell in cells], cells=cells, superseded=superseded,
                   legacy=legacy)


def _read_cells(data: RunData) -> None:
    """Check every finished cell's files and read its tensors (image feature recovery)."""
    for row in data.cells:
        if row.status != "ok":
            continue
        _check_artifacts(data, row)
        tensors = _read_tensors(data, row)
        if tensors is not None:
            data.tensors[row.cell] = tensors


def _refuse_link(folder: Path, path: Path) -> None:
    """Refuse a file of the run that is a symbolic link (or lies behind one): a report never reads outside it."""
    if os.path.lexists(path):
        problem = inside_without_links(folder, path)
        if problem is not None:
            raise CheckpointError(f"{problem}; copy the file into the run folder instead of linking it")


def _unless_empty(row: CellRow, results: Path) -> CellRow:
    """An "ok" row without the results its config asks for is shown as a failed cell, never left out."""
    if row.status != "ok":
        return row
    problem = result_problem(row)
    if problem is None:
        return row
    return row.model_copy(update={"status": "error", "error": f"the row in {results.name} says ok, but {problem}; "
                                  "run the command that wrote this folder again to rerun the cell"})


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path} cannot be read as UTF-8 text ({exc}); restore it from the run") from None


def _read_rows(path: Path) -> tuple[list[CellRow], int]:
    """The rows of results.jsonl, one per cell (a later "ok" row replaces an earlier error row)."""
    rows, torn = read_rows(path)
    if torn:
        line = path.read_bytes().count(b"\n") + 1
        raise CheckpointError(f"{path} line {line} is not valid JSON (a torn last "
                              "line, from a write cut short); re-run `unlearnleak sweep` on the same folder to "
                              "repair it, or remove the line")
    by_cell: dict[str, CellRow] = {}
    for row in rows:
        previous = by_cell.get(row.cell)
        if previous is None or row.status == "ok" or previous.status != "ok":
            by_cell[row.cell] = row
    return list(by_cell.values()), len(rows) - len(by_cell)


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


def artifact_path(data: RunData, row: CellRow, name: str) -> Path:
    """The file a row's artifact entry names, refused if it would leave the cell's folder (also by a link).
    The folder of an earlier `recover`/`infer-label` is its own cell folder."""
    rel = PurePosixPath(name)
    if rel.is_absolute() or ".." in rel.parts or not rel.parts or "\x00" in name:
        raise CheckpointError(f"cell {row.cell}: artifact path {name!r} leaves the cell folder; the row was not "
                              f"written by unlearnleak")
    cell_dir = data.folder if data.legacy else data.folder / CELLS_DIR / row.cell
    path = cell_dir / Path(*rel.parts)
    _refuse_link(data.folder, path)
    return path


def _artifacts(row: CellRow) -> dict[str, str]:
    out: dict[str, str] = {}
    for attack in ("feature_recovery", "label_inference"):
        section = row.section(attack)
        for key, value in (section.artifacts if section is not None else {}).items():
            if value is not None and key != "probes":  # saved probes: a folder for replay, nothing the report reads
                out[f"{attack}.{key}"] = value
    return out


def _check_artifacts(data: RunData, row: CellRow) -> None:
    for key, name in _artifacts(row).items():
        path = artifact_path(data, row, name)
        if not path.is_file():
            raise CheckpointError(f"{path} ({key} of cell {row.cell}) is missing; rerun the cell (the command that "
                                  f"wrote {data.folder}) or restore the file")
        if path.suffix.lower() == ".png":
            with path.open("rb") as handle:
                if handle.read(8) != PNG_SIGNATURE:
                    raise CheckpointError(f"{path} ({key} of cell {row.cell}) is not a PNG image; rerun the "
                                          f"cell or restore the file")


def _first(tensors: dict[str, torch.Tensor], keys: tuple[str, ...]) -> torch.Tensor | None:
    return next((tensors[k] for k in keys if k in tensors), None)


def _read_tensors(data: RunData, row: CellRow) -> CellTensors | None:
    """Truth and reconstruction of an image feature-recovery cell (None for tabular rows or no artifacts)."""
    fr = row.feature_recovery
    if fr is None or not fr.image:
        return None
    truth_name, recon_name = fr.artifacts.get("truth"), fr.artifacts.get("reconstruction")
    if truth_name is None or recon_name is None:
        return None
    found: dict[str, torch.Tensor] = {}
    truth_labels = None
    for key, name in (("truth", truth_name), ("reconstruction", recon_name)):
        path = artifact_path(data, row, name)
        tensors = read_safetensors(path, f"feature_recovery.artifacts.{key} of cell {row.cell}")
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
        raise CheckpointError(f"cell {row.cell}: truth {tuple(found['truth'].shape)} and reconstruction "
                              f"{tuple(found['reconstruction'].shape)} differ in shape; re-run the cell")
    return CellTensors(found["truth"], None if truth_labels is None else truth_labels.long().flatten(),
                       found["reconstruction"])


# ---- the folders of `recover` and `infer-label` written before they wrote run folders ---------------------------

# command → (its file, the format it writes, the key of the run row's section in that file, the section)
_SCENARIO_KEYS = ("dataset", "model", "method", "n_train", "k")
_COMMANDS: dict[str, tuple[str, str, str, str]] = {
    "recover": ("results.json", "unlearnleak.recover/1", "feature_recovery", "feature_recovery"),
    "infer-label": ("guess.json", "unlearnleak.infer-label/1", "evaluation", "label_inference"),
}


def _command_folder(folder: Path) -> RunData | None:
    """The `--out` folder of an earlier `recover` or `infer-label` (results.json or guess.json, no results.jsonl)
    converted into a run of one cell (its files lie at the folder's top), or None when it is neither. A folder
    written before the row section was stored fails with one line saying to rerun the command."""
    for command, (name, fmt, key, section) in _COMMANDS.items():
        path = folder / name
        if not path.is_file():
            continue
        _refuse_link(folder, path)
        record = _read_run_json(path)
        if command == "recover" and record.get("format") != fmt:
            continue  # a results.json of something else
        rerun = f"rerun `unlearnleak {command} … --out {folder} --overwrite` (it now writes a run folder)"
        if not isinstance(record.get(key), dict):
            raise CheckpointError(f"{path} was written by an earlier unlearnleak `{command}` and lacks its result "
                                  f"row; {rerun} to report it")
        params = {"command": command, **{k: record[k] for k in ("preset", "seed") if isinstance(record.get(k),
                                                                                              (str, int))}}
        given: dict[str, Any] = record["scenario"] if isinstance(record.get("scenario"), dict) else {}
        scenario = {k: v for k, v in given.items() if k in _SCENARIO_KEYS and isinstance(v, str | int)}
        try:
            row = parse_row({"cell": command, "status": "ok", "params": params, "config": {"name": command},
                             **scenario, section: dict(record[key])})
        except RowError as exc:
            raise CheckpointError(f"{path}: {exc}; {rerun}") from None
        problem = result_problem(row, enabled=[section])
        if problem is not None:
            raise CheckpointError(f"{path}: {problem}; {rerun}")
        data = _run_data(folder, [row], legacy=command)
        data.run = {"command": command, "source": name}
        _read_cells(data)
        return data
    return None
