"""The Ray executor: one Ray task per cell, placed by Ray's own scheduler (CPU cells anywhere, GPU cells on GPUs).

Ray is optional (``pip install 'unlearnleak[ray]'``) and imported only when this executor is chosen.
"""

from __future__ import annotations

import logging
import socket
from collections import deque
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import replace
from typing import Any

from unlearnleak.errors import ConfigError, one_line
from unlearnleak.experiments.executors import EXECUTORS
from unlearnleak.experiments.executors.cell import CellOutcome, CellTask, execute_cell


@EXECUTORS.register("ray")
class RayExecutor:
    """Cells as Ray tasks (``num_cpus`` = threads per cell, ``num_gpus=1`` for CUDA cells), gathered with ray.wait."""

    name = "ray"

    def __init__(self, workers: int | None, address: str | None, threads: int | None) -> None:
        try:
            import ray
        except ImportError:
            raise ConfigError("--executor ray needs Ray, which is not installed here; "
                              "pip install 'unlearnleak[ray]'") from None
        self._ray: Any = ray
        self.workers = workers  # at most this many cells in flight (None: all; Ray queues what does not fit)
        self.address = address
        self.threads = threads or 1
        self._started = False

    def size(self, tasks: Sequence[CellTask]) -> int | None:
        """--workers caps the cells in flight; otherwise Ray runs as many as the cluster's resources fit."""
        return None if self.workers is None else min(self.workers, len(tasks))

    def preflight(self, tasks: Sequence[CellTask]) -> None:
        """Connect to Ray (or start a local instance) and check that the cluster can place every cell."""
        indexed = sorted({t.device for t in tasks if t.device.startswith("cuda:")})
        if indexed:
            raise ConfigError(f"device {indexed[0]}: with --executor ray use device cuda; Ray gives each GPU "
                              "cell its own GPU (--set device=cuda)")
        self._connect()
        resources = self._ray.cluster_resources()
        where = f"the Ray cluster at {self.address}" if self.address else "the local Ray instance"
        if any(t.device == "cuda" for t in tasks) and resources.get("GPU", 0) < 1:
            raise ConfigError(f"device cuda: {where} has no GPU; add GPU nodes (ray start --num-gpus) or "
                              "--set device=cpu")
        if resources.get("CPU", 0) < self.threads:
            raise ConfigError(f"--threads {self.threads}: {where} has only {resources.get('CPU', 0):g} CPUs; "
                              "lower --threads")

    def _connect(self) -> None:
        ray = self._ray
        if ray.is_initialized():  # the caller's own ray.init (tests, notebooks): use it, leave it running
            return
        if self.address is not None:
            _check_reachable(self.address)
        kwargs: dict[str, Any] = {"address": self.address, "logging_level": logging.WARNING}
        if self.address is None:
            kwargs["include_dashboard"] = False
        try:
            ray.init(**kwargs)
        except (ConnectionError, ValueError, RuntimeError, TimeoutError) as exc:
            target = f"the Ray cluster at {self.address}" if self.address else "a local Ray instance"
            raise ConfigError(f"--executor ray: cannot connect to {target} ({_first_line(exc)}); start one "
                              "with `ray start --head` and pass its address with --address") from exc
        self._started = True

    def run(self, tasks: Sequence[CellTask], on_done: Callable[[CellTask, CellOutcome], None]) -> None:
        """Submit the cells as Ray tasks and hand each result to ``on_done`` as it arrives."""
        ray = self._ray
        remote = ray.remote(execute_cell)
        queue = deque(tasks)
        pending: dict[Any, CellTask] = {}
        try:
            while queue or pending:
                while queue and (self.workers is None or len(pending) < self.workers):
                    task = queue.popleft()
                    gpus = 1 if task.device.startswith("cuda") else 0
                    ref = remote.options(num_cpus=self.threads, num_gpus=gpus).remote(
                        replace(task, threads=self.threads, quiet=True))
                    pending[ref] = task
                done, _ = ray.wait(list(pending), num_returns=1)
                for ref in done:
                    on_done(pending.pop(ref), self._outcome(ref))
        except BaseException:
            for ref in pending:
                with suppress(Exception):  # already finished or gone: nothing to cancel
                    ray.cancel(ref, force=True)
            raise

    def _outcome(self, ref: Any) -> CellOutcome:
        try:
            outcome: CellOutcome = self._ray.get(ref)
        except self._ray.exceptions.RayError as exc:  # the worker died, ran out of memory, was cancelled
            return CellOutcome(row={"status": "error", "error": f"{type(exc).__name__}: {_first_line(exc)}"},
                               artifacts={})
        return outcome

    def close(self) -> None:
        """Shut down the local Ray instance if this executor started it."""
        if self._started:
            self._ray.shutdown()
            self._started = False


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """Fail in seconds on a host:port nobody listens on (ray.init itself retries for minutes)."""
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not host or not port.isdigit():  # "auto", "local", or a form Ray resolves itself
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as exc:
        raise ConfigError(f"--address {address}: cannot reach a Ray cluster there ({exc.strerror or exc}); start "
                          "one with `ray start --head` on that machine, or check the host and port") from exc


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return one_line(lines[0]) if lines else type(exc).__name__
