"""Two ``mlkd bench`` runs on one database: a cell the other run finished meanwhile is not fitted again."""

from __future__ import annotations

import pytest

from mlkd.bench import ResultsDB, SequentialExecutor, make_executor, run_grid
from mlkd.bench.grid import Cell
from mlkd.bench.runner import CellDone, QueuedCell, finished_elsewhere, run_cell
from mlkd.estimator import MultiLabelClassifier


def _cells(mulan_dir, seeds=(0, 1)):
    return [Cell("emotions", "bce", "bce", params={"hidden": 8}, train={"max_epochs": 1}, seed=s,
                 data_dir=str(mulan_dir)) for s in seeds]


class _OtherBenchFinishesTheLastCellFirst(SequentialExecutor):
    """While this run starts, another bench on the same database finishes the grid's last cell."""

    def __init__(self, db_path) -> None:
        super().__init__(threads=1)
        self.db_path = db_path

    def run(self, cells):
        cells = list(cells)
        row = run_cell(Cell(**{k: getattr(cells[-1], k) for k in Cell.__dataclass_fields__}), 1)
        with ResultsDB(self.db_path, create=True) as other:
            assert other.insert(row)
        yield from super().run(cells)


def test_a_cell_another_bench_finished_meanwhile_is_skipped_not_fitted(mulan_dir, tmp_path, monkeypatch):
    db_path = tmp_path / "r.db"
    cells = _cells(mulan_dir)
    fits = []
    real = MultiLabelClassifier.fit

    def counted(self, *args, **kwargs):
        fits.append(self.random_state)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(MultiLabelClassifier, "fit", counted)
    lines = []
    summary = run_grid(cells, db_path, _OtherBenchFinishesTheLastCellFirst(db_path), log=lines.append)
    assert fits == [1, 0]  # seed 1 once (by the other bench), seed 0 once: nothing fitted twice
    assert (summary.written, summary.done_elsewhere, summary.failed) == (1, 1, [])
    assert "1 finished by another run meanwhile" in lines[-1]
    with ResultsDB(db_path) as db:
        assert sorted(r["seed"] for r in db.rows()) == [0, 1] and db.failures() == []


class _OtherBenchWritesEachCellWhileThisOneFitsIt(SequentialExecutor):
    """Another bench on the same database fits each cell at the same time and writes its row first."""

    def __init__(self, db_path) -> None:
        super().__init__(threads=1)
        self.db_path = db_path

    def run(self, cells):
        for cell, row in super().run(cells):
            with ResultsDB(self.db_path, create=True) as other:
                assert other.insert(dict(row))
            yield cell, row


def test_a_cell_another_bench_wrote_while_this_one_fitted_it_is_counted_not_lost_from_the_summary(mulan_dir,
                                                                                                   tmp_path):
    db_path = tmp_path / "r.db"
    lines = []
    summary = run_grid(_cells(mulan_dir), db_path, _OtherBenchWritesEachCellWhileThisOneFitsIt(db_path),
                       log=lines.append)
    assert (summary.written, summary.done_elsewhere, summary.failed) == (0, 2, [])  # the race lost, said so
    assert "wrote 0 cells" in lines[-1] and "2 finished by another run meanwhile" in lines[-1]
    with ResultsDB(db_path) as db:
        assert sorted(r["seed"] for r in db.rows()) == [0, 1]


def test_two_benches_at_once_fit_each_cell_once(mulan_dir, tmp_path):
    """Two process executors on one database, as two terminals: every cell is written once, and each
    run either fitted a cell or found it done; together they fit no cell twice when one is far enough ahead."""
    import threading

    db_path = tmp_path / "r.db"
    cells = _cells(mulan_dir, seeds=range(4))
    summaries = []

    def bench():
        summaries.append(run_grid(cells, db_path, make_executor("process", jobs=1, threads=1)))

    runs = [threading.Thread(target=bench) for _ in range(2)]
    for run in runs:
        run.start()
    for run in runs:
        run.join(timeout=600)
    assert len(summaries) == 2 and all(not s.failed for s in summaries)
    for s in summaries:  # every cell of each run: done before, written, or done by the other (or lost a race)
        assert s.skipped + s.done_elsewhere + s.written == s.total
    assert sum(s.written for s in summaries) == 4
    with ResultsDB(db_path) as db:
        assert sorted(r["seed"] for r in db.rows()) == [0, 1, 2, 3]


def test_a_queued_cell_checks_its_database_and_is_fitted_when_it_cannot_read_it(mulan_dir, tmp_path):
    cell = _cells(mulan_dir, seeds=(0,))[0]
    queued = QueuedCell.of(cell, tmp_path / "absent.db")
    assert hash(queued) == hash(cell) and queued.key == cell.key and not finished_elsewhere(queued)
    row = run_cell(queued, 1)  # no database to read: fitted as usual
    with ResultsDB(tmp_path / "r.db", create=True) as db:
        db.insert(row)
    with pytest.raises(CellDone, match="already in .*r.db: another run finished it"):
        run_cell(QueuedCell.of(cell, tmp_path / "r.db"), 1)
