"""Run a grid into a results database, resumably: finished cells are skipped, each new one written at once."""

from __future__ import annotations

import contextlib
import shutil
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

from .executors import make_executor
from .grid import Cell
from .runner import CellDone, QueuedCell, cell_checkpoint_dir, has_checkpoint
from .store import ResultsDB, mixed_threads


@dataclass
class GridRun:
    """What a ``run_grid`` call did: cells in the grid, already done before, written now, failed now; and cells
    another run (a second ``mlkd bench`` on the database) finished while this one ran: not fitted here again, or,
    when the other run wrote the cell while this one was fitting it too, fitted here and its row left out (the
    first row is kept). Every cell of the grid is one of skipped, written, done elsewhere, failed.
    ``mixed_threads``: written cells whose training ran on several CPU thread counts (a checkpoint an earlier
    mlkd resumed on another count), with their ``fit_threads``: no uninterrupted fit gives their numbers."""

    total: int
    skipped: int
    written: int = 0
    done_elsewhere: int = 0
    failed: list[tuple[Cell, str]] = field(default_factory=list)
    mixed_threads: list[tuple[Cell, str]] = field(default_factory=list)
    seconds: float = 0.0


def plan(cells: list[Cell], db_path) -> list[tuple[Cell, bool]]:
    """``(cell, done)`` for every cell; a database that does not exist yet (or an empty file, which a run
    makes the database) has nothing done."""
    done = set()
    path = Path(db_path).expanduser()
    if path.exists() and not (path.is_file() and path.stat().st_size == 0):
        with ResultsDB(db_path) as db:
            done = db.done_keys()
    return [(cell, cell.key in done) for cell in cells]


def checkpoint_root(db_path) -> Path:
    """The default folder for cells' training state: ``results.db`` → ``results.checkpoints/`` beside it."""
    return Path(db_path).expanduser().with_suffix(".checkpoints")


def run_grid(cells: list[Cell], db_path, executor=None, progress: bool = False, log=None,
             checkpoints=None, checkpoint_seconds: float = 60.0) -> GridRun:
    """Run the cells not yet in ``db_path`` with ``executor`` (default sequential) and write each at once.

    Re-running the same call after an interruption (even SIGKILL) runs only the cells still missing.
    With ``checkpoints`` (a folder, e.g. ``checkpoint_root(db_path)``) each running cell also saves its
    training state there at least ``checkpoint_seconds`` apart, and a rerun continues a killed cell from
    it to the same numbers (on the thread count the state was trained on, whatever the executor's); a cell's
    state is deleted once its row is written.
    A cell that raises is recorded in the ``failures`` table and retried by the next run; the others go on.
    ``log`` (e.g. ``print``) receives one line before and after the run.
    """
    from tqdm.auto import tqdm

    from ..checkpoint import check_directory, check_seconds

    executor = executor or make_executor("sequential")
    start = time.perf_counter()
    if checkpoints is not None:
        root = str(check_directory(checkpoints).resolve())
        seconds = check_seconds(checkpoint_seconds)
        cells = [replace(c, checkpoint_dir=root, checkpoint_seconds=seconds) for c in cells]
    try:
        with ResultsDB(db_path, create=True) as db:
            done = db.done_keys()
            db.add_aliases(pair for c in cells if c.key in done for pair in _names(c))  # this grid's names for them
            todo = [c for c in cells if c.key not in done]
            summary = GridRun(total=len(cells), skipped=len(cells) - len(todo))
            if log:
                resuming = sum(has_checkpoint(c) for c in todo)
                log(f"{summary.total} cells: {summary.skipped} already done in {db.path}, {len(todo)} to run "
                    f"({executor.name} executor)"
                    + (f"; {resuming} continue from a checkpoint, on the thread count it was trained on"
                       if resuming else ""))
            bar = tqdm(total=len(todo), desc="cells", unit="cell", disable=not progress or not todo, dynamic_ncols=True)
            queued = [QueuedCell.of(c, db.path.resolve()) for c in todo]  # each checks the database at its turn
            given = {id(q): c for q, c in zip(queued, todo, strict=True)}
            try:
                for cell, outcome in executor.run(queued):
                    cell = given.get(id(cell), cell)
                    if isinstance(outcome, CellDone):  # another run wrote it meanwhile: not fitted again
                        summary.done_elsewhere += 1
                        db.add_aliases(_names(cell))
                    elif isinstance(outcome, BaseException):
                        error = f"{type(outcome).__name__}: {outcome}"
                        db.record_failure(cell, " ".join(error.split()), _now())
                        summary.failed.append((cell, error))
                    else:
                        written = db.insert(outcome)
                        summary.written += written
                        if written and mixed_threads(outcome):
                            summary.mixed_threads.append((cell, outcome["fit_threads"]))
                        if not written:  # another run wrote it meanwhile, perhaps under another name
                            summary.done_elsewhere += 1
                        db.add_aliases(_names(cell))
                        if cell.checkpoint_dir is not None:  # the row is committed: its training state has served
                            shutil.rmtree(cell_checkpoint_dir(cell), ignore_errors=True)
                    bar.update(1)
                    bar.set_postfix_str(f"{cell.dataset} {cell.label} seed {cell.seed}", refresh=False)
            finally:
                bar.close()
            summary.seconds = time.perf_counter() - start
            if log:
                log(f"wrote {summary.written} cells to {db.path} in {summary.seconds:.1f} s"
                    + (f"; {summary.done_elsewhere} finished by another run meanwhile"
                       if summary.done_elsewhere else "")
                    + (f"; {len(summary.failed)} failed (see its failures table; a rerun retries them)"
                       if summary.failed else "")
                    + _mixed_text(summary.mixed_threads))
    finally:
        if checkpoints is not None:  # also when the database is refused: no empty folder left behind
            with contextlib.suppress(OSError):
                Path(root).rmdir()  # only if no cell left state behind
    return summary


def _mixed_text(mixed: list[tuple[Cell, str]], limit: int = 5) -> str:
    """The summary's clause naming cells resumed across thread counts (empty when there are none)."""
    if not mixed:
        return ""
    named = "; ".join(f"{c.dataset} {c.label} seed {c.seed} (threads {t})" for c, t in mixed[:limit])
    more = f"; and {len(mixed) - limit} more" if len(mixed) > limit else ""
    return (f"; {len(mixed)} resumed a checkpoint trained on other CPU thread counts, so no uninterrupted fit gives "
            f"their numbers (column fit_threads; mlkd report names them): {named}{more}")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def _names(cell: Cell) -> list[tuple[str, str]]:
    """(key, label) for each name this grid gives the cell: ``add_aliases`` keeps those that differ from its row's."""
    return [(cell.key, label) for label in (cell.label, *cell.aliases)]
