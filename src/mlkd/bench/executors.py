"""Where cells run: in this process, in N local worker processes, or on a Ray cluster.

Every executor yields ``(cell, row_or_exception)`` as cells finish; only the caller (the parent process)
writes to the results database. Each worker sets ``torch.set_num_threads(threads)`` so that N workers on
C cores (``threads = max(1, C // N)``) do not oversubscribe them; the numbers of a cell do not depend on
the executor for the same ``threads``. On Ctrl-C only the parent reacts: process workers ignore SIGINT, and
the parent stops them.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import time
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .grid import Cell

EXECUTORS = ("sequential", "process", "ray")
_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def run_cell(cell: Cell, threads: int | None) -> dict:
    """``mlkd.bench.runner.run_cell``, imported on first use: the ``mlkd`` command builds its parser (which
    lists these executors) without loading torch."""
    from .runner import run_cell as run

    return run(cell, threads)


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def default_threads(jobs: int) -> int:
    return max(1, available_cores() // max(1, jobs))


class SequentialExecutor:
    """Cells one after another in this process."""

    name = "sequential"

    def __init__(self, threads: int | None = None) -> None:
        self.threads = threads

    def run(self, cells: Iterable[Cell]) -> Iterator[tuple[Cell, dict | BaseException]]:
        for cell in cells:
            try:
                yield cell, run_cell(cell, self.threads)
            except Exception as exc:  # a failed cell is recorded; the grid goes on
                yield cell, exc


def _init_worker(threads: int, parent: int | None = None) -> None:
    _ignore_interrupts()
    import torch

    _die_with(parent)
    torch.set_num_threads(threads)
    warnings.simplefilter("ignore")
    signal.signal(signal.SIGTERM, _stop_worker)  # only now: a SystemExit in the imports would print a traceback


@contextlib.contextmanager
def _interrupts_held():
    """Hold SIGINT back from this thread meanwhile (a Ctrl-C is delivered when it ends, not lost); processes
    started meanwhile inherit the mask, so a Ctrl-C reaches none of them before ``_ignore_interrupts``.
    The pattern of ``multiprocessing.resource_tracker``, whose process also must not die of a Ctrl-C."""
    if not hasattr(signal, "pthread_sigmask"):  # not POSIX
        yield
        return
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def _ignore_interrupts() -> None:
    """A worker ignores Ctrl-C (the terminal sends it to the whole process group): the parent handles it and
    stops the workers (``ProcessExecutor.run``), so no worker prints a traceback of its own, whether it was
    starting (importing torch), idle or fitting."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # also drops one held back since the process started
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


_stopping = False


def _stop_worker(signum, frame) -> None:
    """SIGTERM from the parent stopping the pool: unwind the cell like an exception (its checkpoint's temporary
    files and lock are released) and leave through multiprocessing's exit, which releases its semaphores."""
    global _stopping
    _stopping = True
    raise SystemExit(128 + signum)


def _die_with(parent: int | None) -> None:
    """On Linux, have the kernel kill this worker when the bench process dies (SIGKILL included).

    Without it a worker orphaned by a killed run goes on fitting its cell, unseen, beside the rerun's
    workers (the rerun waits for its cell's lock, but the CPU is taken). Elsewhere this does nothing.
    """
    if parent is None or not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent died before the prctl took effect
        os._exit(1)


def _worker_run(cell: Cell) -> dict:
    if _stopping:  # a cell queued before the parent stopped the pool
        raise SystemExit(128 + signal.SIGTERM)
    return run_cell(cell, None)  # threads were set once by _init_worker


class ProcessExecutor:
    """Cells in ``jobs`` local worker processes (spawned: no fork of a process that holds torch threads)."""

    name = "process"

    def __init__(self, jobs: int, threads: int | None = None) -> None:
        self.jobs = int(jobs)
        self.threads = threads or default_threads(self.jobs)

    def run(self, cells: Iterable[Cell]) -> Iterator[tuple[Cell, dict | BaseException]]:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor, as_completed

        cells = list(cells)
        if not cells:
            return
        pool = ProcessPoolExecutor(max_workers=min(self.jobs, len(cells)), mp_context=mp.get_context("spawn"),
                                   initializer=_init_worker, initargs=(self.threads, os.getpid()))
        finished = False
        try:
            with _interrupts_held():  # the workers start in the first submits (spawn: one per submit)
                futures = {pool.submit(_worker_run, cell): cell for cell in cells}
            for future in as_completed(futures):
                cell = futures[future]
                try:
                    yield cell, future.result()
                except Exception as exc:
                    yield cell, exc
            finished = True
        finally:
            if finished:  # waited for here, where a Ctrl-C is the caller's KeyboardInterrupt, not at exit
                pool.shutdown(wait=True)
            else:  # interrupted (or the caller stopped): the workers ignore Ctrl-C, so end their cells here
                _stop_workers(pool)


def _stop_workers(pool, timeout: float = 10.0) -> None:
    """Shut ``pool`` down, ending the cells its workers run: shutdown alone leaves them going (and the
    interpreter's exit would wait for them). SIGTERM makes each worker unwind and exit (``_stop_worker``);
    one still there after ``timeout`` seconds is killed."""
    from multiprocessing.connection import wait

    processes = list((getattr(pool, "_processes", None) or {}).values())  # shutdown forgets them
    for process in processes:
        with contextlib.suppress(OSError, ValueError):  # it ended meanwhile
            process.terminate()
    pool.shutdown(wait=False, cancel_futures=True)  # a worker back from its cell gets its stop sentinel
    pending = {process.sentinel: process for process in processes}
    deadline = time.monotonic() + timeout
    while pending and (left := deadline - time.monotonic()) > 0:
        for ready in wait(list(pending), timeout=left):
            pending.pop(ready)
    for process in pending.values():
        with contextlib.suppress(OSError, ValueError):
            process.kill()


def _ray_run_cell(cell: Cell, threads: int) -> dict:
    warnings.simplefilter("ignore")
    return run_cell(cell, threads)


class RayExecutor:
    """Cells as Ray tasks of ``threads`` CPUs each.

    Uses the Ray instance this process is already connected to; else connects to ``address`` (an existing
    cluster: ``"auto"``, ``"ray://head:10001"``, ``"10.0.0.5:6379"``), else starts a local one with ``jobs``
    CPUs (all cores if None) and shuts it down afterwards. When it connects, it ships this process's mlkd
    source to the workers (Ray ``py_modules``), so cluster nodes need mlkd's dependencies and the data
    (``$MLKD_DATA`` on each node, or a ``--data-dir`` valid there), not mlkd itself. A caller that ran
    ``ray.init`` itself makes mlkd importable on the workers (installed, or its own ``runtime_env``).
    """

    name = "ray"

    def __init__(self, address: str | None = None, jobs: int | None = None, threads: int = 1) -> None:
        self.address = address
        self.jobs = jobs
        self.threads = int(threads)
        check_ray()

    def run(self, cells: Iterable[Cell]) -> Iterator[tuple[Cell, dict | BaseException]]:
        import ray

        cells = list(cells)
        if not cells:
            return
        started = False
        if not ray.is_initialized():
            # Ship this process's mlkd source to the workers: they run the code the grid was resolved with.
            env = {"py_modules": [str(Path(__file__).resolve().parents[1])]}
            if self.address:
                ray.init(address=self.address, runtime_env=env, logging_level="warning", log_to_driver=False)
            else:
                ray.init(num_cpus=self.jobs, include_dashboard=False, runtime_env=env, logging_level="warning",
                         log_to_driver=False)
            started = True
        task = ray.remote(_ray_run_cell).options(num_cpus=self.threads, max_retries=0)
        pending = {task.remote(cell, self.threads): cell for cell in cells}
        try:
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                for ref in done:
                    cell = pending.pop(ref)
                    try:
                        yield cell, ray.get(ref)
                    except Exception as exc:  # RayTaskError wraps the cell's own exception
                        yield cell, getattr(exc, "cause", None) or exc
        finally:
            for ref in pending:
                ray.cancel(ref, force=True)
            if started:
                ray.shutdown()


def check_ray() -> None:
    try:
        import ray  # noqa: F401
    except ImportError:
        raise ValueError("the ray executor needs Ray, which is not installed; expected it installed with "
                         "pip install 'mlkd[ray]' (or use --executor process)") from None


def make_executor(name: str | None = None, jobs: int | None = None, threads: int | None = None,
                  address: str | None = None):
    """``"sequential"``, ``"process"`` (``jobs`` workers, default one per core) or ``"ray"`` (``address``, or a
    local instance of ``jobs`` CPUs, default all). ``name=None``: "process" if ``jobs`` > 1, else "sequential".
    ``threads``: torch threads per worker (default ``max(1, cores // jobs)``; sequential: torch's choice).
    """
    name = name or ("process" if jobs and jobs > 1 else "sequential")
    if name not in EXECUTORS:
        raise ValueError(f"unknown executor {name!r}; expected one of: {', '.join(EXECUTORS)}")
    if jobs is not None and (isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1):
        raise ValueError(f"jobs={jobs!r} is invalid; expected an integer >= 1")
    if name == "sequential" and jobs not in (None, 1):
        raise ValueError(f"jobs={jobs} needs a parallel executor; expected --executor process or ray with --jobs")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ValueError(f"threads={threads!r} is invalid; expected an integer >= 1")
    if address and name != "ray":
        raise ValueError("--address names a Ray cluster; expected it only with --executor ray")
    if name == "sequential":
        return SequentialExecutor(threads)
    if name == "process":
        return ProcessExecutor(jobs or available_cores(), threads)
    return RayExecutor(address, None if address else jobs, threads or 1)
