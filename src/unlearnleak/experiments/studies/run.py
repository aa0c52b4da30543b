"""Run a study into a run folder: rows to results.jsonl as they come, then summary, table and figures."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from unlearnleak.errors import ConfigError
from unlearnleak.experiments.studies.defenses import DefensesStudyConfig, run_defenses_study, summarize_defenses
from unlearnleak.experiments.studies.methods import MethodsStudyConfig, run_methods_study, summarize_methods
from unlearnleak.experiments.studies.report import defenses_table, methods_figure, methods_table, tradeoff_figure
from unlearnleak.experiments.studies.setting import check_setting
from unlearnleak.metrics import load_lpips
from unlearnleak.storage import environment_record, output_folder, to_json, write_json_atomic, write_text_atomic

Kind = Literal["methods", "defenses"]


def run_study(kind: Kind, config: BaseModel, out: str | Path, *, overwrite: bool = False,
              log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run study ``kind`` with ``config`` and publish ``out`` atomically (the whole folder or nothing)."""
    started = time.perf_counter()
    if not isinstance(config, MethodsStudyConfig | DefensesStudyConfig):
        raise ConfigError(f"no study runs a {type(config).__name__}")
    splits = check_setting(config.setting)  # data, model fit, classes, cache: before the folder is staged
    lpips = load_lpips()
    with output_folder(out, overwrite=overwrite) as folder:
        rows: list[dict[str, Any]] = []
        if isinstance(config, MethodsStudyConfig):
            runner = run_methods_study(config, lpips, log, splits=splits)
        else:
            runner = run_defenses_study(config, lpips, log, splits=splits)
        with open(folder / "results.jsonl", "w", encoding="utf-8") as fh:
            for row in runner:
                rows.append(row)
                fh.write(to_json(row) + "\n")
                fh.flush()
        baselines = rows[0]
        summary: dict[str, Any] = {"study": kind, "config": config.model_dump(mode="json"), "baselines": baselines,
                                   "lpips_available": lpips is not None}
        if isinstance(config, MethodsStudyConfig):
            table = summarize_methods(rows[1:])
            summary["methods"] = table
            write_text_atomic(folder / "table.md", methods_table(table, baselines))
            summary["figures"] = [methods_figure(table, baselines, folder / "methods.png").name]
        else:
            points = summarize_defenses(rows[1:])
            summary["points"] = points
            write_text_atomic(folder / "table.md", defenses_table(points, baselines))
            summary["figures"] = [tradeoff_figure(points, baselines, folder / "tradeoff.png").name]
        summary["seconds"] = time.perf_counter() - started
        summary["environment"] = environment_record()
        write_json_atomic(folder / "summary.json", summary)
    return summary
