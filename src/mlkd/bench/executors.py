"""Where cells run: in this process, in N local worker processes, or on a Ray cluster.

Every executor yields ``(cell, row_or_exception)`` as cells finish; only the caller (the parent process)
writes to the results database. Each worker sets ``torch.set_num_threads(threads)`` so that N workers on
C cores (``threads = max(1, C // N)``) do not oversubscribe them; the numbers of a cell do not depend on
the executor for the same ``threads``. On Ctrl-C only the parent reacts: process workers ignore SIGINT, and
the parent stops them. A SIGTERM to one process worker fails the cell it runs; the other cells go on.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
import warnings
from collections import deque
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from .._process import exit_with_parent

if TYPE_CHECKING:
    from .grid import Cell

EXECUTORS = ("sequential", "process", "ray")


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
def _signals_held(*signums: int):
    """Hold ``signums`` back from this thread meanwhile: one that comes is delivered when this ends, not lost."""
    if not hasattr(signal, "pthread_sigmask"):  # not POSIX
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, signums)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _interrupts_held():
    """Hold SIGINT back from this thread meanwhile (a Ctrl-C is delivered when it ends, not lost); processes
    started meanwhile inherit the mask, so a Ctrl-C reaches none of them before ``_ignore_interrupts``.
    The pattern of ``multiprocessing.resource_tracker``, whose process also must not die of a Ctrl-C."""
    return _signals_held(signal.SIGINT)


def _ignore_interrupts() -> None:
    """A worker ignores Ctrl-C (the terminal sends it to the whole process group): the parent handles it and
    stops the workers (``ProcessExecutor.run``), so no worker prints a traceback of its own, whether it was
    starting (importing torch), idle or fitting."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # also drops one held back since the process started
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


class WorkerStopped(RuntimeError):
    """A cell's worker process stopped before the cell finished: a SIGTERM (from a user ending a runaway cell,
    a batch scheduler, or the parent stopping the grid) or its death (SIGKILL, the out-of-memory killer)."""


_stopping = False


def _stop_worker(signum, frame) -> None:
    """SIGTERM: unwind the cell like an exception (its checkpoint's temporary files and lock are released);
    the worker then reports the cell as stopped and ends instead of taking another (``_worker_main``). Only
    the first one raises: a second one must not break off the unwinding of the first."""
    global _stopping
    if _stopping:
        return
    _stopping = True
    raise SystemExit(128 + signum)


def _die_with(parent: int | None) -> None:
    """Have the kernel kill this worker when the bench process dies (SIGKILL included; Linux only).

    Without it a worker orphaned by a killed run goes on fitting its cell, unseen, beside the rerun's
    workers (the rerun waits for its cell's lock, but the CPU is taken).
    """
    exit_with_parent(parent, signal.SIGKILL)


def _worker_main(conn, threads: int, parent: int | None) -> None:
    """A worker process: runs the cells the parent sends on ``conn``, one at a time, and sends back each one's
    ``(kind, row_or_exception)``, until the parent closes its end or a SIGTERM stops the worker."""
    _init_worker(threads, parent)
    try:
        while not _stopping:  # a worker that got SIGTERM takes no more cells
            cell = conn.recv()
            outcome = _run_one(cell)
            with _signals_held(signal.SIGTERM):  # an outcome goes whole; a SIGTERM meanwhile ends the worker then
                conn.send(outcome)
    except (EOFError, OSError):  # the parent closed its end (the grid is done or stopped) or is gone
        return
    # A SIGTERM while idle is a SystemExit here: multiprocessing ends the process quietly with its code.


def _run_one(cell: Cell) -> tuple[str, dict | BaseException]:
    try:
        return "row", run_cell(cell, None)  # threads were set once by _init_worker
    except SystemExit as exc:
        if _stopping:
            return "stopped", WorkerStopped("its worker process was stopped by SIGTERM")
        return "error", RuntimeError(f"the cell called sys.exit({exc.code!r})")
    except Exception as exc:  # a failed cell is recorded; the grid goes on
        return "error", _sendable(exc)


def _sendable(exc: Exception) -> Exception:
    """``exc``, or a RuntimeError that names it when the connection cannot send it (the parent turns one it
    cannot read back into such an error itself, ``ProcessExecutor._serve``)."""
    from multiprocessing.reduction import ForkingPickler  # what Connection.send serialises with

    try:
        ForkingPickler.dumps(exc)
    except Exception:
        return RuntimeError(f"{type(exc).__name__}: {exc}")
    return exc


class _Worker:
    __slots__ = ("process", "conn", "cell", "leaving")

    def __init__(self, process, conn) -> None:
        self.process, self.conn, self.cell, self.leaving = process, conn, None, False


class ProcessExecutor:
    """Cells in ``jobs`` local worker processes (spawned: no fork of a process that holds torch threads).

    Each worker runs one cell at a time. A worker that gets SIGTERM (a user ending a runaway cell, a batch
    scheduler) or dies fails the cell it had, as any failed cell, and a new worker takes its place; the other
    cells go on. On Ctrl-C (or when the caller stops early) the parent stops all workers.
    """

    name = "process"

    def __init__(self, jobs: int, threads: int | None = None) -> None:
        self.jobs = int(jobs)
        self.threads = threads or default_threads(self.jobs)

    def run(self, cells: Iterable[Cell]) -> Iterator[tuple[Cell, dict | BaseException]]:
        import multiprocessing as mp
        from multiprocessing.connection import wait

        pending = deque(cells)
        if not pending:
            return
        context = mp.get_context("spawn")
        workers: list[_Worker] = []
        finished = False
        try:
            for _ in range(min(self.jobs, len(pending))):
                self._start(context, pending.popleft(), workers)
            while pending or any(w.cell is not None for w in workers):
                ready = set(wait([w.conn for w in workers if w.conn is not None]
                                 + [w.process.sentinel for w in workers]))
                outcomes = []
                for worker in [w for w in workers if w.conn in ready or w.process.sentinel in ready]:
                    outcomes += self._serve(worker, pending)
                    if worker.conn is None or worker.process.sentinel in ready:  # it has ended
                        outcomes += _retire(worker)
                        workers.remove(worker)
                        if pending:
                            self._start(context, pending.popleft(), workers)
                yield from outcomes
            finished = True
        finally:
            # finished: waited for here, where a Ctrl-C is the caller's KeyboardInterrupt, not at exit.
            # Else interrupted (or the caller stopped): the workers ignore Ctrl-C, so end their cells here.
            _end_workers(workers, stop=not finished)

    def _start(self, context, cell: Cell, workers: list[_Worker]) -> None:
        """A new worker in ``workers``, given ``cell``."""
        conn, child_conn = context.Pipe()
        process = context.Process(target=_worker_main, args=(child_conn, self.threads, os.getpid()),
                                  name="mlkd-bench-worker")
        try:
            with _interrupts_held():  # the process starts with Ctrl-C held back (it then ignores it) ...
                process.start()
                workers.append(worker := _Worker(process, conn))  # ... and is in workers when one comes
        finally:
            child_conn.close()  # the worker's end lives in the worker: its death is an end of file here
        _send(worker, cell)

    def _serve(self, worker: _Worker, pending: deque) -> list[tuple[Cell, dict | BaseException]]:
        """Read what ``worker`` sent: the outcome of its cell (then give it the next one), or its end of file."""
        outcomes = []
        while worker.conn is not None and worker.conn.poll():
            try:
                kind, outcome = worker.conn.recv()
            except (EOFError, OSError):  # the worker has ended
                worker.conn.close()
                worker.conn = None
                break
            except Exception as exc:  # an outcome that does not unpickle here
                kind, outcome = "error", RuntimeError(f"its outcome could not be read: {type(exc).__name__}: {exc}")
            cell, worker.cell = worker.cell, None
            if kind == "stopped":  # it ends now, without taking another cell
                worker.leaving = True
            elif pending and not worker.leaving:
                _send(worker, pending.popleft())
            if cell is not None:
                outcomes.append((cell, outcome))
        return outcomes


def _send(worker: _Worker, cell: Cell) -> None:
    worker.cell = cell
    try:
        worker.conn.send(cell)
    except OSError:  # the worker has ended: the cell fails when its end of file is read
        pass


def _retire(worker: _Worker) -> list[tuple[Cell, BaseException]]:
    """Reap an ended ``worker``; the cell it had, if any, failed."""
    if worker.conn is not None:
        worker.conn.close()
        worker.conn = None
    process = worker.process
    process.join(10)
    if process.exitcode is None:  # its end of file came, but not its exit
        process.kill()
        process.join()
    if worker.cell is None:
        return []
    return [(worker.cell, WorkerStopped(f"its worker process ended ({_how(process.exitcode)})"))]


def _how(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            return f"killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"killed by signal {-exitcode}"
    if exitcode == 128 + signal.SIGTERM:
        return "stopped by SIGTERM"
    return f"exit status {exitcode}"


def _end_workers(workers: list[_Worker], stop: bool, timeout: float = 10.0) -> None:
    """End ``workers``: those idle leave when their connection closes; with ``stop``, SIGTERM also makes
    those still fitting unwind their cells and leave (``_stop_worker``). One still there after ``timeout``
    seconds (or when this is interrupted) is killed; all are reaped."""
    from multiprocessing.connection import wait

    processes = [w.process for w in workers]
    try:
        if stop:
            for process in processes:
                with contextlib.suppress(OSError, ValueError):  # it ended meanwhile
                    process.terminate()
        for worker in workers:
            if worker.conn is not None:
                worker.conn.close()  # an idle worker reads its end of file; a stopped one's outcome goes nowhere
                worker.conn = None
        pending = {process.sentinel: process for process in processes}
        deadline = time.monotonic() + timeout
        while pending and (left := deadline - time.monotonic()) > 0:
            for ready in wait(list(pending), timeout=left):
                pending.pop(ready)
    finally:
        for process in processes:
            if process.is_alive():
                with contextlib.suppress(OSError, ValueError):
                    process.kill()
            process.join()


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
