"""The default executor: a spawn-context process pool sized to this machine, torch threads split per worker."""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import replace
from multiprocessing import get_context

from unlearnleak.errors import ConfigError
from unlearnleak.experiments.executors import EXECUTORS
from unlearnleak.experiments.executors.cell import CellOutcome, CellTask, error_line, execute_cell


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one, e.g. in containers)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _load_prctl() -> Callable[..., int] | None:
    """libc's prctl, looked up once at import (so a forked child about to exec only calls it), or None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _load_prctl()


def die_with_parent(parent: int) -> None:
    """On Linux, have the kernel SIGTERM this process as soon as ``parent`` (its parent's pid) dies, even by
    SIGKILL: a worker whose driver was killed stops now instead of finishing a cell nobody will collect.

    Elsewhere (no prctl) a worker still exits once its cell ends and it finds the driver gone.
    """
    if _PRCTL is None:
        return
    _PRCTL(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # the parent died before the request took effect
        os.kill(os.getpid(), signal.SIGTERM)


def _init_worker(threads: int, parent: int) -> None:
    """Pool worker start: Ctrl-C is the driver's to handle, the worker dies with it; torch gets its share of the
    cores; no nested bars."""
    die_with_parent(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.environ["UNLEARNLEAK_PROGRESS"] = "0"
    import torch

    torch.set_num_threads(threads)


@EXECUTORS.register("local")
class LocalExecutor:
    """concurrent.futures.ProcessPoolExecutor (spawn); one worker runs the cells in this process."""

    name = "local"

    def __init__(self, workers: int | None, address: str | None, threads: int | None) -> None:
        if address is not None:
            raise ConfigError(f"--address {address}: only --executor ray connects to a cluster; "
                              "drop --address or add --executor ray")
        self.workers = workers
        self.threads = threads

    def size(self, tasks: Sequence[CellTask]) -> int:
        """Workers for ``tasks``: --workers, else one per core (one for GPU cells, which share the device)."""
        if self.workers is not None:
            return max(1, min(self.workers, len(tasks)))
        if any(t.device.startswith("cuda") for t in tasks):
            return 1
        return max(1, min(len(tasks), available_cpus()))

    def preflight(self, tasks: Sequence[CellTask]) -> None:
        """Every device the cells name must exist here."""
        from unlearnleak.devices import check_device

        for device in sorted({t.device for t in tasks}):
            try:
                check_device(device)
            except ConfigError as exc:
                raise ConfigError(f"device: {exc} (in the config's `device`, or --set device=cpu)") from exc

    def run(self, tasks: Sequence[CellTask], on_done: Callable[[CellTask, CellOutcome], None]) -> None:
        """Run the cells in this process (one worker) or in a pool, reporting each as it finishes."""
        workers = self.size(tasks)
        if workers == 1:
            for task in tasks:
                on_done(task, execute_cell(replace(task, threads=self.threads)))
            return
        threads = self.threads or max(1, available_cpus() // workers)
        pool = ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"),
                                   initializer=_init_worker, initargs=(threads, os.getpid()))
        futures: dict[Future[CellOutcome], CellTask] = {}
        stop = threading.Event()
        try:
            with _signals_set(stop):
                for task in tasks:
                    futures[pool.submit(execute_cell, replace(task, quiet=True))] = task
                pending = set(futures)
                while pending:
                    done, pending = wait(pending, timeout=_POLL_SECONDS, return_when=FIRST_COMPLETED)
                    for future in done:
                        on_done(futures.pop(future), _outcome(future))
                    if stop.is_set():
                        raise KeyboardInterrupt
        except BaseException:
            for future in futures:
                future.cancel()
            _terminate_workers(pool)
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def close(self) -> None:
        """Nothing outlives :meth:`run`."""


_POLL_SECONDS = 0.2  # how soon a Ctrl-C or SIGTERM is acted on while cells run in the pool


@contextmanager
def _signals_set(stop: threading.Event) -> Iterator[None]:
    """Ctrl-C and SIGTERM set ``stop`` instead of raising wherever the main thread is: an exception raised inside
    concurrent.futures' own lock handling could leave a lock held and hang the interrupted run."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, lambda signum, frame: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _outcome(future: Future[CellOutcome]) -> CellOutcome:
    """The cell's outcome, or an error row when its worker could not deliver one."""
    try:
        return future.result()
    except BrokenProcessPool as exc:
        message = f"the worker process died before finishing this cell (killed, or out of memory?): {exc}"
        return CellOutcome(row={"status": "error", "error": message}, artifacts={})
    except Exception as exc:  # e.g. a result that cannot be sent back
        return CellOutcome(row={"status": "error", "error": error_line(exc)}, artifacts={})


def _terminate_workers(pool: ProcessPoolExecutor) -> None:
    """Stop the cells still running (Ctrl-C): their results would arrive after the driver has stopped listening.

    Python 3.14 has ``terminate_workers``; before it, the pool's process table is the only handle on them.
    """
    terminate = getattr(pool, "terminate_workers", None)
    if callable(terminate):
        terminate()
        return
    processes = getattr(pool, "_processes", None) or {}
    for process in list(processes.values()):
        if process.is_alive():
            process.terminate()
