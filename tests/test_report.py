"""mlkd report and its statistics: tables, Friedman/Nemenyi (Demšar 2006), figures, errors."""

import functools
import math
import os
import re
import sqlite3
import struct
import time
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as sps

from mlkd.bench import stats
from mlkd.bench.report import make_report
from mlkd.cli import main
from tests.fixtures.make_results_db import DATASETS, METHODS, make_results_db, make_tuning_db


@pytest.fixture(scope="module")
def fixture_db(tmp_path_factory):
    return make_results_db(tmp_path_factory.mktemp("db") / "results.db")


@pytest.fixture(scope="module")
def report(fixture_db, tmp_path_factory):
    return make_report(fixture_db, tmp_path_factory.mktemp("out") / "report", curves=["method=skdtea,seed=0"],
                       metrics=["example_f1", "hamming_loss", "mAP"])


@pytest.fixture
def no_figures(monkeypatch):
    """``mlkd report`` on the command line without drawing figures, for tests that never look at one: drawing
    is most of a report's time (the figures' own test is test_report_links_every_figure_and_cd_diagram_is_a_png)."""
    import mlkd.bench.report

    monkeypatch.setattr(mlkd.bench.report, "make_report", functools.partial(make_report, figures=False))


def png_size(path):
    """(width, height) from a PNG's IHDR chunk; AssertionError unless the file starts like a PNG."""
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{path} lacks the PNG signature"
    assert head[12:16] == b"IHDR", f"{path} has no IHDR chunk first"
    return struct.unpack(">II", head[16:24])


def test_report_links_every_figure_and_cd_diagram_is_a_png(report):
    index = report.index.read_text()
    pictures = sorted((report.out / "figures").glob("*.png"))
    assert pictures and sorted(report.figures) == pictures
    for picture in pictures:
        assert f"figures/{picture.name}" in index, f"index.md does not link {picture.name}"
    cd = report.out / "figures" / "cd_example_f1_tuned.png"
    width, height = png_size(cd)
    assert width > 0 and height > 0
    from matplotlib.image import imread

    assert imread(cd).shape[:2] == (height, width)
    names = {p.name for p in pictures}
    assert {"bars_emotions.png", "curves_emotions.png", "soft_targets_emotions_skdtea.png"} <= names
    assert any(n.startswith("curve_emotions_skdtea_seed0") for n in names)  # the --curves filter
    assert "[All tables" in index and (report.out / "tables.md").is_file()
    # PROTOCOL §5: the conventions of the degenerate cases are stated with the numbers
    tables = (report.out / "tables.md").read_text()
    for text in (index, tables):
        assert "a label with no positive and none predicted counting 0" in text
        assert "coverage is MULAN's (sklearn's coverage_error − 1)" in text


def test_a_report_without_figures_draws_none_links_none_and_has_the_same_statistics(report, fixture_db, tmp_path):
    plain = make_report(fixture_db, tmp_path / "plain", curves=["method=skdtea,seed=0"],
                        metrics=["example_f1", "hamming_loss", "mAP"], figures=False)
    assert plain.figures == [] and not list(plain.out.rglob("*.png"))
    index = plain.index.read_text()
    links = re.findall(r"\]\(([^)\s]+)\)", index)
    assert links and all((plain.out / link).is_file() for link in links), links  # only tables.md and the like
    assert "figures/" not in index and "Not drawn" in index
    for a, b in zip(report.comparisons, plain.comparisons, strict=True):
        assert a.name == b.name and a.datasets == b.datasets and b.figure is None
        np.testing.assert_array_equal(a.avg_ranks, b.avg_ranks)
        assert (a.friedman.statistic, a.friedman.pvalue, a.cd) == (b.friedman.statistic, b.friedman.pvalue, b.cd)
    strip = lambda text: text.replace(str(report.out), "OUT").replace(str(plain.out), "OUT")  # noqa: E731
    assert strip((plain.out / "tables.md").read_text()) == strip((report.out / "tables.md").read_text())


def test_tables_bold_the_best_mean_and_rank_across_datasets(report):
    tables = report.out.joinpath("tables.md").read_text()
    section = tables.split("## Example-F1 @tuned ↑")[1].split("##")[0]
    rows = {line.split("|")[1].strip(): line for line in section.splitlines() if line.startswith("| ")}
    assert all("**" in rows[d].split("|")[-2] for d in DATASETS)  # skdtea (last column) is best everywhere
    # ls and tea tie on the first data set: both 2.5 there → 2.7 and 2.3 on average over 5 data sets
    assert rows["*average rank* (N=5)"].split("|")[2:6] == [" *4.00* ", " *2.70* ", " *2.30* ", " *1.00* "]
    lower = tables.split("## Hamming loss @tuned ↓")[1].split("##")[0]
    assert "*1.00* |" in lower.strip().splitlines()[-1]  # lower is better there: skdtea still ranks first


def test_index_friedman_matches_scipy_on_the_database(report, fixture_db):
    con = sqlite3.connect(fixture_db)
    means = np.array([[con.execute("SELECT AVG(example_f1_tuned) FROM results WHERE dataset=? AND label=?",
                                   (d, m)).fetchone()[0] for m in METHODS] for d in DATASETS])
    expected = sps.friedmanchisquare(*means.T)
    row = next(line for line in report.index.read_text().splitlines() if line.startswith("| Example-F1 @tuned |")
               and "diagram" in line)
    cells = [c.strip() for c in row.split("|")]
    assert float(cells[3]) == pytest.approx(expected.statistic, abs=5e-4)
    assert float(cells[4]) == pytest.approx(expected.pvalue, rel=1e-2)
    assert float(cells[7]) == pytest.approx(stats.critical_difference(4, 5), abs=5e-4)


@pytest.mark.parametrize("k,n", [(3, 5), (4, 11), (6, 8)])
def test_friedman_statistic_matches_scipy_with_ties(k, n):
    rng = np.random.default_rng(k * 100 + n)
    scores = rng.integers(0, 4, size=(n, k)).astype(float)  # few distinct values: many ties
    ours = stats.friedman(stats.rank_matrix(scores))
    theirs = sps.friedmanchisquare(*scores.T)
    assert ours.statistic == pytest.approx(theirs.statistic, rel=1e-12, abs=1e-12)
    assert ours.pvalue == pytest.approx(theirs.pvalue, rel=1e-9, abs=1e-15)


@pytest.mark.parametrize("k,n", [(6, 7), (3, 4), (10, 11)])
def test_the_same_order_on_every_data_set_gives_an_infinite_iman_davenport_f(k, n):
    # chi2 = n(k - 1) then, up to rounding: (7, 6) had printed F_F = 7.4e15 instead of infinity
    result = stats.friedman(np.tile(np.arange(1.0, k + 1), (n, 1)))
    assert result.statistic == pytest.approx(n * (k - 1))
    assert result.iman_davenport == np.inf and result.iman_davenport_pvalue == 0.0


def test_average_ranks_average_ties_in_both_directions():
    scores = np.array([[0.9, 0.9, 0.5], [0.1, 0.2, 0.3]])
    ranks = stats.rank_matrix(scores, higher_is_better=True)
    np.testing.assert_array_equal(ranks, [[1.5, 1.5, 3.0], [3.0, 2.0, 1.0]])
    np.testing.assert_array_equal(stats.average_ranks(ranks), [2.25, 1.75, 2.0])
    np.testing.assert_array_equal(stats.rank_matrix(scores, higher_is_better=False), [[2.5, 2.5, 1], [1, 2, 3]])
    with pytest.raises(ValueError, match="NaN"):
        stats.rank_matrix([[0.1, np.nan]])


def test_nemenyi_critical_difference_is_demsars():
    for k, q in stats.Q_ALPHA_005.items():  # Demšar's table = studentized range / sqrt(2)
        assert q == pytest.approx(sps.studentized_range.ppf(0.95, k, np.inf) / np.sqrt(2), abs=1e-3)
    assert stats.critical_difference(4, 14) == pytest.approx(1.25, abs=0.005)  # Demšar 2006, section 3.2.4
    assert stats.q_alpha(12) == pytest.approx(sps.studentized_range.ppf(0.95, 12, np.inf) / np.sqrt(2))
    assert stats.cliques([1.0, 1.5, 3.9, 4.0], cd=1.0) == [(0, 1), (2, 3)]


def test_significant_pairs_are_those_beyond_the_critical_difference():
    ranks = [2.0, 5.5, 1.0, 4.1]
    # gaps: m2-m0 1.0, m2-m3 3.1, m2-m1 4.5, m0-m1 3.5, m0-m3 2.1, m3-m1 1.4
    assert stats.significant_pairs(ranks, cd=2.0) == [(2, 1, 4.5), (2, 3, pytest.approx(3.1)), (0, 1, 3.5),
                                                        (0, 3, pytest.approx(2.1))]
    assert stats.significant_pairs(ranks, cd=4.5) == []  # "more than CD": a gap equal to CD is not enough


def test_index_lists_the_pairs_beyond_cd_from_its_own_ranks(report):
    # the fixture database (tests/fixtures/make_results_db.py) gives Friedman p = 0.0029 for every comparison,
    # so the pairs branch below is what runs; the assertion keeps it so if the fixture changes
    assert all(comp.friedman.pvalue < 0.05 for comp in report.comparisons)
    index = report.index.read_text()
    section = index.split("### Pairs beyond the critical difference")[1].split("###")[0]
    for comp in report.comparisons:
        line = next(x for x in section.splitlines() if x.startswith(f"| {comp.variant.name} |"))
        claimed = {(a.strip(), b.strip()) for part in line.split("|")[3].split(";") if ">" in part
                   for a, bs in [part.split(">")] for b in bs.split(",")}
        if comp.friedman.pvalue >= 0.05:
            assert "none tested" in line and not claimed
            continue
        names = list(METHODS)
        expected = {(names[i], names[j]) for i in range(len(names)) for j in range(len(names))
                    if comp.avg_ranks[j] - comp.avg_ranks[i] > comp.cd}
        assert claimed == expected


def test_small_grid_gets_tables_and_says_why_there_is_no_test(tmp_path):
    db = make_results_db(tmp_path / "one.db", datasets=("emotions", "flags"), methods=("skdtea",))
    report = make_report(db, tmp_path / "out", metrics=["example_f1", "mAP"])
    index = report.index.read_text()
    assert "Not computed" in index and "1 method(s) × 2 data set(s)" in index
    assert not list((tmp_path / "out" / "figures").glob("cd_*.png"))
    assert "skdtea" in (tmp_path / "out" / "tables.md").read_text()


def test_rerun_in_same_folder_keeps_only_its_own_figures(tmp_path):
    db = make_results_db(tmp_path / "small.db", datasets=("emotions", "flags"), methods=("bce", "ls"), seeds=(0,))
    out = tmp_path / "r"
    make_report(db, out, curves=["all"], metrics=["mAP"])
    many = len(list((out / "figures").glob("*.png")))
    report = make_report(db, out, metrics=["mAP"])
    assert len(list((out / "figures").glob("*.png"))) == len(report.figures) < many


def test_a_report_killed_while_writing_leaves_whole_files_and_can_run_again(fixture_db, tmp_path, monkeypatch):
    """Each Markdown file is written beside and renamed over its place: a report killed mid-write leaves the
    earlier report's files whole (a truncated index.md made the next report refuse its own folder)."""
    import mlkd.bench.report as report_module

    out = tmp_path / "r"
    make_report(fixture_db, out, metrics=["mAP"], figures=False)
    before = {name: (out / name).read_text() for name in ("index.md", "tables.md")}

    def killed(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(report_module.os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        make_report(fixture_db, out, metrics=["mAP", "example_f1"], figures=False)
    monkeypatch.undo()
    assert {name: (out / name).read_text() for name in before} == before  # whole, not truncated
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]  # no temporary file left behind
    again = make_report(fixture_db, out, metrics=["mAP", "example_f1"], figures=False)
    assert "Example-F1" in (out / "tables.md").read_text() and again.index.is_file()


def test_a_report_removes_what_a_killed_report_left_but_not_the_users_files(fixture_db, tmp_path):
    # SIGKILL leaves the hidden temporary files _replace_atomically writes; the next report clears old ones
    out = tmp_path / "r"
    make_report(fixture_db, out, metrics=["mAP"], figures=False)
    old = [out / ".index.md.abcd1234.tmp", out / "figures" / ".cd_mAP.png.x_y9zz00.tmp"]
    fresh = out / ".tables.md.qqqq1111.tmp"  # a report writing there now keeps its own
    users = [out / "notes.tmp", out / "figures" / "mine.png"]
    for path in [*old, fresh, *users]:
        path.write_text("x")
    for path in old:
        os.utime(path, (time.time() - 3600, time.time() - 3600))
    make_report(fixture_db, out, metrics=["mAP"], figures=False)
    assert not any(p.exists() for p in old)
    assert fresh.exists() and all(p.exists() for p in users)


def test_bad_databases_are_one_line_errors(tmp_path, capsys):
    empty = tmp_path / "empty.db"
    empty.write_bytes(b"")
    text = tmp_path / "text.db"
    text.write_text("not a database")
    other = tmp_path / "other.db"
    con = sqlite3.connect(other)
    con.execute("CREATE TABLE t (x)")
    con.commit()
    con.close()
    no_rows = make_results_db(tmp_path / "none.db", datasets=())
    for path, message in [(empty, "is empty"), (text, "not an SQLite"), (other, "no mlkd results tables"),
                          (no_rows, "no finished cells"), (tmp_path / "missing.db", "does not exist")]:
        with pytest.raises((ValueError, FileNotFoundError), match=message):
            make_report(path, tmp_path / "out")
        assert main(["report", str(path)]) == 2
        err = capsys.readouterr().err
        assert re.fullmatch(r"mlkd: error: [^\n]+\n", err) and message in err


def test_unwritable_out_dir_is_a_clear_error(tmp_path, fixture_db):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ValueError, match="cannot write report folder"):
        make_report(fixture_db, blocker / "report")
    with pytest.raises(ValueError, match="is a file"):
        make_report(fixture_db, blocker)
    with pytest.raises(ValueError, match="bad --curves filter"):
        make_report(fixture_db, tmp_path / "ok", curves=["color=red"])
    with pytest.raises(ValueError, match="unknown metric"):
        make_report(fixture_db, tmp_path / "ok", metrics=["accuracy"])


def test_noisy_cells_are_their_own_comparison_blocks():
    from mlkd.bench.report import _Table

    base = {"label": "bce", "config_hash": "h", "seed": 0, "mAP_tuned": 0.5}
    rows = [{**base, "dataset": "yeast", "noise": "none"}, {**base, "dataset": "yeast", "noise": "missing:0.2",
                                                             "mAP_tuned": 0.4}]
    table = _Table(rows)
    assert table.datasets == ["yeast", "yeast [missing:0.2]"]
    assert table.mean_std("yeast [missing:0.2]", "bce", "mAP_tuned")[0] == 0.4  # never averaged with clean



def test_report_of_a_subset_of_methods_and_data_sets(tmp_path, fixture_db, capsys, no_figures):
    out = tmp_path / "subset"
    assert main(["report", str(fixture_db), "--out", str(out), "--methods", "skd*,bce",
                 "--datasets", "emotions,flags,yeast", "--metrics", "mAP"]) == 0
    tables = (out / "tables.md").read_text()
    header = next(line for line in tables.splitlines() if line.startswith("| data set"))
    assert header.split("|")[2:-1] == [" skdtea ", " bce "]  # ls and tea left out; columns in --methods order
    data_rows = [line.split("|")[1].strip() for line in tables.splitlines() if line.startswith("| ")]
    assert {"emotions", "flags", "yeast"} <= set(data_rows) and not {"scene", "medical"} & set(data_rows)
    assert main(["report", str(fixture_db), "--out", str(tmp_path / "none"), "--methods", "bcx"]) == 2
    err = capsys.readouterr().err
    assert "no finished cell has a method label matching 'bcx'; expected some of: 'bce', 'ls', 'tea', 'skdtea'" in err
    # one glob that matches nothing is an error too, not a report without it
    assert main(["report", str(fixture_db), "--out", str(tmp_path / "typo"), "--methods", "bce,skdtae"]) == 2
    assert "matching 'skdtae'" in capsys.readouterr().err
    index = (out / "index.md").read_text()  # the printed command rewrites this very report
    assert "Regenerate: `mlkd report " in index and "--methods 'skd*,bce' --datasets emotions,flags,yeast" in index
    assert "--metrics mAP" in index and "--methods 'skd*,bce'" in tables


def test_tuning_on_validation_picks_by_validation_never_by_test(tmp_path, capsys, no_figures):
    db = make_tuning_db(tmp_path / "sweep.db")
    out = tmp_path / "report"
    assert main(["report", str(db), "--out", str(out), "--tune-on-validation", "--metrics", "mAP"]) == 0
    assert "tuned.md with 2 choice(s)" in capsys.readouterr().out
    tuned = (out / "tuned.md").read_text()
    assert "(tuned.md)" in (out / "index.md").read_text()
    chosen = {line.split("|")[1].strip(): line.split("|")[3].strip() for line in tuned.splitlines()
              if line.startswith("| ") and "`skdtea:" in line.split("|")[3]}
    # emotions: alpha 0.1 has the better validation score and the worse test score; yeast the other way round
    assert chosen == {"emotions": "`skdtea:alpha=0.1`", "yeast": "`skdtea:alpha=0.5`"}
    map_section = tuned.split("## mAP")[1]
    header = next(line for line in map_section.splitlines() if line.startswith("| data set"))
    assert header.split("|")[2:-1] == [" bce ", " skdtea (tuned) "]  # one column per method, not per config
    rows = {line.split("|")[1].strip(): line.split("|")[3].strip() for line in map_section.splitlines()
            if line.startswith("| ") and not line.startswith("| data set")}
    assert rows["emotions"].startswith("**0.601") and rows["yeast"].startswith("0.351")  # the kept configs' test
    # tables.md, the headline, still shows every config as its own method
    assert "skdtea:alpha=0.1" in (out / "tables.md").read_text()


def test_tuning_with_one_config_per_method_says_there_is_nothing_to_tune(tmp_path, fixture_db):
    report = make_report(fixture_db, tmp_path / "r", metrics=["mAP"], tune=True, figures=False)
    assert report.choices == []
    assert "Nothing to tune" in report.tuned.read_text()


def test_software_line_leaves_out_versions_a_cell_did_not_record(tmp_path):
    db = make_results_db(tmp_path / "small.db", datasets=("emotions", "flags"), methods=("bce",), seeds=(0,))
    with sqlite3.connect(db) as con:  # cells imported from older logs have no Python version
        con.execute("UPDATE results SET python_version = NULL WHERE dataset = 'flags'")
    index = make_report(db, tmp_path / "r", metrics=["mAP"], figures=False).index.read_text()
    software = next(line for line in index.splitlines() if line.startswith("- software:"))
    assert software == "- software: mlkd 0.1.0, torch 2.13.0+cpu; mlkd 0.1.0, torch 2.13.0+cpu, Python 3.11", software


def test_equal_results_tie_whatever_order_their_cells_were_written_in():
    from mlkd.bench.report import _Table

    def rows(label, values):  # (0.1 + 0.2) + 0.3 and (0.3 + 0.2) + 0.1 differ in the last bit
        return [{"label": label, "config_hash": label, "dataset": "d", "noise": "none", "seed": s, "x": v}
                for s, v in enumerate(values)]

    table = _Table(rows("a", [0.1, 0.2, 0.3]) + rows("b", [0.3, 0.2, 0.1]))
    assert table.mean_std("d", "a", "x") == table.mean_std("d", "b", "x")
    np.testing.assert_array_equal(stats.rank_matrix(table.means("x")), [[1.5, 1.5]])
    assert np.isnan(_Table(rows("c", [0.4])).mean_std("d", "c", "x")[1])  # one seed: no spread to show


def test_equal_means_of_different_seed_values_tie_in_the_ranks():
    from mlkd.bench.report import _Table

    # The headline's flags Hamming loss @tuned: tfkd_self's seeds made 109, 109, 112 errors in 65 × 7 cells and
    # raskd_plus's 108, 110, 112 — both means are exactly 22/91, but summed in floats they differ in the last
    # bit, and the float comparison had ranked one above the other instead of giving both the average rank
    def rows(label, errors):
        return [{"label": label, "config_hash": label, "dataset": "flags", "noise": "none", "seed": s, "x": e / 455}
                for s, e in enumerate(errors)]

    table = _Table(rows("tfkd_self", [109, 109, 112]) + rows("raskd_plus", [108, 110, 112]) + rows("bce", [100] * 3))
    means = table.means("x")
    assert means[0, 0] != means[0, 1]  # the premise: float means one ulp apart
    np.testing.assert_array_equal(stats.rank_matrix(means, higher_is_better=False), [[2.5, 2.5, 1.0]])
    # genuinely different values (the smallest step a count metric makes on the largest set) stay apart
    step = 1 / (3 * 3185 * 983)  # one error more over 3 seeds of delicious' test cells
    np.testing.assert_array_equal(stats.rank_matrix([[0.02, 0.02 + step]]), [[2.0, 1.0]])


def test_noise_settings_of_the_same_data_sets_are_compared_separately(tmp_path):
    db = make_results_db(tmp_path / "noisy.db")
    with sqlite3.connect(db) as con:  # the same cells again, as if trained with noisy labels
        columns = [r[1] for r in con.execute("PRAGMA table_info(results)")]
        picked = ", ".join("key || ':n'" if c == "key" else "'symmetric:0.2'" if c == "noise" else c for c in columns)
        con.execute(f"INSERT INTO results ({', '.join(columns)}) SELECT {picked} FROM results")
    report = make_report(db, tmp_path / "r", metrics=["mAP"], figures=False)
    assert [(c.noise, len(c.datasets)) for c in report.comparisons] == [("none", 5), ("symmetric:0.2", 5)]
    assert all(c.cd == pytest.approx(stats.critical_difference(4, 5)) for c in report.comparisons)  # N = 5, not 10
    index = report.index.read_text()
    assert "| mAP [none] | 5 |" in index and "| mAP [symmetric:0.2] | 5 |" in index


def test_labels_with_their_own_commas_can_be_named(tmp_path, capsys, no_figures):
    from mlkd.bench.cli import split_labels
    from mlkd.bench.report import _parse_filter

    assert split_labels(["bce:hidden=8,ls:epsilon=0.3,hidden=8", "tea"]) == [
        "bce:hidden=8", "ls:epsilon=0.3,hidden=8", "tea"]
    assert split_labels(["bce,ls*"]) == ["bce", "ls*"]
    with pytest.raises(ValueError, match="bad --curves filter"):  # a mistyped key is still an error
        _parse_filter("method=skdtea,sed=0")
    assert _parse_filter("label=ls:epsilon=0.3,hidden=8,seed=0") == {
        "_text": "label=ls:epsilon=0.3,hidden=8,seed=0", "label": "ls:epsilon=0.3,hidden=8", "seed": "0"}
    db = make_results_db(tmp_path / "c.db", datasets=("emotions", "flags"), methods=("bce", "ls"), seeds=(0,))
    with sqlite3.connect(db) as con:
        con.execute("UPDATE results SET label = 'ls:epsilon=0.3,hidden=8' WHERE label = 'ls'")
    out = tmp_path / "r"
    assert main(["report", str(db), "--out", str(out), "--metrics", "mAP",
                 "--methods", "ls:epsilon=0.3,hidden=8,bce"]) == 0
    header = next(line for line in (out / "tables.md").read_text().splitlines() if line.startswith("| data set"))
    assert header.split("|")[2:-1] == [" ls:epsilon=0.3,hidden=8 ", " bce "]
    assert "± –" in (out / "tables.md").read_text() and "± 0.000" not in (out / "tables.md").read_text()


def test_a_method_tuned_anywhere_is_one_tuned_column_and_monitors_must_agree(tmp_path):
    db = make_tuning_db(tmp_path / "sweep.db")
    with sqlite3.connect(db) as con:  # alpha 0.5 has not finished on yeast: its only config there is the choice
        con.execute("DELETE FROM results WHERE dataset = 'yeast' AND label = 'skdtea:alpha=0.5'")
    report = make_report(db, tmp_path / "r", metrics=["mAP"], tune=True, figures=False)
    tuned = report.tuned.read_text()
    header = next(line for line in tuned.split("## mAP")[1].splitlines() if line.startswith("| data set"))
    assert header.split("|")[2:-1] == [" bce ", " skdtea (tuned) "]
    assert "*average rank* (N=2)" in tuned
    with sqlite3.connect(db) as con:  # -BCE and mAP are not comparable validation scores
        con.execute("UPDATE results SET config = json_set(config, '$.train.monitor', 'loss') "
                    "WHERE label = 'skdtea:alpha=0.5'")
    with pytest.raises(ValueError, match="different validation scores"):
        make_report(db, tmp_path / "r2", metrics=["mAP"], tune=True, figures=False)


def test_the_same_order_on_every_data_set_has_p_zero_not_undefined():
    result = stats.friedman(stats.rank_matrix(np.tile([0.9, 0.5, 0.1], (6, 1))))
    assert math.isinf(result.iman_davenport) and result.iman_davenport_pvalue == 0.0


def test_figures_already_in_a_folder_that_is_not_a_report_are_not_overwritten(tmp_path, capsys, monkeypatch):
    db = make_results_db(tmp_path / "small.db", datasets=("emotions", "flags"), methods=("bce", "ls"), seeds=(0,))
    out = tmp_path / "docs"
    (out / "figures").mkdir(parents=True)
    mine = out / "figures" / "bars_emotions.png"
    mine.write_text("my own figure")
    (out / "figures" / "other.png").write_text("kept")
    assert main(["report", str(db), "--out", str(out), "--metrics", "mAP"]) == 2
    err = capsys.readouterr().err
    assert re.fullmatch(r"mlkd: error: [^\n]+\n", err)
    assert "holds figures/bars_emotions.png that mlkd report did not write" in err
    assert mine.read_text() == "my own figure" and not (out / "index.md").exists()
    mine.unlink()  # no name clash: the report is written and leaves the user's other files alone
    make_report(db, out, metrics=["mAP"])
    assert (out / "figures" / "other.png").read_text() == "kept"

    # a report interrupted while drawing leaves an index.md of mlkd's: running it again is allowed
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    again = tmp_path / "again"
    monkeypatch.setattr("mlkd.bench.report.bar_chart", interrupted)
    with pytest.raises(KeyboardInterrupt):
        make_report(db, again, curves=["all"], metrics=["mAP"])
    assert "not finished" in (again / "index.md").read_text()
    monkeypatch.undo()
    report = make_report(db, again, metrics=["mAP"])
    assert sorted((again / "figures").glob("*.png")) == sorted(report.figures)  # the --curves figures are gone


def test_index_says_which_cells_an_unfinished_grid_lacks(tmp_path, report):
    db = make_results_db(tmp_path / "partial.db")
    with sqlite3.connect(db) as con:
        con.execute("DELETE FROM results WHERE dataset = 'flags' AND label = 'ls' AND seed = 1")
        con.execute("DELETE FROM results WHERE dataset = 'yeast' AND label = 'tea'")
    partial = make_report(db, tmp_path / "r", metrics=["mAP"], figures=False)
    index = partial.index.read_text()
    line = next(x for x in index.splitlines() if "unfinished grid" in x)
    assert "56 of the 60 cells of 5 data sets × 4 methods × 3 seeds" in line
    assert "No cell: `tea` on yeast. Fewer seeds: `ls` on flags (n=2)." in line
    assert index.index("- results:") < index.index("unfinished grid") < index.index("## Average ranks")
    # as the line says: the short entry is ranked, the data set with a missing entry is not
    assert partial.comparisons[0].datasets == ["emotions", "flags", "scene", "medical"]
    assert "unfinished" not in report.index.read_text()  # a complete grid says nothing of the kind


def test_configs_of_one_label_are_told_apart(tmp_path):
    db = make_results_db(tmp_path / "two.db", datasets=("emotions", "flags"), methods=("bce", "ls"), seeds=(0,))
    with sqlite3.connect(db) as con:  # bce again with max_epochs 2: a second config of the same label
        columns = [r[1] for r in con.execute("PRAGMA table_info(results)")]
        changed = {"key": "key || ':2'", "config_hash": "'ab12cd' || config_hash",
                   "config": "json_set(config, '$.train.max_epochs', 2)"}
        picked = ", ".join(changed.get(c, c) for c in columns)
        con.execute(f"INSERT INTO results ({', '.join(columns)}) SELECT {picked} FROM results WHERE label = 'bce'")
        first = con.execute("SELECT config_hash FROM results WHERE label = 'bce'").fetchone()[0][:6]
    report = make_report(db, tmp_path / "r", metrics=["mAP"], figures=False)
    legend = f"`bce [{first}]` train.max_epochs=5; `bce [ab12cd]` train.max_epochs=2."
    index = report.index.read_text()
    tables = (report.out / "tables.md").read_text()
    assert legend in index and legend in tables
    assert "`ls`" not in next(x for x in index.splitlines() if "several configs" in x)  # one config: no legend


def test_tables_rank_each_noise_setting_as_index_does(tmp_path):
    db = make_results_db(tmp_path / "noisy.db", methods=("bce", "ls", "tea"))
    with sqlite3.connect(db) as con:  # noisy copies, where bce ranks first
        columns = [r[1] for r in con.execute("PRAGMA table_info(results)")]
        swap = {"key": "key || ':n'", "noise": "'symmetric:0.2'",
                "mAP_tuned": "CASE label WHEN 'bce' THEN mAP_tuned + 0.1 ELSE mAP_tuned END"}
        picked = ", ".join(swap.get(c, c) for c in columns)
        con.execute(f"INSERT INTO results ({', '.join(columns)}) SELECT {picked} FROM results")
    report = make_report(db, tmp_path / "r", metrics=["mAP"], figures=False)
    tables = (report.out / "tables.md").read_text()
    rank_rows = [x for x in tables.split("## mAP")[1].splitlines() if x.startswith("| *average rank")]
    assert [x.split("|")[1].strip() for x in rank_rows] == ["*average rank [none]* (N=5)",
                                                              "*average rank [symmetric:0.2]* (N=5)"]
    ranks = report.index.read_text().split("## Average ranks")[1].split("##")[0]
    for comp, row in zip(report.comparisons, rank_rows, strict=True):
        in_index = next(x for x in ranks.splitlines() if x.startswith(f"| {comp.name} |"))
        assert [c.strip(" *") for c in row.split("|")[2:-1]] == [c.strip(" *") for c in in_index.split("|")[2:-2]]
    assert list(report.comparisons[0].avg_ranks) != list(report.comparisons[1].avg_ranks)


def test_an_infinite_iman_davenport_beside_a_friedman_p_above_alpha_is_flagged(tmp_path):
    footnote = "†: F_F is infinite (p 0) only because every data set ranks the methods in the same order"
    db = make_results_db(tmp_path / "two.db", datasets=("emotions", "flags"), methods=("bce", "skdtea"))
    report = make_report(db, tmp_path / "r", metrics=["mAP"], figures=False)
    f = report.comparisons[0].friedman
    assert math.isinf(f.iman_davenport) and f.iman_davenport_pvalue == 0.0 and f.pvalue > 0.05
    index = report.index.read_text()
    assert f"| mAP | 2 | 2.000 | {f.pvalue:.3g} | ∞ † | 0 |" in index and footnote in index
    # five data sets in the same order: the χ² test rejects as well, so nothing to flag
    db = make_results_db(tmp_path / "five.db", methods=("bce", "skdtea"))
    report = make_report(db, tmp_path / "r5", metrics=["mAP"], figures=False)
    assert report.comparisons[0].friedman.pvalue < 0.05
    index = report.index.read_text()
    assert "| ∞ | 0 |" in index and "†" not in index


def test_a_config_rerun_under_another_name_is_one_column_with_all_its_seeds(tmp_path, no_figures, capsys):
    """A grid extended with a seed under another spelling of the same config (``-m bce --param hidden=16``, later
    ``-m bce:hidden=16 --seeds 0-2``) reuses the finished cells and writes the new one under its own label: the
    report must not split the config into two methods ranked against each other, under any name it is asked by."""
    from mlkd.bench import ResultsDB

    db = make_results_db(tmp_path / "r.db", datasets=("emotions", "flags"), methods=("bce", "ls"))
    with sqlite3.connect(db) as con:  # seed 2 written by the second grid, seeds 0-1 reused (aliases)
        con.execute("UPDATE results SET label = 'ls:max_epochs=5' WHERE label = 'ls' AND seed = 2")
        reused = [k for (k,) in con.execute("SELECT key FROM results WHERE label = 'ls'")]
    with ResultsDB(db, create=True) as store:
        store.add_aliases((k, "ls:max_epochs=5") for k in reused)
    for methods, column in ((None, "ls"), ("bce,ls", "ls"), ("bce,ls:max_epochs=5", "ls:max_epochs=5"),
                            ("bce,ls*", "ls")):
        out = tmp_path / f"report-{column}-{methods is None}"
        assert main(["report", str(db), "--out", str(out), "--metrics", "mAP",
                     *(["--methods", methods] if methods else [])]) == 0
        tables = (out / "tables.md").read_text()
        header = next(line for line in tables.splitlines() if line.startswith("| data set"))
        assert header.split("|")[2:-1] == [" bce ", f" {column} "], methods
        assert "(n=" not in tables.split("## mAP")[1], methods  # every entry has its 3 seeds
    capsys.readouterr()
    curves = make_report(db, tmp_path / "curves", metrics=["mAP"], curves=["label=ls:max_epochs=5,dataset=flags"])
    assert sorted(p.name.split("_seed")[1][0] for p in curves.figures if p.name.startswith("curve_")) == ["0", "1", "2"]


@pytest.mark.parametrize("option, value, said", [("--methods", "", "no method label given"),
                                                 ("--datasets", ",", "no data set given"),
                                                 ("--datasets", "", "no data set given"),
                                                 ("--metrics", ",", "no metric given")])
def test_an_empty_filter_is_a_one_line_error_and_writes_nothing(tmp_path, fixture_db, capsys, option, value, said):
    out = tmp_path / "r"
    assert main(["report", str(fixture_db), "--out", str(out), option, value]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"mlkd: error: {said}") and err.count("\n") == 1
    assert not out.exists()  # refused before a half-written report


def test_a_report_of_fewer_than_three_seeds_says_it_is_below_protocol(tmp_path):
    # PROTOCOL.md §6 asks for at least 3 seeds per cell: a 2-seed grid's tables are indicative only, and say so
    two = make_report(make_results_db(tmp_path / "two.db", seeds=(0, 1)), tmp_path / "two", figures=False)
    assert "fewer than the 3 seeds a cell needs by PROTOCOL.md §6" in two.index.read_text()
    three = make_report(make_results_db(tmp_path / "three.db", seeds=(0, 1, 2)), tmp_path / "three", figures=False)
    assert "fewer than the 3 seeds" not in three.index.read_text()


def test_means_that_print_the_same_are_both_bold(tmp_path):
    # 0.4412 and 0.4409 both print 0.441: bolding one of them would tell a reader it won by a digit not shown
    db = make_results_db(tmp_path / "r.db", datasets=("emotions", "flags"), methods=("bce", "ls"))
    with sqlite3.connect(db) as con:
        for method, value in (("bce", 0.4412), ("ls", 0.4409)):
            con.execute("UPDATE results SET mAP_05 = ?, mAP_tuned = ? WHERE dataset = 'emotions' AND method = ?",
                        (value, value, method))
    tables = (make_report(db, tmp_path / "r", metrics=["mAP"], figures=False).out / "tables.md").read_text()
    row = next(line for line in tables.split("## mAP")[1].splitlines() if line.startswith("| emotions"))
    assert row.count("**0.441 ± 0.000**") == 2, row


@pytest.fixture
def drawn(monkeypatch):
    """The figures report's drawing functions make, by file name, instead of PNG files."""
    import mlkd.bench.report

    figures = {}
    monkeypatch.setattr(mlkd.bench.report, "_save", lambda fig, path, **options: figures.__setitem__(path.name, fig))
    return figures


def _cell(label, dataset="emotions", noise="none", seed=0, monitor="mAP", **values):
    history = [{"epoch": e, "total": 1.0 / (e + 1), "val_score": 0.5 + 0.1 * e, "seconds": 0.1} for e in range(3)]
    return {"label": label, "method": label, "config_hash": label, "dataset": dataset, "noise": noise, "seed": seed,
            "config": {"train": {"monitor": monitor}}, "history": history, "best_epoch": 2, **values}


def test_cd_diagram_grows_to_hold_a_long_label(tmp_path):
    from mlkd.bench.report import cd_diagram

    ranks, short, long = [1.2, 2.0, 3.0, 3.8], ["a", "b", "c", "d"], ["cskd:kd_reduction=mean,t2_scaling=true", *"bcd"]
    # the labels were placed at a fixed spot left of the axis: a long one ran off the image
    assert png_size(cd_diagram(long, ranks, 1.0, tmp_path / "long.png"))[0] > \
        png_size(cd_diagram(short, ranks, 1.0, tmp_path / "short.png"))[0] + 150


def test_eighteen_methods_look_different_and_alike_in_every_figure(drawn):
    from mlkd.bench.report import _Table, bar_chart, curves_overview

    names = [f"m{j}" for j in range(18)]
    table = _Table([_cell(n, mAP_tuned=0.5 + 0.01 * j) for j, n in enumerate(names)])
    bar_chart(table, "emotions", Path("bars.png"), ["mAP_tuned"])
    bars = {c.get_label(): (c.patches[0].get_facecolor(), c.patches[0].get_hatch())
            for c in drawn["bars.png"].axes[0].containers if hasattr(c, "patches")}
    assert len(set(bars.values())) == 18, bars  # matplotlib's 10 colours came round again: m0 was m10
    curves_overview([table.first_seed("emotions", n) for n in names[5:]], table, Path("c.png"), "emotions")
    lines = {ln.get_label(): (ln.get_color(), ln.get_linestyle()) for ln in drawn["c.png"].axes[1].get_lines()
             if not ln.get_label().startswith("_")}
    assert len(set(lines.values())) == 13
    from matplotlib.colors import to_rgba

    for name in names[5:]:  # a method without curves (m0-m4 here) no longer shifts the others' colours
        assert to_rgba(lines[name][0]) == bars[name][0] and (lines[name][1] == "-") == (bars[name][1] is None)


def test_figures_of_noisy_cells_say_their_noise(drawn, tmp_path):
    from mlkd.bench.report import cell_curve, soft_target_heatmap

    examples = {"rows": [0, 1], "labels": [0, 1], "y": [[0, 1], [1, 0]], "soft_targets": [[0.2, 0.8], [0.7, 0.1]]}
    row = _cell("skdtea", noise="symmetric:0.2", examples=examples)
    cell_curve(row, "skdtea", Path("curve.png"))
    soft_target_heatmap(row, "skdtea", Path("heat.png"))
    assert drawn["curve.png"].axes[0].get_title() == "emotions [symmetric:0.2] · skdtea · seed 0"
    assert drawn["heat.png"].get_suptitle() == "emotions [symmetric:0.2] · skdtea · seed 0"
    rows = [_cell(m, dataset=d, noise=noise, seed=s, mAP_tuned=0.5, examples=examples if m == "skdtea" else None,
                  fit_seconds=1.0, mlkd_version="0.1.0", torch_version=None, python_version=None)
            for m in ("bce", "skdtea") for d in ("emotions", "yeast") for noise in ("none", "symmetric:0.2")
            for s in (0, 1)]
    import mlkd.bench.report

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(mlkd.bench.report, "load_results", lambda path: [dict(r, key=f"{i:016x}", aliases=[])
                                                                     for i, r in enumerate(rows)])
        index = make_report(tmp_path / "r.db", tmp_path / "r", metrics=["mAP"], curves=["method=skdtea,seed=0"]) \
            .index.read_text()
    # a clean and a noisy cell's figures were linked under the same words
    assert "- [emotions [symmetric:0.2] · skdtea · seed 0](" in index and "- [emotions · skdtea · seed 0](" in index
    assert "![emotions [symmetric:0.2] skdtea](" in index


def test_a_noisy_cells_heat_map_names_the_clean_and_the_noisy_labels_it_shows(drawn, tmp_path):
    """A label-noise cell trained on noisy labels: its heat map must not call the clean validation labels the
    ground truth it learnt from. A row that kept the noisy labels shows them; an older one says what it lacks."""
    from mlkd.bench.report import soft_target_heatmap

    clean = {"rows": [0, 1], "labels": [0, 1], "y": [[0, 1], [1, 0]], "soft_targets": [[0.2, 0.8], [0.7, 0.1]],
             "teacher_probs": [[0.6, 0.4], [0.3, 0.2]]}
    noisy = {**clean, "y_noisy": [[1, 1], [1, 0]]}

    def titles(row, name):
        soft_target_heatmap(row, "skdtea", Path(name))
        return [ax.get_title() for ax in drawn[name].axes if ax.get_title()]

    assert titles(_cell("skdtea", examples=clean), "clean.png") == [
        "labels y", "soft targets q", "teacher σ(t/τ)"]
    assert titles(_cell("skdtea", noise="symmetric:0.2", examples=noisy), "noisy.png") == [
        "clean labels y\n(never given to the fit)", "noisy labels ỹ\n(given to the fit)", "soft targets q\n(from ỹ)",
        "teacher σ(t/τ)"]
    noisy_axes = [ax for ax in drawn["noisy.png"].axes if ax.get_title()]
    assert noisy_axes[1].get_images()[0].get_array().tolist() == noisy["y_noisy"]
    assert titles(_cell("skdtea", noise="symmetric:0.2", examples=clean), "older.png") == [
        "clean labels y\n(it trained on noisy ones)", "soft targets q\n(from clean y, not as trained)",
        "teacher σ(t/τ)"]

    rows = [_cell("skdtea", dataset=d, noise=noise, seed=s, mAP_tuned=0.5, examples=ex, fit_seconds=1.0,
                  mlkd_version="0.1.0", torch_version=None, python_version=None)
            for d, noise, ex in (("emotions", "none", clean), ("emotions", "symmetric:0.2", noisy),
                                 ("yeast", "none", clean), ("yeast", "symmetric:0.2", clean)) for s in (0, 1)]
    import mlkd.bench.report

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(mlkd.bench.report, "load_results", lambda path: [dict(r, key=f"{i:016x}", aliases=[])
                                                                     for i, r in enumerate(rows)])
        index = make_report(tmp_path / "r.db", tmp_path / "r", metrics=["mAP"]).index.read_text()
    assert "ground truth" not in index
    assert ("emotions [symmetric:0.2]: trained on labels with symmetric:0.2 noise; the panels show its clean "
            "validation labels (never given to the fit), the noisy ones it was given") in index
    assert ("yeast [symmetric:0.2]: trained on labels with symmetric:0.2 noise, but this cell was written before "
            "mlkd kept the noisy labels: the panels show its clean validation labels and soft targets made from "
            "them, not the targets it trained on.") in index
    assert index.count("trained on labels with") == 2  # the clean cells get no such words


def test_validation_curves_name_the_score_a_cell_stopped_on(drawn):
    from mlkd.bench.report import _Table, cell_curve, curves_overview

    loss = _cell("ls", monitor="loss")
    cell_curve(loss, "ls", Path("one.png"))
    assert drawn["one.png"].axes[1].get_ylabel() == "validation −BCE"  # its val_score is −BCE, not mAP
    table = _Table([_cell("bce"), loss])
    curves_overview(table.rows, table, Path("both.png"), "emotions")
    ax = drawn["both.png"].axes[1]
    assert ax.get_ylabel() == "validation mAP or −BCE"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["bce", "ls (−BCE)"]
    curves_overview([table.rows[0]], table, Path("map.png"), "emotions")
    assert drawn["map.png"].axes[1].get_ylabel() == "validation mAP"


def test_bars_mark_a_missing_value_and_show_each_metrics_direction(drawn):
    from mlkd.bench.report import _Table, bar_chart

    table = _Table([_cell("bce", hamming_loss_tuned=0.1, mAP_tuned=0.6),
                    _cell("ls", hamming_loss_tuned=0.2, mAP_tuned=math.nan)])
    bar_chart(table, "emotions", Path("b.png"), ["hamming_loss_tuned"])
    bar_chart(table, "emotions", Path("m.png"), ["mAP_tuned"])
    assert [t.get_text() for t in drawn["b.png"].axes[0].get_xticklabels()] == ["Hamming loss @tuned ↓"]
    ax = drawn["m.png"].axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["mAP ↑"]
    ls_bar = next(c for c in ax.containers if c.get_label() == "ls").patches[0]
    marks = [t for t in ax.texts if t.get_text() == "no value"]  # an absent bar reads as a score of 0
    assert len(marks) == 1 and marks[0].get_position()[0] == pytest.approx(ls_bar.get_x() + ls_bar.get_width() / 2)


def test_the_regenerate_line_of_a_report_without_figures_says_the_command_draws_them(fixture_db, tmp_path):
    # the command line has no flag for make_report's figures=False: the line must not pass for the same report
    plain = make_report(fixture_db, tmp_path / "a", metrics=["mAP"], figures=False).index.read_text()
    assert "(this report was made without figures, `make_report(..., figures=False)`; the command draws them)" in plain
    drawn = make_report(fixture_db, tmp_path / "b", metrics=["mAP"]).index.read_text()
    assert "made without figures" not in drawn
