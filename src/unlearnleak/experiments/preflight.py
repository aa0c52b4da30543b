"""Checks that would otherwise fail every cell one by one (data missing, a model that does not fit, a forget set
that cannot be drawn, an unwritable cache folder), run once in the driver before any cell starts.

Each distinct dataset is loaded once; each distinct scenario is planned (``plan_scenario``: model built and run
on one zero input, D_ft and D_u drawn, cache folder tried), training nothing.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING

from unlearnleak.errors import ConfigError, UnlearnleakError, one_line

if TYPE_CHECKING:
    from unlearnleak.data import Dataset
    from unlearnleak.experiments.schema import Cell


def check_cells(cells: Sequence[Cell]) -> None:
    """Plan every cell's scenario before any runs; the first problem is raised once, naming the cell.

    Raises:
        ConfigError / DataError (UnlearnleakError): the scenario's own one-line message, prefixed with the
        cell's swept values when the grid has several cells.
    """
    from unlearnleak.data import load_dataset
    from unlearnleak.scenario import plan_scenario

    loaded: dict[str, tuple[Dataset, Dataset | None]] = {}
    planned: set[str] = set()
    for cell in cells:
        scenario = cell.config.scenario_for_run()
        ident = json.dumps(scenario.model_dump(mode="json"), sort_keys=True, default=str)
        if ident in planned:
            continue
        planned.add(ident)
        data_key = json.dumps([scenario.dataset, scenario.data_dir, scenario.dataset_options, scenario.train_split,
                               scenario.test_split], sort_keys=True, default=str)
        try:
            if data_key not in loaded:
                options = scenario.dataset_options
                train = load_dataset(scenario.dataset, scenario.train_split, scenario.data_dir, **options)
                test = None if scenario.test_split is None else \
                    load_dataset(scenario.dataset, scenario.test_split, scenario.data_dir, **options)
                loaded[data_key] = (train, test)
            plan_scenario(scenario, loaded[data_key])
        except UnlearnleakError as exc:
            if len(cells) == 1:
                raise
            shown = ", ".join(f"{k}={v!r}" for k, v in cell.params.items())
            raise ConfigError(f"cell ({shown}): {one_line(str(exc))}") from exc
