"""Where cells run: a registry of executors (local process pool, Ray) behind one small interface.

Every executor runs :func:`execute_cell` in a worker and hands each :class:`CellOutcome` back to the driver as
soon as it finishes; the worker never touches the run folder (so nothing needs a shared filesystem), and the
driver writes everything.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from typing import Protocol

from unlearnleak.errors import ConfigError
from unlearnleak.experiments.executors.cell import CellOutcome, CellTask, execute_cell, resolve_cell_fn
from unlearnleak.registry import Registry


class Executor(Protocol):
    """Runs cell tasks somewhere and reports each outcome to the driver as it finishes."""

    name: str
    workers: int | None  # how many cells run at once (None: as many as the executor's resources allow)

    def size(self, tasks: Sequence[CellTask]) -> int | None:
        """How many of ``tasks`` run at once (recorded in run.json; None: as many as the resources allow)."""

    def preflight(self, tasks: Sequence[CellTask]) -> None:
        """Fail fast (ConfigError, one line) on what would break every cell, e.g. a device that is not there."""

    def run(self, tasks: Sequence[CellTask], on_done: Callable[[CellTask, CellOutcome], None]) -> None:
        """Run ``tasks``; call ``on_done`` in the driver for each one as it finishes.

        On KeyboardInterrupt (or any exception from ``on_done``) stop submitting, cancel what is pending or
        running, and re-raise.
        """

    def close(self) -> None:
        """Release what this executor started (pools, a local Ray instance)."""


ExecutorFactory = Callable[[int | None, str | None, int | None], Executor]
"""(workers, address, threads per cell) → an executor; raises ConfigError for options it cannot honour."""

EXECUTORS: Registry[ExecutorFactory] = Registry("executor")

for _module in ("unlearnleak.experiments.executors.local", "unlearnleak.experiments.executors.ray_executor"):
    importlib.import_module(_module)


def make_executor(name: str, *, workers: int | None = None, address: str | None = None,
                  threads: int | None = None) -> Executor:
    """The executor registered as ``name`` (unknown names list the known ones)."""
    if workers is not None and workers < 1:
        raise ConfigError(f"--workers {workers}: must be at least 1")
    return EXECUTORS.get(name)(workers, address, threads)


__all__ = ["EXECUTORS", "CellOutcome", "CellTask", "Executor", "execute_cell", "make_executor", "resolve_cell_fn"]
