"""mlkd bench: cell identity, up-front validation, resuming after SIGKILL, executors giving the same numbers."""

import contextlib
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from mlkd.bench import METRIC_COLUMNS, Grid, ResultsDB, SequentialExecutor, make_executor, run_grid
from mlkd.bench import executors as bench_executors
from mlkd.bench.grid import TRAIN_KEYS, Cell, MethodSpec, resolved_config
from mlkd.bench.runner import cpu_model
from mlkd.cli import main
from mlkd.trainer import REFERENCE_KERNELS
from tests.conftest import REPO
from tests.fixtures.make_results_db import make_results_db

TINY = {"hidden": 16, "max_epochs": 2}
COMPARED = (*METRIC_COLUMNS, "threshold", "val_score", "epochs_run", "best_epoch", "config_hash", "key")


@pytest.fixture(autouse=True)
def _restore_torch_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def _grid(data_dir, **kw):
    spec = dict(datasets=["flags"], methods=["bce", "skdtea:alpha=0.3"], seeds=[0, 1], params=TINY)
    spec.update(kw)
    return Grid.build(data_dir=data_dir, **spec)


@pytest.fixture(scope="module")
def sequential_rows(mulan_dir):
    threads = torch.get_num_threads()
    try:
        out = dict(SequentialExecutor(threads=1).run(_grid(str(mulan_dir)).cells()))
    finally:
        torch.set_num_threads(threads)
    assert not [r for r in out.values() if isinstance(r, BaseException)]
    return {cell.key: row for cell, row in out.items()}


# -- grid: identity and validation ---------------------------------------------------------------------
def test_cell_key_follows_the_resolved_config_not_its_spelling():
    a = MethodSpec.parse("skdtea:alpha=0.3,tau=1")
    b = MethodSpec.parse({"name": "skdtea", "params": {"tau": 1.0, "alpha": 3e-1}})
    default = Grid.build(["emotions"], [a], seeds=[0]).cells()[0]
    same = Grid.build(["emotions"], [b], seeds=[0]).cells()[0]
    assert default.key == same.key and default.label == "skdtea:alpha=0.3,tau=1"
    # a training default written out explicitly is the same cell; a changed one is a new cell
    explicit = Grid.build(["emotions"], [a], seeds=[0], params={"max_epochs": 200}).cells()[0]
    changed = Grid.build(["emotions"], [a], seeds=[0], params={"max_epochs": 3}).cells()[0]
    assert explicit.key == default.key != changed.key
    config = resolved_config("skdtea", {"alpha": "0.3"})
    assert config["params"]["alpha"] == 0.3 and config["params"]["hidden"] == 512 and set(config["train"]) == set(
        TRAIN_KEYS)
    cells = Grid.build(["emotions", "flags"], ["bce", "bce:hidden=512", "skdtea"], seeds=[0, 1, 2]).cells()
    assert len(cells) == 2 * 2 * 3  # bce:hidden=512 is bce's default: one cell, not two
    # --param goes to the methods that have it and to training; a method's own spec wins
    cell = Grid.build(["flags"], ["skdtea:hidden=8"], seeds=[0], params={"hidden": 16, "lr": 0.01}).cells()[0]
    assert cell.params == {"hidden": 8} and cell.train == {"lr": 0.01}


def test_the_reference_path_keeps_the_keys_of_cells_written_before_the_fast_path_and_the_default_is_new():
    spec = MethodSpec.parse("bce")
    reference = Grid.build(["emotions"], [spec], seeds=[0], params=dict(REFERENCE_KERNELS)).cells()[0]
    fast = Grid.build(["emotions"], [spec], seeds=[0]).cells()[0]
    # fused_mlp did not exist when the first cells were written: at its reference value it is not in the key
    assert "fused_mlp" not in reference.config["train"] and reference.config["train"]["fused_optimizer"] is False
    assert fast.config["train"]["fused_mlp"] is True and fast.key != reference.key


#: Cell keys as mlkd wrote them when this test was added: published cells are found by them, so a change to how
#: checkpoints (or anything else) identify a fit must leave them as they are. The device is part of a cell's key as
#: spelled ("auto" and "cpu" are two cells), unlike a checkpoint's, which compares the resolved device.
PINNED_KEYS = [
    (["emotions"], "bce", {}, 0, "8867049cacf23725"),
    (["flags"], "bce", {}, 1, "7cc2be3b5804245d"),
    (["emotions"], "skdtea:alpha=0.3,tau=1", {"max_epochs": 3}, 1, "c42a96abef73f938"),
    (["flags"], "distill", {"hidden": 8, "device": "auto"}, 0, "3c124d67b731809e"),
    (["emotions"], "kdtea", {"device": "cpu"}, 0, "e01914a10bd4534d"),
    (["flags"], "cskd:t2_scaling=true", {"fused_mlp": False}, 1, "f451721331dddac4"),
]


@pytest.mark.parametrize("datasets, spec, params, seed, key", PINNED_KEYS)
def test_cell_keys_of_published_configs_do_not_change(datasets, spec, params, seed, key):
    (cell,) = Grid.build(datasets, [spec], seeds=[seed], params=params).cells()
    assert cell.key == key


def test_cell_keys_of_saved_model_configs_do_not_change():
    from mlkd.bench.grid import cell_key, config_hash

    teacher = config_hash(resolved_config("distill", {"teacher_dir": "/models/T", "hidden": 8}, {"max_epochs": 3},
                                          {"teacher_dir": "3fa9" * 8}))
    assert (teacher, cell_key("flags", teacher, 0)) == ("7dcfc4869047502e", "a8771cc4b6265ddf")
    tuned = config_hash(resolved_config("pretrained", {"model_dir": "/models/T"}, {"max_epochs": 1},
                                        {"model_dir": "sha256:" + "ab" * 16}))
    assert tuned == "32ee5cd04c5932d7"


def _fit_teacher(mulan_dir, path, seed: int) -> str:
    """A tiny labelwise model of flags saved to ``path``, replacing one there (``mlkd fit --out path --force``);
    returns its save id."""
    from mlkd import MultiLabelClassifier
    from mlkd.data import load_dataset

    shutil.rmtree(path, ignore_errors=True)
    train = load_dataset("flags", data_dir=mulan_dir).train
    MultiLabelClassifier("labelwise", hidden=8, max_epochs=1, random_state=seed).fit(train.X, train.Y).save(path)
    return json.loads((Path(path) / "config.json").read_text())["save_id"]


def test_a_teacher_fitted_again_into_its_folder_makes_a_new_cell_not_a_reused_one(tmp_path, mulan_dir, monkeypatch,
                                                                                   capsys):
    monkeypatch.chdir(tmp_path)
    first = _fit_teacher(mulan_dir, tmp_path / "runs" / "T1", seed=0)
    db = tmp_path / "td.db"
    argv = ["bench", str(db), "-d", "flags", "-m", "distill:teacher_dir=runs/T1", "--seeds", "0", "-p", "hidden=8",
            "-p", "max_epochs=1", "--data-dir", str(mulan_dir), "-q", "--no-checkpoints"]
    assert main(argv) == 0
    with ResultsDB(db) as store:
        (row,) = store.rows()
    # the relative path is stored as the folder it named, beside the model's save id
    teacher = str((tmp_path / "runs" / "T1").resolve())
    assert row["config"]["params"]["teacher_dir"] == teacher and row["config"]["saved_models"] == {"teacher_dir": first}
    second = _fit_teacher(mulan_dir, tmp_path / "runs" / "T1", seed=1)
    assert second != first
    capsys.readouterr()
    assert main(argv) == 0
    assert "1 cells: 0 already done" in capsys.readouterr().err  # the new teacher's cell runs: the old one's stays
    with ResultsDB(db) as store:
        assert sorted(r["config"]["saved_models"]["teacher_dir"] for r in store.rows()) == sorted([first, second])
    # from another working directory the same text names another folder (here none): one line, nothing runs
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert re.fullmatch(r"mlkd: error: [^\n]+\n", err), err
    assert f"teacher_dir of method 'distill:teacher_dir=runs/T1': model directory {elsewhere.resolve()}" in err
    with ResultsDB(db) as store:
        assert len(store) == 2


def test_a_saved_model_is_keyed_by_its_folder_and_its_contents(tmp_path, mulan_dir):
    from mlkd.io import MODEL_DIR_PARAMS
    from mlkd.methods import REGISTRY, config_fields

    teacher, copy = tmp_path / "T1", tmp_path / "copy"
    save_id = _fit_teacher(mulan_dir, teacher, seed=0)
    shutil.copytree(teacher, copy)

    def cell(spec, params=TINY):
        return Grid.build(["flags"], [spec], seeds=[0], params=params, data_dir=str(mulan_dir)).cells()[0]

    here, there = cell(f"distill:teacher_dir={teacher}"), cell(f"distill:teacher_dir={copy}")
    assert here.saved_models == there.saved_models == {"teacher_dir": save_id}
    assert here.key != there.key  # the same model in another folder is another cell: the config names the folder
    assert cell(f"pretrained:model_dir={teacher}", {"max_epochs": 1}).config["saved_models"] == {"model_dir": save_id}
    assert "saved_models" not in cell("distill").config  # no saved model: the key of every published cell
    # the folder fitted into again after the grid was built: the cell refuses to run under the old model's key
    _fit_teacher(mulan_dir, teacher, seed=1)
    [(_, outcome)] = SequentialExecutor(threads=1).run([here])
    assert isinstance(outcome, ValueError) and "holds another model" in str(outcome)
    # every method parameter that names a folder is one whose model the key follows
    assert {k for m in REGISTRY for k in config_fields(m) if k.endswith("_dir")} == set(MODEL_DIR_PARAMS)


def test_every_finished_headline_cell_is_still_a_cell_of_the_headline_grid():
    """A changed default must not orphan the committed results: the grid file pins the settings they used."""
    grid = Grid.from_file(REPO / "benchmarks" / "headline.toml")
    keys = {cell.key for cell in grid.cells()}
    database = sqlite3.connect(f"file:{REPO / 'benchmarks' / 'results' / 'selfkd.db'}?mode=ro", uri=True)
    with database:
        rows = database.execute("SELECT key, dataset, method FROM results WHERE noise = 'none' AND label = method")
        methods = {s.method for s in grid.methods}
        finished = {key for key, dataset, method in rows if dataset in grid.datasets and method in methods}
        # the cells published before kd_reduction existed (binKL averaged over labels) and before t2_scaling did
        # (CS-KD's term × T²) are kept under their own labels and stay reachable as those settings' cells
        earlier = [MethodSpec.parse(f"{m}:kd_reduction=mean") for m in ("tfkd_self", "tfkd_reg", "ban",
                                                                           "raskd_plus")]
        earlier += [MethodSpec.parse(s) for s in ("cskd:kd_reduction=mean,t2_scaling=true", "cskd:t2_scaling=true")]
        kept = {key for (key,) in database.execute(
            f"SELECT key FROM results WHERE noise = 'none' AND label IN ({','.join('?' * len(earlier))})",
            [s.label for s in earlier])}
    database.close()
    # every cell of the grid is finished (no headline cell may vanish from the committed database), and no
    # finished cell is orphaned: methods × data sets × seeds (18 × 11 × 3 = 594 today), each with its key
    assert grid.noise == ["none"] and len(keys) == len(grid.methods) * len(grid.datasets) * len(grid.seeds)
    assert finished == keys
    earlier_keys = {c.key for c in Grid.build(grid.datasets, earlier, seeds=grid.seeds, noise=grid.noise,
                                                params=grid.params).cells()}
    assert len(kept) == len(earlier) * len(grid.datasets) * len(grid.seeds) and kept == earlier_keys  # 6 × 33


def test_noise_axis_is_canonical_and_trains_on_noisy_labels_with_clean_test(mulan_dir):
    grid = Grid.build(["flags"], ["bce"], seeds=[0], noise=["none", "symmetric:0.30", "SYMMETRIC:3e-1", 0],
                      params=TINY, data_dir=str(mulan_dir))
    clean, noisy = grid.cells()  # "symmetric:0.30" and "SYMMETRIC:3e-1" are one setting; 0 is "none"
    assert (clean.noise, noisy.noise) == ("none", "symmetric:0.3") and clean.key != noisy.key
    rows = dict(SequentialExecutor(threads=1).run([clean, noisy]))
    a, b = rows[clean], rows[noisy]
    assert b["noise"] == "symmetric:0.3" and a["n_test"] == b["n_test"]
    assert a["val_score"] != b["val_score"]  # validation labels carry the noise too (they drive early stopping)


@pytest.mark.parametrize("argv, message", [
    (["-d", "emotions,nope", "-m", "bce"], "unknown data set 'nope'"),
    (["-d", "emotions", "-m", "bcx"], "unknown method 'bcx'"),
    (["-d", "emotions", "-m", "skdtea:alpa=0.3"], "unknown parameter(s) 'alpa' for method 'skdtea'"),
    (["-d", "emotions", "-m", "skdtea:alpha=2"], "'alpha'=2.0 is out of range"),
    (["-d", "emotions", "-m", "bce", "-p", "colour=red"], "unknown parameter 'colour'"),
    (["-d", "emotions", "-m", "bce:hiden=8"], "'hiden': did you mean 'hidden'?"),
    (["-d", "emotions", "-m", "bce", "-p", "max_epoch=3"], "'max_epoch': did you mean 'max_epochs'?"),
    (["-d", "emotions", "-m", "bce", "-p", "lr=-1"], "'lr'=-1.0 is invalid"),
    (["-d", "emotions", "-m", "bce", "--noise", "0.2"], "bad label-noise setting '0.2'"),
    (["-d", "emotions", "-m", "bce", "--noise", "symmetric:1.5"], "RATE in (0, 1]"),
    (["-d", "emotions", "-m", "bce", "--noise", "gaussian:0.1"], "KIND one of symmetric, missing, correlated"),
    (["-d", "emotions", "-m", "bce", "--seeds", "a-b"], "bad seeds"),
    (["-d", "emotions", "-m", "bce", "--seeds", "9223372036854775808"], "integers in [0, 4294967295]"),
    (["-d", "emotions", "-m", "bce", "-p", "device=tpu"], "device='tpu' is invalid"),
    (["-d", "emotions", "-m", "bce:hidden=8", "-m", "{bad"], "bad method spec"),
    (["-d", "emotions", "-m", "bce", "--checkpoint-seconds", "-1"], "expected a number >= 0"),
    (["-d", "emotions", "-m", "bce", "--threads", "100000"], "expected a thread count in [1, 1024]"),
    (["-d", "emotions", "-m", "bce", "--no-checkpoints", "--checkpoint-dir", "ck"], "contradict each other"),
    (["-d", "emotions", "-m", "distill:teacher_dir=no/such/run", "--dry-run"], "/no/such/run does not exist"),
    (["-d", "digits-ml", "-m", "labelwise:backbone=cnn", "-p", "activation=tanh"], "'activation'='tanh' applies to "
                                                                                 "backbone='mlp' only"),
])
def test_bad_grid_is_one_line_error_before_any_cell(tmp_path, capsys, argv, message):
    db = tmp_path / "results.db"
    assert main(["bench", str(db), *argv]) == 2
    err = capsys.readouterr().err
    assert re.fullmatch(r"mlkd: error: [^\n]+\n", err) and message in err
    assert not db.exists()  # nothing ran, nothing was created


def test_grid_file_and_help_example_parse(tmp_path):
    from mlkd.bench.cli import GRID_EXAMPLE

    path = tmp_path / "grid.toml"
    path.write_text(GRID_EXAMPLE)
    grid = Grid.from_file(path, seeds=[0])
    assert [s.label for s in grid.methods] == ["bce", "ls:epsilon=0.1", "skdtea-a0.3"]
    assert len(grid.cells()) == 3 * 3 and grid.params == {"hidden": 256, "max_epochs": 100}
    (tmp_path / "bad.json").write_text('{"datasets": ["flags"], "method": ["bce"]}')
    with pytest.raises(ValueError, match="unknown key.*'method'"):
        Grid.from_file(tmp_path / "bad.json")


# -- resume ----------------------------------------------------------------------------------------
def _rows(db):
    con = sqlite3.connect(db)
    try:
        return con.execute("SELECT key, dataset, label, seed, timestamp FROM results").fetchall()
    except sqlite3.OperationalError:  # the writer has not made the table yet
        return []
    finally:
        con.close()


def test_killed_run_resumes_without_duplicates_losses_or_redone_cells(tmp_path, mulan_dir, monkeypatch, capsys):
    db = tmp_path / "results.db"
    argv = ["bench", str(db), "-d", "flags", "-m", "bce", "--seeds", "0-5", "-p", "hidden=16", "-p", "max_epochs=25",
            "--threads", "1", "--quiet"]
    env = {**os.environ, "MLKD_DATA": str(mulan_dir), "PYTHONPATH": str(REPO / "src")}
    proc = subprocess.Popen([sys.executable, "-m", "mlkd", *argv], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline and not (db.exists() and _rows(db)):
        time.sleep(0.02)
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
    before = {r[0]: r for r in _rows(db)}
    assert 1 <= len(before) < 6, "the run should have been killed with cells still to do"

    monkeypatch.setenv("MLKD_DATA", str(mulan_dir))
    assert main(argv) == 0  # the same command again
    assert f"6 cells: {len(before)} already done" in capsys.readouterr().err
    after = _rows(db)
    assert len(after) == 6 == len({r[0] for r in after}) == len({r[1:4] for r in after})
    assert sorted(r[3] for r in after) == list(range(6))
    assert all(before[r[0]] == r for r in after if r[0] in before)  # finished cells untouched (timestamps too)
    assert sqlite3.connect(db).execute("PRAGMA integrity_check").fetchone()[0] == "ok"

    assert main([*argv, "--dry-run"]) == 0
    assert "6 cells: 6 done, 0 to run" in capsys.readouterr().out


def _kill_once_the_student_checkpointed(argv, root, mulan_dir) -> None:
    """Run ``mlkd bench argv`` (a kdtea cell) and SIGKILL it once its student stage (1) has checkpointed."""
    env = {**os.environ, "MLKD_DATA": str(mulan_dir), "PYTHONPATH": str(REPO / "src")}
    proc = subprocess.Popen([sys.executable, "-m", "mlkd", *argv], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline and not list(root.glob("*/stage1.json")):
        time.sleep(0.02)
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
    assert list(root.glob("*/stage0.done.json")) and list(root.glob("*/stage1.json"))


def test_a_cell_killed_mid_fit_continues_from_its_checkpoint_to_the_uninterrupted_numbers(tmp_path, mulan_dir,
                                                                                          monkeypatch, capsys):
    db, root = tmp_path / "results.db", tmp_path / "results.checkpoints"
    argv = ["bench", str(db), "-d", "emotions", "-m", "kdtea", "--seeds", "0", "-p", "hidden=16",
            "-p", "teacher_hidden=32", "-p", "max_epochs=40", "-p", "patience=40", "--threads", "1", "--quiet",
            "--checkpoint-seconds", "0"]
    _kill_once_the_student_checkpointed(argv, root, mulan_dir)  # the teacher finished, the student is half-way
    assert not _rows(db)

    monkeypatch.setenv("MLKD_DATA", str(mulan_dir))
    assert main([*argv, "--dry-run"]) == 0
    assert "(1 part-done: they continue from a checkpoint)" in capsys.readouterr().out
    assert main(argv) == 0
    assert "1 continue from a checkpoint" in capsys.readouterr().err
    assert not root.exists()  # the state went once the row was written
    with ResultsDB(db) as store:
        (resumed,) = store.rows()
    cell = _grid(str(mulan_dir), datasets=["emotions"], methods=["kdtea"], seeds=[0],
                 params={"hidden": 16, "teacher_hidden": 32, "max_epochs": 40, "patience": 40}).cells()[0]
    assert cell.key == resumed["key"]
    (_, whole), = SequentialExecutor(threads=1).run([cell])  # no checkpoints, never interrupted
    assert {k: resumed[k] for k in COMPARED} == {k: whole[k] for k in COMPARED}
    strip = [{k: v for k, v in row.items() if k != "seconds"} for row in whole["history"]]
    assert [{k: v for k, v in row.items() if k != "seconds"} for row in resumed["history"]] == strip
    # fit_seconds counts the training the killed run did too, not only the rerun's part
    assert resumed["fit_seconds"] >= sum(row["seconds"] for row in resumed["history"])


def test_a_cell_killed_on_one_thread_count_continues_on_it_under_another_and_a_mixed_one_is_named(
        tmp_path, mulan_dir, monkeypatch, capsys):
    """--threads (or --jobs) changed between the killed run and the rerun: the cell continues on the count its
    checkpoint was trained on, so its row is the uninterrupted fit's on that count, bit for bit; a checkpoint
    already trained on two counts (an earlier mlkd resumed it silently) cannot be, and its row, the run's
    summary and mlkd report say so."""
    from mlkd.bench.report import make_report

    db, root = tmp_path / "results.db", tmp_path / "results.checkpoints"
    params = {"hidden": 16, "teacher_hidden": 32, "max_epochs": 40, "patience": 40}
    argv = ["bench", str(db), "-d", "emotions", "-m", "kdtea", "--seeds", "0",
            *(a for k, v in params.items() for a in ("-p", f"{k}={v}")), "--quiet", "--checkpoint-seconds", "0"]
    _kill_once_the_student_checkpointed([*argv, "--threads", "1"], root, mulan_dir)
    (folder,) = root.iterdir()
    shutil.copytree(folder, tmp_path / "saved" / folder.name)

    monkeypatch.setenv("MLKD_DATA", str(mulan_dir))
    assert main([*argv, "--threads", "2"]) == 0
    assert "continue from a checkpoint, on the thread count it was trained on" in capsys.readouterr().err
    assert torch.get_num_threads() == 2  # the worker's own count is back once the cell is written
    with ResultsDB(db) as store:
        (resumed,) = store.rows()
    assert (resumed["threads"], resumed["fit_threads"]) == (1, "1")
    cell = _grid(str(mulan_dir), datasets=["emotions"], methods=["kdtea"], seeds=[0], params=params).cells()[0]
    (_, whole), = SequentialExecutor(threads=1).run([cell])  # no checkpoints, never interrupted, on 1 thread
    assert {k: resumed[k] for k in COMPARED} == {k: whole[k] for k in COMPARED}
    assert whole["fit_threads"] == "1"

    # the same killed state, its student record rewritten as a resume on 2 threads by an earlier mlkd would have
    mixed_db = tmp_path / "mixed.db"
    shutil.copytree(tmp_path / "saved", tmp_path / "mixed.checkpoints")
    record = tmp_path / "mixed.checkpoints" / folder.name / "stage1.json"
    record.write_text(json.dumps({**json.loads(record.read_text()), "num_threads": 2}))
    assert main([*(str(mixed_db) if a == str(db) else a for a in argv), "--threads", "2"]) == 0
    err = capsys.readouterr().err
    assert "1 resumed a checkpoint trained on other CPU thread counts" in err
    assert "emotions kdtea seed 0 (threads 1,2)" in err
    with ResultsDB(mixed_db) as store:
        (row,) = store.rows()
    assert (row["threads"], row["fit_threads"]) == (2, "1,2")
    report = make_report(mixed_db, tmp_path / "report", figures=False)
    for text in (report.index.read_text(), (report.out / "tables.md").read_text()):
        assert "1 cell(s) resumed a checkpoint on another CPU thread count" in text
        assert "emotions · `kdtea` · seed 0 (threads 1,2)" in text
    # a clean resume is not named
    assert "resumed a checkpoint" not in make_report(db, tmp_path / "clean", figures=False).index.read_text()


def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended meanwhile
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="workers die with the parent on Linux only")
def test_process_workers_die_with_a_killed_bench(tmp_path, mulan_dir):
    db = tmp_path / "results.db"
    argv = ["bench", str(db), "-d", "emotions", "-m", "bce", "--seeds", "0,1", "-p", "max_epochs=200",
            "-p", "patience=200", "--jobs", "2", "--threads", "1", "--quiet", "--checkpoint-seconds", "0"]
    env = {**os.environ, "MLKD_DATA": str(mulan_dir), "PYTHONPATH": str(REPO / "src")}
    proc = subprocess.Popen([sys.executable, "-m", "mlkd", *argv], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline \
            and len(list(tmp_path.glob("results.checkpoints/*/stage0.json"))) < 2:
        time.sleep(0.05)  # both workers are fitting
    workers = [c for c in _children(proc.pid) if "spawn_main" in Path(f"/proc/{c}/cmdline").read_text()]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL and len(workers) == 2, proc.stderr.read().decode()[-2000:]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(map(_alive, workers)):
        time.sleep(0.05)
    assert not any(map(_alive, workers)), "orphaned workers go on fitting"


def _workers(pid: int) -> list[int]:
    def spawned(child):
        try:
            return "spawn_main" in Path(f"/proc/{child}/cmdline").read_text()
        except OSError:
            return False

    return [c for c in _children(pid) if spawned(c)]


def _bench_process(mulan_dir, argv) -> subprocess.Popen:
    """``mlkd bench ARGV`` as its own process group (a Ctrl-C goes to the whole group, as from a terminal)."""
    env = {**os.environ, "MLKD_DATA": str(mulan_dir), "PYTHONPATH": str(REPO / "src")}
    return subprocess.Popen([sys.executable, "-m", "mlkd", "bench", *argv], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("moment", ["starting", "fitting"])
def test_ctrl_c_stops_a_parallel_bench_with_one_line(tmp_path, mulan_dir, moment):
    """Ctrl-C (SIGINT to the process group) while the workers import torch or fit, with cells still queued:
    no worker prints a traceback, the bench says ``mlkd: interrupted`` with status 130, and no worker is left
    fitting."""
    db = tmp_path / "results.db"
    proc = _bench_process(mulan_dir, [str(db), "-d", "emotions", "-m", "bce", "--seeds", "0,1,2,3", "-p",
                                      "max_epochs=3000", "-p", "patience=3000", "--jobs", "2", "--threads", "1",
                                      "--quiet", "--checkpoint-seconds", "0"])

    def importing_torch(pid):
        try:
            return "torch" in Path(f"/proc/{pid}/maps").read_text()
        except OSError:
            return False

    def ready():
        if moment == "starting":  # both workers in their initializer, importing torch (a second or more)
            workers = _workers(proc.pid)
            return len(workers) == 2 and all(map(importing_torch, workers))
        return len(list(tmp_path.glob("results.checkpoints/*/stage0.json"))) == 2

    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline and not ready():
        time.sleep(0.01)
    workers = _workers(proc.pid)
    if not ready():  # else the test would not interrupt the moment it names
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail(f"the bench never reached {moment!r}: {proc.communicate()[1].decode()[-3000:]}")
    os.killpg(proc.pid, signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail("the interrupted bench did not exit")
    lines = err.decode().splitlines()
    assert proc.returncode == 130 and lines[1:] == ["mlkd: interrupted"], err.decode()[-3000:]
    assert len(workers) == 2 and not any(map(_alive, workers))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_sigterm_to_one_worker_fails_its_cell_and_the_other_cells_finish(tmp_path, mulan_dir):
    """A SIGTERM to one worker of a parallel bench (a user ending a runaway cell, a batch scheduler): its cell
    is a recorded failure with a one-line message, that worker takes no other cell, the other cells (one still
    queued) are written, and the bench ends as when cells fail (status 1); no worker is left running."""
    db = tmp_path / "results.db"
    proc = _bench_process(mulan_dir, [str(db), "-d", "flags", "-m", "bce", "--seeds", "0,1,2", "-p", "max_epochs=200",
                                      "-p", "patience=200", "-p", "hidden=8", "--jobs", "2", "--threads", "1",
                                      "--quiet"])
    checkpoints = str(tmp_path.resolve() / "results.checkpoints")

    def in_a_cell(pid):  # it holds a cell's lock (runner.cell_lock), taken for the fit
        links = []
        with contextlib.suppress(OSError):
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                with contextlib.suppress(OSError):
                    links.append(os.readlink(fd))
        return any(link.startswith(checkpoints) and link.endswith("/.lock") for link in links)

    seen, victim, victim_ended_first = set(), None, False
    try:
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline and victim is None:
            seen.update(workers := _workers(proc.pid))
            victim = next((w for w in workers if in_a_cell(w)), None)
            time.sleep(0.01)
        assert victim is not None, f"no worker reached a cell: {proc.communicate()[1].decode()[-3000:]}"
        os.kill(victim, signal.SIGTERM)
        while proc.poll() is None and time.monotonic() < deadline:
            seen.update(_workers(proc.pid))
            victim_ended_first = victim_ended_first or not _alive(victim)
            time.sleep(0.02)
        _, err = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    err = err.decode()
    lines = err.splitlines()
    assert proc.returncode == 1 and len(lines) == 4 and "Traceback" not in err, err[-3000:]
    assert re.fullmatch(r"wrote 2 cells to .* in [\d.]+ s; 1 failed \(see its failures table; a rerun retries them\)",
                        lines[1]), err
    stopped = "WorkerStopped: its worker process was stopped by SIGTERM"
    failed = re.fullmatch(rf"mlkd: failed: flags bce seed (\d): {stopped}", lines[2])
    assert failed and lines[3] == "mlkd: error: 1 of 3 cells failed; rerun the same command to retry them", err
    with contextlib.closing(sqlite3.connect(db)) as con:
        failures = con.execute("SELECT seed, error FROM failures").fetchall()
        written = sorted(seed for (seed,) in con.execute("SELECT seed FROM results"))
    seed = int(failed.group(1))
    assert failures == [(seed, stopped)]
    assert written == sorted({0, 1, 2} - {seed})
    assert victim_ended_first, "the worker that got SIGTERM went on while the other cells ran"
    assert not any(map(_alive, seen)), "a worker is left running"


def _alive(pid: int) -> bool:
    try:  # a zombie (state Z) has ended; only its parent's reaping is missing
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_a_cell_whose_checkpoint_another_worker_holds_waits_for_it(tmp_path, mulan_dir):
    import fcntl
    import threading
    from dataclasses import replace

    from mlkd.bench.runner import cell_checkpoint_dir, run_cell

    cell = replace(_grid(str(mulan_dir), methods=["bce"], seeds=[0]).cells()[0], checkpoint_dir=str(tmp_path))
    folder = cell_checkpoint_dir(cell)
    folder.mkdir(parents=True)
    rows = []
    with open(folder / ".lock", "a") as orphan:  # a worker of a killed run, still fitting this cell
        fcntl.flock(orphan, fcntl.LOCK_EX)
        worker = threading.Thread(target=lambda: rows.append(run_cell(cell, threads=1)))
        worker.start()
        worker.join(timeout=3)
        assert worker.is_alive() and not rows  # it waits instead of writing beside the other one
        fcntl.flock(orphan, fcntl.LOCK_UN)
    worker.join(timeout=120)
    assert not worker.is_alive() and rows[0]["key"] == cell.key and rows[0]["epochs_run"] == TINY["max_epochs"]


def test_a_failing_cell_is_recorded_and_retried(tmp_path, mulan_dir, monkeypatch):
    real = bench_executors.run_cell

    def flaky(cell, threads=None):
        if cell.seed == 1:
            raise FloatingPointError("diverged")
        return real(cell, threads)

    monkeypatch.setattr(bench_executors, "run_cell", flaky)
    cells = _grid(str(mulan_dir), methods=["bce"], params={"hidden": 16, "max_epochs": 1}).cells()
    first = run_grid(cells, tmp_path / "r.db", SequentialExecutor(threads=1))
    assert first.written == 1 and [c.seed for c, _ in first.failed] == [1]
    with ResultsDB(tmp_path / "r.db") as db:
        assert [f["seed"] for f in db.failures()] == [1] and "diverged" in db.failures()[0]["error"]
    monkeypatch.setattr(bench_executors, "run_cell", real)
    second = run_grid(cells, tmp_path / "r.db", SequentialExecutor(threads=1))
    assert (second.skipped, second.written, second.failed) == (1, 1, [])
    with ResultsDB(tmp_path / "r.db") as db:
        assert len(db) == 2 and db.failures() == []


def test_a_finished_cell_is_in_the_database_file_itself_while_the_grid_still_runs(tmp_path):
    """Copying or committing results.db without its -wal file (the grid still running) keeps every cell."""
    import shutil

    with ResultsDB(make_results_db(tmp_path / "fixture.db", datasets=("yeast",), methods=("bce",),
                                   seeds=(0,))) as fixture:
        row = fixture.rows()[0]  # a complete row as mlkd bench writes it
    path = tmp_path / "r.db"
    with ResultsDB(path, create=True) as db:
        assert db.insert(row)
        db.record_failure(Cell("yeast", "bce", "bce", seed=1), "diverged", "2026-12-02T00:00:01")
        shutil.copy(path, tmp_path / "copy.db")  # the main file only: the writer's connection is still open
        con = sqlite3.connect(tmp_path / "copy.db")
        assert con.execute("SELECT key, mAP_tuned FROM results").fetchall() == [(row["key"], row["mAP_tuned"])]
        assert con.execute("SELECT seed FROM failures").fetchall() == [(1,)]
        con.close()


def test_a_database_from_before_fit_threads_gets_the_column_and_keeps_its_rows(tmp_path):
    path = make_results_db(tmp_path / "old.db", datasets=("yeast",), methods=("bce",), seeds=(0, 1))
    con = sqlite3.connect(path)
    con.execute("ALTER TABLE results DROP COLUMN fit_threads")  # as an earlier mlkd wrote it
    con.commit()
    con.close()
    with ResultsDB(path) as db:  # a reader leaves it as it is
        old = db.rows()
        assert len(old) == 2 and "fit_threads" not in old[0]
    with ResultsDB(path, create=True) as db:  # the writer, e.g. mlkd bench continuing the grid
        assert db.insert({**old[0], "key": "0" * 16, "seed": 2, "fit_threads": "1,2"})
        rows = db.rows()
    assert [r["fit_threads"] for r in rows] == [None, None, "1,2"]
    assert [{k: v for k, v in r.items() if k != "fit_threads"} for r in rows[:2]] == old


# -- rows --------------------------------------------------------------------------------------------
def test_row_holds_protocol_numbers_history_and_soft_targets(sequential_rows):
    rows = list(sequential_rows.values())
    skdtea = next(r for r in rows if r["method"] == "skdtea")
    assert 0 < skdtea["threshold"] < 1 and skdtea["epochs_run"] == len(skdtea["history"]) == 2
    assert {"student", "reconstruction", "total", "val_score", "seconds"} <= set(skdtea["history"][0])
    assert all(0 <= skdtea[c] <= 1 for c in ("example_f1_05", "example_f1_tuned", "mAP_tuned"))
    ex = skdtea["examples"]
    assert len(ex["y"]) == len(ex["soft_targets"]) == len(ex["rows"]) and len(ex["y"][0]) == len(ex["labels"])
    alpha = 0.3  # soft targets q = (1 - α)·y + α·σ(t/τ)
    for y_row, q_row, t_row in zip(ex["y"], ex["soft_targets"], ex["teacher_probs"], strict=True):
        assert q_row == pytest.approx([(1 - alpha) * y + alpha * t for y, t in zip(y_row, t_row, strict=True)],
                                      abs=2e-4)
    assert next(r for r in rows if r["method"] == "bce")["examples"] is None
    assert {r["threads"] for r in rows} == {1} and rows[0]["mlkd_version"] and rows[0]["python_version"]
    assert {r["fit_threads"] for r in rows} == {"1"}  # trained on one count: an uninterrupted fit's numbers
    # the CPU model is recorded: kernels (and so the last bits of every number) depend on it
    assert cpu_model() in rows[0]["machine"] and rows[0]["machine"].endswith(f"{os.cpu_count()} cpu")
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists() and "model name" in cpuinfo.read_text(errors="replace"):
        assert cpu_model() and cpu_model() in cpuinfo.read_text(errors="replace")


def test_distilled_cell_shows_the_soft_targets_of_its_teacher_stage(mulan_dir, recwarn):
    """A multi-stage method (PLL) trains on its teacher stage's targets; the heat-map row must show them."""
    cell = _grid(str(mulan_dir), methods=["pll"], seeds=[0]).cells()[0]
    [(_, row)] = list(SequentialExecutor(threads=1).run([cell]))
    assert not isinstance(row, BaseException), row
    assert not [w for w in recwarn if "soft-target" in str(w.message)]
    ex = row["examples"]
    assert ex is not None and len(ex["soft_targets"]) == len(ex["y"]) == len(ex["rows"])
    for y_row, q_row in zip(ex["y"], ex["soft_targets"], strict=True):  # PLL: y where teacher agrees, else ½
        assert all(q == y or q == 0.5 for y, q in zip(y_row, q_row, strict=True))


def test_a_noisy_cells_soft_targets_are_made_from_the_noisy_labels_it_was_given_and_keep_the_clean_ones(mulan_dir):
    """The heat map of a label-noise cell: soft targets as training made them (from noisy labels), the noisy labels
    the fit was given beside the clean ones, not soft targets of clean labels it never saw."""
    import numpy as np

    from mlkd import MultiLabelClassifier
    from mlkd.data import load_dataset, validation_split
    from mlkd.estimator import SPLIT_SEED

    cell = _grid(str(mulan_dir), methods=["skdtea:alpha=0.3"], seeds=[0], noise=["symmetric:0.3"]).cells()[0]
    [(_, row)] = list(SequentialExecutor(threads=1).run([cell]))
    assert not isinstance(row, BaseException), row
    ex = row["examples"]
    Y = load_dataset("flags", data_dir=str(mulan_dir)).train.Y
    tr, va = validation_split(Y, fraction=1 / 6, seed=SPLIT_SEED)
    given = MultiLabelClassifier("skdtea", label_noise_kind="symmetric", label_noise_rate=0.3)._corrupt_labels(
        Y[tr], Y[va], cell.seed)[1]  # the validation labels the cell's fit was given
    assert ex["y"] == Y[va][ex["rows"]][:, ex["labels"]].astype(int).tolist()  # the clean ones
    assert ex["y_noisy"] == given[ex["rows"]][:, ex["labels"]].astype(int).tolist() != ex["y"]
    for y_row, q_row, t_row in zip(ex["y_noisy"], ex["soft_targets"], ex["teacher_probs"], strict=True):
        assert q_row == pytest.approx([0.7 * y + 0.3 * t for y, t in zip(y_row, t_row, strict=True)], abs=2e-4)
    assert not np.allclose(np.asarray(ex["soft_targets"]),
                           0.7 * np.asarray(ex["y"]) + 0.3 * np.asarray(ex["teacher_probs"]), atol=2e-4)


def _check_same(rows, sequential_rows):
    rows = [r for r in rows if not isinstance(r, BaseException) or pytest.fail(repr(r))]
    assert {r["key"] for r in rows} == set(sequential_rows)
    for row in rows:
        ref = sequential_rows[row["key"]]
        for column in COMPARED:  # CPU determinism: the same numbers whatever the executor
            assert row[column] == ref[column] or abs(row[column] - ref[column]) <= 1e-12, column


def test_process_executor_gives_the_sequential_numbers(mulan_dir, sequential_rows):
    executor = make_executor("process", jobs=2, threads=1)
    _check_same([row for _, row in executor.run(_grid(str(mulan_dir)).cells())], sequential_rows)


def test_ray_executor_gives_the_sequential_numbers(mulan_dir, sequential_rows):
    if os.environ.get("CI"):  # CI installs the extra (Makefile): a missing Ray there is a failure, not a skip
        import ray
    else:
        ray = pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'mlkd[ray]'")
    ray.init(num_cpus=2, include_dashboard=False, logging_level="warning", log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(REPO / "src")}})
    try:
        executor = make_executor("ray", threads=1)
        _check_same([row for _, row in executor.run(_grid(str(mulan_dir)).cells())], sequential_rows)
    finally:
        ray.shutdown()


def test_a_performance_section_that_cannot_run_here_keeps_its_published_figures(tmp_path, monkeypatch, capsys):
    """benchmarks/perf.py on a machine without a section's tool (py-spy): the section's earlier figures in
    perf.json and BENCHMARKS.md stay as they were, and the run says so."""
    import json

    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    import perf

    published = {"markdown": "| the old table |", "load_before": "1", "load_after": "1", "seconds": 1.0,
                 "when": "2026-12-02 18:09", "command": "benchmarks/perf.py --only profile"}
    results, markdown = tmp_path / "perf.json", tmp_path / "BENCHMARKS.md"
    results.write_text(json.dumps({"profile": published}))
    markdown.write_text("# Benchmarks\n\n<!-- perf:start -->\n| the old table |\n<!-- perf:end -->\n")
    before = markdown.read_text()

    def cannot_run(args):
        raise perf.SectionSkipped("py-spy is not installed")

    monkeypatch.setattr(perf, "RESULTS", results)
    monkeypatch.setattr(perf, "replace_block", lambda name, body: pytest.fail("nothing should be rewritten"))
    monkeypatch.setitem(perf.SECTIONS, "profile", cannot_run)
    monkeypatch.setattr(sys, "argv", ["perf.py", "--only", "profile"])
    perf.main()
    assert json.loads(results.read_text()) == {"profile": published}
    assert markdown.read_text() == before
    assert "profile: skipped, py-spy is not installed; its figures of 2026-12-02 18:09 stay" in capsys.readouterr().out


def test_a_dry_run_accepts_the_empty_file_a_run_would_make_the_database(tmp_path, capsys):
    db = tmp_path / "new.db"
    db.touch()
    assert main(["bench", str(db), "-d", "emotions", "-m", "bce", "--seeds", "0", "--dry-run"]) == 0
    assert "1 cell" in capsys.readouterr().out


def test_two_specs_of_one_config_in_one_grid_make_one_cell_found_under_either_name(tmp_path, mulan_dir, capsys):
    # hidden=8 given twice, once as the spec's own parameter: one config, fitted once, reported by both labels
    db = tmp_path / "r.db"
    grid = tmp_path / "g.toml"
    grid.write_text('datasets = ["flags"]\nmethods = ["bce", {name = "bce", label = "narrow", params = {hidden = 8}}]'
                    '\nseeds = [0]\n[params]\nhidden = 8\nmax_epochs = 1\nfused_optimizer = false\n')
    assert main(["bench", str(db), "--grid", str(grid), "--data-dir", str(mulan_dir), "-q", "--no-checkpoints"]) == 0
    with ResultsDB(db) as store:
        assert len(store) == 1 and list(store.aliases().values()) == [["narrow"]]
    for name in ("bce", "narrow"):
        assert main(["report", str(db), "--out", str(tmp_path / name), "--metrics", "mAP", "--methods", name]) == 0
    capsys.readouterr()
    assert main(["report", str(db), "--out", str(tmp_path / "typo"), "--methods", "narow"]) == 2
    assert "expected some of: 'bce', 'narrow'" in capsys.readouterr().err  # a typo is told both names


def test_a_second_grid_reports_a_shared_cell_under_its_own_name(tmp_path, mulan_dir, capsys):
    db = tmp_path / "r.db"
    common = '\nseeds = [0]\n[params]\nhidden = 8\nmax_epochs = 1\nfused_optimizer = false\n'
    grid_a, grid_b = tmp_path / "a.toml", tmp_path / "b.toml"
    grid_a.write_text('datasets = ["flags"]\nmethods = ["bce", "ls"]' + common)
    grid_b.write_text('datasets = ["flags"]\nmethods = [{name = "bce", label = "baseline"}, '
                      '{name = "ls", label = "label-smoothing"}]' + common)
    data = ["--data-dir", str(mulan_dir), "-q", "--no-checkpoints"]
    assert main(["bench", str(db), "--grid", str(grid_a), *data]) == 0
    assert main(["bench", str(db), "--grid", str(grid_b), *data]) == 0  # the same cells: nothing runs again
    with ResultsDB(db) as store:
        assert len(store) == 2 and sorted(v for vs in store.aliases().values() for v in vs) == [
            "baseline", "label-smoothing"]
    out = tmp_path / "rep"
    assert main(["report", str(db), "--out", str(out), "--metrics", "mAP",
                 "--methods", "label-smoothing,baseline"]) == 0
    header = next(line for line in (out / "tables.md").read_text().splitlines() if line.startswith("| data set"))
    assert header.split("|")[2:-1] == [" label-smoothing ", " baseline "]
    assert main(["report", str(db), "--out", str(tmp_path / "rep-a"), "--metrics", "mAP", "--methods", "bce,ls"]) == 0
    assert main(["report", str(db), "--out", str(tmp_path / "both"), "--metrics", "mAP",
                 "--methods", "bce,baseline"]) == 0  # both names of the same cells: one column, no error


def test_the_tea_family_ranks_tie_equal_means_as_mlkd_report_does(monkeypatch):
    """benchmarks/tea_family.py's rank table: two methods whose seeds give the same mean share the average
    rank, whatever order the seeds come in and however the float sums round (as ``mlkd report``'s ranks)."""
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    import tea_family

    def cells(values):
        return [{"at_tuned": {"hamming_loss": v / 455}} for v in values]

    # 109+109+112 and 108+110+112 errors of 455: both means are 22/91, one ulp apart as float sums; 112+109+109
    # is the first set in another order
    g = {("flags", "a"): cells([109, 109, 112]), ("flags", "b"): cells([108, 110, 112]),
         ("flags", "c"): cells([112, 109, 109]), ("flags", "d"): cells([100] * 3)}
    g.update({("emotions", m): cells([50 + i] * 3) for i, m in enumerate("abcd")})
    table = tea_family.average_ranks(g, ["flags", "emotions"], list("abcd"), [("hamming_loss", False)])
    row = next(line for line in table.splitlines() if line.startswith("| hamming_loss"))
    assert row == "| hamming_loss | 2.00 | 2.50 | 3.00 | 2.50 |", row


def test_a_cell_is_split_with_the_protocol_its_key_records(mulan_dir, monkeypatch):
    """The validation split's seed and share are the ones a cell's resolved config records (grid.PROTOCOL), so a
    row's key never claims a split other than the one its numbers were made on."""
    import mlkd.data
    from mlkd.bench import grid as bench_grid
    from mlkd.bench.runner import run_cell

    seen = []
    real = mlkd.data.validation_split

    def spy(Y, fraction=1 / 6, seed=0):
        seen.append((fraction, seed))
        return real(Y, fraction=fraction, seed=seed)

    monkeypatch.setattr(mlkd.data, "validation_split", spy)
    monkeypatch.setitem(bench_grid.PROTOCOL, "split_seed", 3)
    cell = Grid.build(datasets=["flags"], methods=["bce"], seeds=[0], params=TINY, data_dir=str(mulan_dir)).cells()[0]
    run_cell(cell, threads=1)
    assert seen == [(bench_grid.PROTOCOL["validation_fraction"], 3)], seen
