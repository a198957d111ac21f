"""The results database: one SQLite row per finished cell, written by one process, one transaction per row.

WAL journal mode lets readers (``mlkd report``, ad-hoc ``sqlite3`` queries) run while a grid writes; only
the parent process of a grid ever writes, so workers cannot corrupt it, and a killed run loses at most the
cells that were in flight. Every metric has its own column at both thresholds, so plain SQL answers most
questions::

    SELECT dataset, label, AVG(example_f1_tuned), COUNT(*) FROM results GROUP BY dataset, label;
"""

from __future__ import annotations

import json
import math
import sqlite3
import time
from pathlib import Path

from ..metrics import METRICS

SCHEMA_VERSION = 1
APPLICATION = "mlkd-bench"
#: Metric columns: ``<metric>_05`` (threshold 0.5) and ``<metric>_tuned`` (validation-tuned threshold).
THRESHOLDS = ("05", "tuned")
METRIC_COLUMNS: tuple[str, ...] = tuple(f"{m}_{t}" for t in THRESHOLDS for m in METRICS)

# (name, SQL type, meaning) — the documented schema of the ``results`` table.
COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("key", "TEXT PRIMARY KEY", "hash of (dataset, config_hash, seed, noise)"),
    ("dataset", "TEXT NOT NULL", "data set name"),
    ("method", "TEXT NOT NULL", "registry name of the method"),
    ("label", "TEXT NOT NULL", "the method config's name in reports, e.g. skdtea:alpha=0.3"),
    ("config", "TEXT NOT NULL", "resolved config JSON: method defaults ∪ params, training defaults ∪ settings"),
    ("config_hash", "TEXT NOT NULL", "hash of config"),
    ("seed", "INTEGER NOT NULL", "seed of initialisation and batch order (not of the split)"),
    ("noise", "TEXT NOT NULL DEFAULT 'none'", "label-noise setting"),
    *((c, "REAL", f"test {c.rsplit('_', 1)[0]} at threshold {'0.5' if c.endswith('_05') else 'tuned'}")
      for c in METRIC_COLUMNS),
    ("threshold", "REAL", "the validation-tuned global threshold"),
    ("val_score", "REAL", "validation score (mAP) at the best epoch"),
    ("epochs_run", "INTEGER", "epochs trained (early stopping)"),
    ("best_epoch", "INTEGER", "0-based epoch whose weights were kept"),
    ("fit_seconds", "REAL", "wall-clock seconds of fit"),
    ("predict_seconds", "REAL", "wall-clock seconds of predict_proba on test"),
    ("n_train", "INTEGER", "training rows (after the validation hold-out)"),
    ("n_val", "INTEGER", "validation rows"),
    ("n_test", "INTEGER", "test rows"),
    ("threads", "INTEGER", "torch CPU threads the cell ran on (a resumed cell: those its checkpoint was trained on)"),
    ("fit_threads", "TEXT", "every thread count the fit's training ran on, e.g. '4'; several ('1,4'; '?' for one "
     "a checkpoint did not record): resumed across thread counts, so no uninterrupted fit gives its numbers; NULL: "
     "written before mlkd recorded it"),
    ("device", "TEXT", "torch device the cell trained on"),
    ("mlkd_version", "TEXT", ""),
    ("torch_version", "TEXT", ""),
    ("python_version", "TEXT", ""),
    ("machine", "TEXT", "host, architecture, CPU model, CPU count"),
    ("timestamp", "TEXT NOT NULL", "UTC ISO time the cell finished"),
    ("history", "TEXT", "JSON list of per-epoch dicts: every loss term, total, val_score, seconds"),
    ("examples", "TEXT", "JSON: a few validation rows' clean labels (y) vs soft targets (methods that make them); "
     "a label-noise cell also keeps the noisy labels its fit was given (y_noisy), which its soft targets are made of"),
)
COLUMN_NAMES: tuple[str, ...] = tuple(c[0] for c in COLUMNS)
#: Columns added after databases were first written (nullable): a writer adds them to an older database.
ADDED_COLUMNS: tuple[str, ...] = ("fit_threads",)
_NOT_MLKD = "expected a results database written by 'mlkd bench'"


def _schema_sql() -> str:
    cols = ",\n  ".join(f"{name} {kind}" for name, kind, _ in COLUMNS)
    return (
        "CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);\n"
        f"CREATE TABLE IF NOT EXISTS results (\n  {cols}\n);\n"
        "CREATE INDEX IF NOT EXISTS results_by_cell ON results (dataset, label, seed);\n"
        "CREATE TABLE IF NOT EXISTS failures (key TEXT PRIMARY KEY, dataset TEXT, label TEXT, seed INTEGER, "
        "noise TEXT, error TEXT, timestamp TEXT);\n"
        # other names a later grid gave a finished cell (the cell keeps the label it was written with)
        "CREATE TABLE IF NOT EXISTS aliases (key TEXT NOT NULL, label TEXT NOT NULL, PRIMARY KEY (key, label));\n"
    )


class ResultsDB:
    """A results database. ``ResultsDB(path, create=True)`` makes one (the writer); ``create=False`` opens an
    existing one and raises ValueError unless it is an mlkd results database."""

    def __init__(self, path, create: bool = False) -> None:
        self.path = Path(path).expanduser()
        if not create:
            _check_readable(self.path)
        elif self.path.exists() and not self.path.is_file():
            raise ValueError(f"results database {self.path} is a directory; expected a file such as results.db")
        else:
            _check_parent_writable(self.path)
        try:
            self.conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            self.conn.row_factory = sqlite3.Row
            if create:
                self._init_schema()
            self._check_schema()
        except sqlite3.OperationalError as exc:
            raise ValueError(f"cannot open results database {self.path}: {exc}; expected a readable"
                             f"{' and writable' if create else ''} SQLite file") from None
        except sqlite3.DatabaseError as exc:
            raise ValueError(f"{self.path} is not an SQLite database ({exc}); {_NOT_MLKD}") from None

    def _init_schema(self) -> None:
        tables = {r[0] for r in self.conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if tables and "meta" not in tables:
            raise ValueError(f"{self.path} is an SQLite database of another application (tables: "
                             f"{', '.join(sorted(tables))}); {_NOT_MLKD} or a new file name")
        # WAL: readers never block the writer; a crash loses nothing. Switching to it does not wait on the busy
        # timeout while another run is creating the same new file: retry for as long as that timeout.
        deadline = time.monotonic() + 30
        while True:
            try:
                self.conn.execute("PRAGMA journal_mode=WAL")
                break
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        self.conn.execute("PRAGMA synchronous=FULL")
        with self.conn:
            self.conn.execute("BEGIN IMMEDIATE")  # waits for another creator instead of failing on upgrade
            for statement in _schema_sql().split(";\n"):
                if statement.strip():
                    self.conn.execute(statement)
            have = {r[1] for r in self.conn.execute("PRAGMA table_info(results)")}
            for name, kind, _ in COLUMNS:
                if name in ADDED_COLUMNS and name not in have:  # an older database: its rows read NULL there
                    self.conn.execute(f"ALTER TABLE results ADD COLUMN {name} {kind}")
            self.conn.execute("INSERT OR IGNORE INTO meta VALUES ('application', ?)", (APPLICATION,))
            self.conn.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))

    def _check_schema(self) -> None:
        tables = {r[0] for r in self.conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if not {"meta", "results"} <= tables:
            raise ValueError(f"{self.path} has no mlkd results tables; {_NOT_MLKD}")
        meta = dict(self.conn.execute("SELECT name, value FROM meta").fetchall())
        if meta.get("application") != APPLICATION:
            raise ValueError(f"{self.path} was written by {meta.get('application')!r}; {_NOT_MLKD}")
        if int(meta.get("schema_version", 0)) > SCHEMA_VERSION:
            raise ValueError(f"{self.path} has schema version {meta['schema_version']}, newer than this mlkd "
                             f"({SCHEMA_VERSION}); expected a database from this or an older mlkd")

    # -- writing (the one writer) --------------------------------------------------------------------
    def insert(self, row: dict) -> bool:
        """Write one finished cell in its own transaction; False if its key was already there."""
        values = [_sql_value(row.get(name)) for name in COLUMN_NAMES]
        marks = ", ".join("?" * len(COLUMN_NAMES))
        with self.conn:
            self.conn.execute("BEGIN IMMEDIATE")
            cur = self.conn.execute(f"INSERT OR IGNORE INTO results ({', '.join(COLUMN_NAMES)}) VALUES ({marks})",
                                    values)
            self.conn.execute("DELETE FROM failures WHERE key = ?", (row["key"],))
        self._checkpoint()
        return cur.rowcount == 1

    def record_failure(self, cell, error: str, timestamp: str) -> None:
        with self.conn:
            self.conn.execute("BEGIN IMMEDIATE")
            self.conn.execute("INSERT OR REPLACE INTO failures VALUES (?, ?, ?, ?, ?, ?, ?)",
                              (cell.key, cell.dataset, cell.label, cell.seed, cell.noise, error, timestamp))
        self._checkpoint()

    def _checkpoint(self) -> None:
        """Copy the WAL into the database file now, not when the last connection closes: a grid runs for
        hours, and whoever copies or commits ``results.db`` alone (without ``-wal``) must get every finished
        cell. PASSIVE never waits for readers; what a reader holds back is copied at the next cell."""
        self.conn.execute("PRAGMA wal_checkpoint(PASSIVE)")

    def add_aliases(self, pairs) -> None:
        """Record ``(key, label)`` pairs of finished cells that a grid names differently from their row's label:
        ``mlkd report --methods`` then finds the cell under either name."""
        pairs = [(str(k), str(label)) for k, label in pairs]
        if not pairs:
            return
        with self.conn:
            self.conn.execute("BEGIN IMMEDIATE")
            self.conn.executemany("INSERT OR IGNORE INTO aliases SELECT ?, ? WHERE EXISTS "
                                  "(SELECT 1 FROM results WHERE key = ? AND label != ?)",
                                  [(k, label, k, label) for k, label in pairs])
        self._checkpoint()

    # -- reading --------------------------------------------------------------------------------------
    def aliases(self) -> dict[str, list[str]]:
        """key → the other labels grids gave that finished cell (empty for databases from before aliases)."""
        found = self.conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='aliases'").fetchone()
        out: dict[str, list[str]] = {}
        if found:
            for key, label in self.conn.execute("SELECT key, label FROM aliases ORDER BY rowid"):
                out.setdefault(key, []).append(label)
        return out

    def done_keys(self) -> set[str]:
        return {r[0] for r in self.conn.execute("SELECT key FROM results")}

    def rows(self, where: str = "", params: tuple = ()) -> list[dict]:
        """Every results row as a dict (JSON columns decoded), in insertion order."""
        sql = "SELECT * FROM results" + (f" WHERE {where}" if where else "") + " ORDER BY rowid"
        return [_decode(dict(r)) for r in self.conn.execute(sql, params)]

    def failures(self) -> list[dict]:
        return [dict(r) for r in self.conn.execute("SELECT * FROM failures ORDER BY timestamp")]

    def __len__(self) -> int:
        return self.conn.execute("SELECT COUNT(*) FROM results").fetchone()[0]

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> ResultsDB:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def fit_threads_text(counts, unknown: bool = False) -> str:
    """A row's ``fit_threads``: the CPU thread counts its training ran on, ascending and comma-separated, "?"
    first for training done on a count no checkpoint record names. One count ("4"): the numbers of an
    uninterrupted fit on it; more than one entry ("1,4", "?,4"): training resumed across thread counts,
    whose numbers no uninterrupted fit gives (float rounding depends on the count)."""
    return ",".join(["?"] * bool(unknown) + [str(n) for n in sorted(set(counts))])


def mixed_threads(row: dict) -> bool:
    """Whether a results row's training ran on more than one CPU thread count (``fit_threads``; rows written
    before mlkd recorded it are not known to)."""
    return "," in str(row.get("fit_threads") or "")


def _check_readable(path: Path) -> None:
    if not path.exists():
        raise FileNotFoundError(f"results database {path} does not exist; {_NOT_MLKD}")
    if not path.is_file():
        raise ValueError(f"{path} is a directory; {_NOT_MLKD}")
    if path.stat().st_size == 0:
        raise ValueError(f"{path} is empty; {_NOT_MLKD}")
    with open(path, "rb") as f:
        if f.read(16) != b"SQLite format 3\x00":
            raise ValueError(f"{path} is not an SQLite database; {_NOT_MLKD}")


def _check_parent_writable(path: Path) -> None:
    import os

    parent = path.parent if str(path.parent) else Path(".")
    probe = parent
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise ValueError(f"cannot write results database {path}: {probe} is not a writable directory; "
                         "expected a writable location")
    parent.mkdir(parents=True, exist_ok=True)


def _sql_value(value):
    if isinstance(value, (dict, list)):
        return json.dumps(_finite(value), separators=(",", ":"), allow_nan=False, default=_json_default)
    if isinstance(value, float) and not math.isfinite(value):
        return None  # NaN (e.g. one-error with no positive example) is SQL NULL
    return value


def _finite(value):
    """JSON has no NaN: non-finite floats become null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _json_default(value):
    raise TypeError(f"cannot store {type(value).__name__} in the results database")


def _decode(row: dict) -> dict:
    for name in ("config", "history", "examples"):
        if row.get(name) is not None:
            row[name] = json.loads(row[name])
    for name in METRIC_COLUMNS:
        if row.get(name) is None:
            row[name] = float("nan")
    return row
