"""Benchmarks under PROTOCOL.md: a resumable grid into an SQLite results database, and a report from it.

>>> from mlkd.bench import Grid, make_executor, run_grid, make_report
>>> grid = Grid.build(["emotions", "flags"], ["bce", "skdtea:alpha=0.3"], seeds=[0, 1, 2], params={"hidden": 16})
>>> run_grid(grid.cells(), "results.db", make_executor("process", jobs=2), progress=True)
>>> make_report("results.db", "report/")        # report/index.md, report/tables.md, report/figures/*.png

The same from the shell: ``mlkd bench results.db ...`` and ``mlkd report results.db --out report``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from .. import _submodules

#: public name → the submodule of mlkd.bench that defines it (imported on first use, PEP 562: the ``mlkd``
#: command builds its ``bench`` and ``report`` parsers without loading torch)
_EXPORTS = {
    **dict.fromkeys(["EXECUTORS", "ProcessExecutor", "RayExecutor", "SequentialExecutor", "make_executor"],
                    "executors"),
    **dict.fromkeys(["Cell", "Grid", "MethodSpec", "cell_key", "parse_seeds", "resolved_config"], "grid"),
    **dict.fromkeys(["Report", "load_results", "make_report"], "report"),
    **dict.fromkeys(["GridRun", "plan", "run_grid"], "run"),
    "run_cell": "runner",
    **dict.fromkeys(["COLUMNS", "METRIC_COLUMNS", "ResultsDB"], "store"),
}

__all__ = [
    "COLUMNS", "EXECUTORS", "METRIC_COLUMNS", "Cell", "Grid", "GridRun", "MethodSpec", "ProcessExecutor",
    "RayExecutor", "Report", "ResultsDB", "SequentialExecutor", "cell_key", "load_results", "make_executor",
    "make_report", "parse_seeds", "plan", "resolved_config", "run_cell", "run_grid",
]


def __getattr__(name: str):
    if name not in _EXPORTS:
        if name in _submodules(__path__):  # mlkd.bench.stats, … on first use, as mlkd's own submodules
            return importlib.import_module(f".{name}", __name__)
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS, *_submodules(__path__)})


if TYPE_CHECKING:
    from .executors import EXECUTORS, ProcessExecutor, RayExecutor, SequentialExecutor, make_executor
    from .grid import Cell, Grid, MethodSpec, cell_key, parse_seeds, resolved_config
    from .report import Report, load_results, make_report
    from .run import GridRun, plan, run_grid
    from .runner import run_cell
    from .store import COLUMNS, METRIC_COLUMNS, ResultsDB
