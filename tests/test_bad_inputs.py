"""The bad-input matrix: every kind of bad input to the API and to ``mlkd`` gives one clear error.

API: a ValueError (a TypeError too where scikit-learn requires it) whose one-line message says what was
wrong and what was expected. CLI: exit status 2 and one line ``mlkd: error: ...`` on stderr, no traceback.
tests/test_estimator.py and tests/test_cli.py hold the earlier cases (NaN/inf in fit, Y = 2, row mismatch,
1 sample, unknown method/parameter, feature mismatch, predict before fit, ...); these are the rest.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import sqlite3
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from mlkd import MultiLabelClassifier, load_model
from mlkd.bench.store import ResultsDB
from mlkd.data import read_arff

from .helpers import linear_problem

X0, Y0 = linear_problem(n=40, d=4, L=3)
TINY = dict(hidden=8, max_epochs=2, patience=2)


def _fit(X, Y, method="bce", X_val=None, Y_val=None, **kw):
    return MultiLabelClassifier(method, **{**TINY, **kw}).fit(X, Y, X_val=X_val, Y_val=Y_val)


#: pandas' NA without pandas (not a test dependency): the estimator knows it by its type's name
_NA = type("NAType", (), {"__repr__": lambda self: "<NA>"})()


def _fit_val(**validation):
    return MultiLabelClassifier("bce", **TINY).fit(X0, Y0, **validation)


def _arff(path: Path, rows: list[str], attrs=("f0 numeric", "f1 numeric", "l0 {0,1}", "l1 {0,1}")) -> Path:
    path.write_text("@relation t\n" + "".join(f"@attribute {a}\n" for a in attrs) + "@data\n" + "\n".join(rows) + "\n")
    return path


@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
    """Files the cases need: a model directory and broken copies of it, ARFF files, checkpoints, databases."""
    root = tmp_path_factory.mktemp("bad")
    c = type("Ctx", (), {})()
    c.root = root
    rng = np.random.default_rng(0)
    rows = [f"{a:.3f},{b:.3f},{int(a > 0)},{int(b > 0)}" for a, b in rng.normal(size=(30, 2))]
    c.arff = _arff(root / "ok.arff", rows)
    c.fitted = _fit(X0, Y0)
    c.clash = _arff(root / "clash.arff", [f"{i / 7:.3f},{'xy'[i % 2]},{i % 2},{i // 2 % 2}" for i in range(12)],
                    attrs=("'a=x' numeric", "a {x,y}", "l0 {0,1}", "l1 {0,1}"))
    c.model = root / "model"  # a model of ok.arff, as 'mlkd fit' makes it
    ds = read_arff(c.arff, n_labels=2)
    MultiLabelClassifier("bce", **TINY).fit(ds.X, ds.Y, label_names=ds.label_names).save(c.model)

    c.binary = root / "binary"  # a one-label model fitted on a 1-D y of two strings
    _fit(X0, np.where(Y0[:, 0] == 1, "yes", "no")).save(c.binary)

    def broken(name, edit_config=None, edit_tensors=None, source=None):
        path = root / name
        shutil.copytree(source or c.model, path)
        if edit_config:
            config = json.loads((path / "config.json").read_text())
            edit_config(config)
            (path / "config.json").write_text(json.dumps(config))
        if edit_tensors:
            from safetensors.torch import load_file, save_file

            tensors = load_file(str(path / "model.safetensors"))
            edit_tensors(tensors)
            save_file(tensors, str(path / "model.safetensors"))
        return path

    c.newer = broken("newer", lambda cfg: cfg.update(format_version=99))
    c.version_text = broken("version-text", lambda cfg: cfg.update(format_version="1"))
    c.no_weights = broken("no-weights")
    (c.no_weights / "model.safetensors").unlink()
    c.no_scaler = broken("no-scaler", edit_tensors=lambda t: t.pop("scaler.mean"))
    c.short_names = broken("short-names", lambda cfg: cfg.update(label_names=["a"]))
    c.unknown_param = broken("unknown-param", lambda cfg: cfg["params"].update(bogus=1))
    c.bad_classes = broken("bad-classes", lambda cfg: cfg.update(binary_classes={"a": 1}))
    c.classes_of_2_labels = broken("classes-of-2-labels", lambda cfg: cfg.update(binary_classes=["no", "yes"]))
    c.mixed_classes = broken("mixed-classes", lambda cfg: cfg.update(binary_classes=["no", 1]), source=c.binary)
    c.nested_classes = broken("nested-classes", lambda cfg: cfg.update(binary_classes=[[1], [2]]), source=c.binary)
    c.equal_classes = broken("equal-classes", lambda cfg: cfg.update(binary_classes=["no", "no"]), source=c.binary)
    c.other_estimator = broken("other-estimator", lambda cfg: cfg.update(estimator="C2AEClassifier"))
    c.threshold_int = broken("threshold-int", lambda cfg: cfg.update(threshold=0))
    c.labels_text = broken("labels-text", lambda cfg: cfg.update(n_labels="3"))
    # as earlier versions saved them (a label name given twice; an ARFF file's one-hot column 'a=x' beside an
    # attribute of that name): they load, and only matching a file's columns by name is refused
    c.twice_columns = broken("twice-columns", lambda cfg: cfg.update(column_names=["f0", "f0"]))
    c.twice_labels = broken("twice-labels", lambda cfg: cfg.update(label_names=["l0", "l0"]))
    c.bad_param_value = broken("bad-param-value", lambda cfg: cfg["method_params"].update(hidden="abc"))
    c.unknown_method = broken("unknown-method", lambda cfg: cfg.update(method="nosuch"))
    c.a_py_file = root / "t4.py"
    c.a_py_file.write_text("print()\n")

    text = c.arff.read_text()
    c.truncated = root / "truncated.arff"
    c.truncated.write_text(text[: text.index(rows[-1]) + 5])  # the last row cut mid-value
    c.undeclared = _arff(root / "undeclared.arff", [*rows[:5], rows[5] + ",1"])  # a value beyond the attributes
    c.sparse_range = _arff(root / "sparse-range.arff", ["{0 1.5,2 1}", "{1 2,7 1}"])
    c.percent_row = _arff(root / "percent.arff", ["1,2,0,1", "0%:"])
    c.inf = _arff(root / "inf.arff", ["inf,1,0,1", *rows[:5]])
    c.no_rows = _arff(root / "no-rows.arff", [])
    c.one_row = _arff(root / "one-row.arff", rows[:1])
    c.never = _arff(root / "never.arff", [r[: r.rindex(",")] + ",0" for r in rows])
    c.absent_labels = root / "labels.xml"
    c.absent_labels.write_text('<labels><label name="l0"/><label name="ghost"/></labels>')
    c.two_labels = _arff(root / "two.arff", [r.rsplit(",", 1)[0] for r in rows], attrs=("f0 numeric", "f1 numeric",
                                                                                        "l0 {0,1}"))
    c.a_file = root / "a-file"
    c.a_file.write_text("not a directory")
    c.empty_db = root / "empty.db"
    c.empty_db.write_bytes(b"")
    c.no_rows_db = root / "no-rows.db"
    ResultsDB(c.no_rows_db, create=True).close()
    c.other_db = root / "other.db"
    with sqlite3.connect(c.other_db) as conn:
        conn.execute("CREATE TABLE songs (title TEXT)")
    # a finished checkpointed fit, and the same for the CLI on ok.arff
    c.checkpoint = root / "ckpt"
    _fit(X0, Y0, checkpoint_dir=c.checkpoint)
    return c


def _flags_with_bad_checksum(ctx, mulan_dir) -> Path:
    data = ctx.root / "mulan"
    if not data.exists():
        shutil.copytree(mulan_dir / "flags", data / "flags")
        path = data / "flags" / "flags-train.arff"
        path.chmod(0o644)
        raw = bytearray(path.read_bytes())
        raw[-2:] = b"1\n" if raw[-2:] == b"0\n" else b"0\n"  # still a valid file, one label flipped
        path.write_bytes(bytes(raw))
    return data


@dataclass
class Case:
    """An API case: ``run(ctx)`` raises ``error`` matching ``match``; its message also matches ``expect``."""

    id: str
    run: object
    match: str
    error: type = ValueError
    expect: str = "expected"


API = [
    Case("X of strings", lambda c: _fit(np.full((40, 4), "a"), Y0),
         "X holds non-numeric values \\(could not convert string to float: 'a'\\)", TypeError),
    Case("X of objects", lambda c: _fit(np.array([[{"a": 1}] * 4] * 40, dtype=object), Y0),
         "argument must be a string or a real number", TypeError),
    Case("complex X", lambda c: _fit(X0.astype(complex), Y0), "Complex data not supported"),
    Case("1-D X", lambda c: _fit(X0[:, 0], Y0), "Expected 2D array, got 1D array.*Reshape your data"),
    Case("3-D X", lambda c: _fit(X0[:, :, None], Y0), "Found array with dim 3"),
    # digits-ml's images (n, 1, H, W) as they come: the CNN reads them as flattened rows, which the error says how
    Case("images as X", lambda c: _fit(np.zeros((40, 1, 2, 2)), Y0),
         r"Found array with dim 4.*images as flattened rows, X\.reshape\(len\(X\), -1\)", expect="expected X as"),
    Case("images to predict", lambda c: c.fitted.predict(np.zeros((5, 1, 2, 2))),
         r"Found array with dim 4.*images as flattened rows, X\.reshape\(len\(X\), -1\)", expect="expected X as"),
    Case("ragged X", lambda c: _fit([[1.0, 2.0], [3.0]], Y0[:2]), "inhomogeneous"),
    Case("0 samples", lambda c: _fit(X0[:0], Y0[:0]), r"0 sample\(s\)"),
    Case("0 features", lambda c: _fit(X0[:, :0], Y0), r"0 feature\(s\)"),
    Case("NaN in predict", lambda c: c.fitted.predict(np.where(np.eye(5, 4) > 0, np.nan, 0.0)), "Input X contains NaN"),
    Case("inf in X_val", lambda c: _fit_val(X_val=X0 + np.inf, Y_val=Y0), "Input X_val contains infinity",
         expect="expected X_val as"),
    Case("X_val without rows", lambda c: _fit_val(X_val=X0[:0], Y_val=Y0[:0]), r"^X_val: Found array with 0 sample"),
    Case("Y_val of 2", lambda c: _fit_val(X_val=X0, Y_val=Y0 * 2), r"^Y_val must contain only 0 and 1"),
    Case("1-D Y_val beside a 2-D Y", lambda c: _fit_val(X_val=X0, Y_val=Y0[:, 0]),
         r"^Y_val is 1-D but Y is a 2-D label matrix", expect="expected Y_val of shape"),
    Case("Y_val of other classes", lambda c: _fit(X0, Y0[:, 0], X_val=X0, Y_val=Y0[:, 0] + 5),
         r"^Y_val has classes \[5, 6\] not seen in y \(\[0, 1\]\)"),
    Case("1-D y of one class", lambda c: _fit(X0, np.zeros(40)), r"^y has a single class \(0\.0\); expected 2 classes"),
    Case("NaN in Y", lambda c: _fit(X0, np.where(Y0 == 1, np.nan, 0.0)), r"only 0 and 1.*\[nan\]"),
    Case("Y of 0.5", lambda c: _fit(X0, Y0 * 0.5), r"only 0 and 1.*\[0.5\]"),
    Case("Y of strings", lambda c: _fit(X0, np.full((40, 3), "yes")), "Unknown label type: Y has dtype"),
    Case("3-D Y", lambda c: _fit(X0, Y0[:, :, None]), r"got shape \(40, 3, 1\)", expect="must be a 2-D"),
    Case("Y None", lambda c: _fit(X0, None), "requires y to be passed"),
    Case("Y_val without X_val", lambda c: _fit_val(Y_val=Y0), "got Y_val without X_val"),
    Case("Y_val with other labels", lambda c: _fit_val(X_val=X0, Y_val=Y0[:, :2]), "Y_val has 2 labels; expected 3"),
    Case("X_val with other features", lambda c: _fit_val(X_val=X0[:, :2], Y_val=Y0),
         "^X_val has 2 features, but MultiLabelClassifier is expecting 4"),
    Case("evaluate with other labels", lambda c: c.fitted.evaluate(X0, Y0[:, :2]),
         r"^Y has 2 labels, but the model predicts 3; expected Y of shape \(n_samples, 3\)"),
    Case("score with other labels", lambda c: c.fitted.score(X0, np.hstack([Y0, Y0])),
         r"^Y has 6 labels, but the model predicts 3"),
    Case("random_state beyond 64 bits", lambda c: _fit(X0, Y0, random_state=2**64),
         r"random_state=18446744073709551616 is invalid; expected an integer seed in \[0, 2\*\*63 - 1\)"),
    Case("negative random_state", lambda c: _fit(X0, Y0, random_state=-1), r"random_state=-1 is invalid"),
    Case("random_state None", lambda c: _fit(X0, Y0, random_state=None), r"random_state=None is invalid",
         expect="expected an integer seed"),
    Case("Y with None", lambda c: _fit(X0, np.where(np.eye(40, 3) > 0, None, Y0.astype(object))),
         r"^Y has missing values \(None or pandas NA, first at row 0, column 0\)"),
    Case("Y with pandas NA", lambda c: _fit(X0, np.where(np.eye(40, 3) > 0, _NA, Y0.astype(object))),
         r"^Y has missing values \(None or pandas NA, first at row 0, column 0\)"),
    Case("max_epochs not a number", lambda c: _fit(X0, Y0, max_epochs="ten"), "'max_epochs'='ten' is invalid"),
    Case("fractional batch_size", lambda c: _fit(X0, Y0, batch_size=0.5), "'batch_size'=0.5 is invalid"),
    Case("unknown device", lambda c: _fit(X0, Y0, device="tpu"), "device='tpu' is invalid"),
    Case("absent CUDA device", lambda c: _fit(X0, Y0, device="cuda:99"), "device='cuda:99' is not available"),
    Case("method None", lambda c: _fit(X0, Y0, method=None), "unknown method None"),
    Case("parameter of the wrong type", lambda c: _fit(X0, Y0, hidden="big"), "'hidden'='big'",
         expect="not a valid int"),
    Case("unknown label noise", lambda c: _fit(X0, Y0, label_noise_kind="bogus"), "label_noise_kind='bogus'"),
    Case("num_threads 0", lambda c: _fit(X0, Y0, num_threads=0), "'num_threads'=0 is invalid"),
    Case("patience 0", lambda c: _fit(X0, Y0, patience=0), "'patience'=0 is invalid"),
    Case("checkpoint_every 0", lambda c: _fit(X0, Y0, checkpoint_dir=c.root / "ck0", checkpoint_every=0),
         "checkpoint_every=0 is invalid"),
    Case("negative checkpoint_seconds", lambda c: _fit(X0, Y0, checkpoint_dir=c.root / "ck1", checkpoint_seconds=-5),
         "checkpoint_seconds=-5 is invalid"),
    Case("resume without checkpoint_dir", lambda c: _fit(X0, Y0, resume=True), "resume=True needs checkpoint_dir"),
    Case("checkpoint_dir is a file", lambda c: _fit(X0, Y0, checkpoint_dir=c.a_file), "a-file is a file"),
    Case("checkpoint exists, no resume", lambda c: _fit(X0, Y0, checkpoint_dir=c.checkpoint),
         "already holds a checkpoint"),
    Case("checkpoint of another config", lambda c: _fit(X0, Y0, checkpoint_dir=c.checkpoint, resume=True, hidden=9),
         r"different fit: its configuration differs \(hidden=8→9\)"),
    Case("checkpoint of other data", lambda c: _fit(X0 + 1, Y0, checkpoint_dir=c.checkpoint, resume=True),
         "different fit: its data had the same shapes but other values"),
    Case("checkpoint of other data shape", lambda c: _fit(X0[:-1], Y0[:-1], checkpoint_dir=c.checkpoint, resume=True),
         "different fit: its data had shapes"),
    Case("load_model(None)", lambda c: load_model(None), "model path None is invalid"),
    Case("format_version not an integer", lambda c: load_model(c.version_text), "invalid format_version '1'"),
    Case("weights without scaler", lambda c: load_model(c.no_scaler), r"lacks the tensor\(s\) scaler.mean"),
    Case("config parameter of the wrong type", lambda c: load_model(c.bad_param_value),
         r"model .*bad-param-value: .*'hidden'.*abc.*in its config.json"),
    Case("config of an unknown method", lambda c: load_model(c.unknown_method),
         r"model .*unknown-method: .*'nosuch'.*in its config.json"),
    Case("label names twice", lambda c: MultiLabelClassifier("bce", **TINY).fit(X0, Y0, label_names=["a", "b", "a"]),
         "label_names hold 'a' more than once", expect="expected unique names"),
    Case("save to an existing file", lambda c: c.fitted.save(c.a_py_file), r"model path .*t4.py is a file",
         expect="expected the path of a new or empty directory"),
    Case("config label names", lambda c: load_model(c.short_names), "invalid 'label_names'"),
    Case("config unknown parameter", lambda c: load_model(c.unknown_param), "unknown estimator parameter.*'bogus'"),
    Case("config binary classes", lambda c: load_model(c.bad_classes), "invalid 'binary_classes'"),
    Case("config binary classes of a 2-label model", lambda c: load_model(c.classes_of_2_labels),
         r"classes-of-2-labels/config.json has an invalid 'binary_classes' \(\['no', 'yes'\]\); expected null for a "
         "2-label model"),
    Case("config binary classes of two types", lambda c: load_model(c.mixed_classes),
         r"mixed-classes/config.json has an invalid 'binary_classes'", expect="two distinct class labels of one type"),
    Case("config binary classes not scalars", lambda c: load_model(c.nested_classes), "invalid 'binary_classes'"),
    Case("config binary classes equal", lambda c: load_model(c.equal_classes), "invalid 'binary_classes'"),
    Case("config estimator of another method", lambda c: load_model(c.other_estimator),
         r"other-estimator/config.json has an invalid 'estimator' \(C2AEClassifier trains method 'c2ae', the "
         r"config's method is 'bce'\)", expect="expected MultiLabelClassifier or the class of method 'bce'"),
    Case("'%' in a bad ARFF row", lambda c: read_arff(c.percent_row, n_labels=2), r"line \d+: 0%:",
         expect="wrong number of values"),
    Case("empty results database", lambda c: ResultsDB(c.empty_db), "empty.db is empty"),
    Case("another application's database", lambda c: ResultsDB(c.other_db, create=True), "another application"),
]


@pytest.mark.parametrize("case", API, ids=[c.id for c in API])
def test_api_bad_input_is_one_clear_error(case, ctx):
    with pytest.raises(case.error) as info:
        case.run(ctx)
    message = str(info.value)
    assert isinstance(info.value, ValueError), f"{type(info.value).__name__}: {message}"
    assert "\n" not in message and "Traceback" not in message, message
    assert re.search(case.match, message), message
    assert re.search(case.expect, message), f"does not say what was expected: {message}"


def _cli(ctx, checksum_data):
    c = ctx
    fit = ["fit", c.arff, "--method", "bce", "--n-labels", "2", "--max-epochs", "2", "--param", "hidden=8", "--quiet"]
    return {
        "truncated ARFF": (["fit", c.truncated, "-m", "bce", "--n-labels", "2"], ["truncated.arff", "wrong number"]),
        "ARFF row with an undeclared attribute": (["fit", c.undeclared, "-m", "bce", "--n-labels", "2"],
                                                  ["undeclared.arff", "wrong number of values"]),
        "sparse index out of range": (["fit", c.sparse_range, "-m", "bce", "--n-labels", "2"], ["sparse index"]),
        "label file naming absent attributes": (["fit", c.arff, "-m", "bce", "--label-file", c.absent_labels],
                                                ["'ghost'", "not declared as attributes"]),
        "data file checksum": (["fit", "flags", "-m", "bce", "--data-dir", checksum_data],
                               ["flags-train.arff has SHA256", "expected"]),
        "inf in ARFF": (["fit", c.inf, "-m", "bce", "--n-labels", "2"],
                        [str(c.inf), "attribute 'f0' has an infinite value (data row", "expected finite numbers"]),
        "ARFF with two columns of one name": (["fit", c.clash, "-m", "bce", "--n-labels", "2", "--out", c.root / "o6"],
                                              ["clash.arff: two feature columns are named 'a=x'", "expected distinct"]),
        "ARFF without rows": (["fit", c.no_rows, "-m", "bce", "--n-labels", "2"], [str(c.no_rows), "no data rows"]),
        "ARFF with one row": (["fit", c.one_row, "-m", "bce", "--n-labels", "2"], ["1 sample(s)", "at least 2"]),
        "model without weights": (["predict", c.no_weights, c.arff], ["model.safetensors is missing"]),
        "model from a newer mlkd": (["evaluate", c.newer, c.arff], ["format version 99", "upgrade mlkd"]),
        "corrupted config field": (["predict", c.labels_text, c.arff], ["invalid 'n_labels'"]),
        "unwritable output directory": ([*fit, "--out", c.a_file / "model"], ["cannot write", "a-file is a file"]),
        "predict with a model naming a column twice": (["predict", c.twice_columns, c.arff],
                                                        ["names two of its feature columns 'f0'", "expected"]),
        "evaluate with a model naming a label twice": (["evaluate", c.twice_labels, c.arff],
                                                       ["names two of its labels 'l0'", "expected"]),
        "evaluate with other labels": (["evaluate", c.model, c.two_labels, "--n-labels", "1"],
                                       ["1 labels but model", "predicts 2"]),
        "empty results database": (["report", c.empty_db, "--out", c.root / "report"], ["is empty"]),
        "results database without cells": (["report", c.no_rows_db, "--out", c.root / "report"], ["no finished cells"]),
        "--resume without --checkpoint-dir": ([*fit, "--out", c.root / "o1", "--resume"], ["--resume needs"]),
        "--checkpoint-every without --checkpoint-dir": ([*fit, "--out", c.root / "o2", "--checkpoint-every", "3"],
                                                        ["--checkpoint-every needs --checkpoint-dir"]),
        "--checkpoint-seconds without --checkpoint-dir": ([*fit, "--out", c.root / "o5", "--checkpoint-seconds", "60"],
                                                          ["--checkpoint-seconds needs --checkpoint-dir"]),
        "--checkpoint-every 0": ([*fit, "--checkpoint-dir", c.root / "ck1", "--checkpoint-every", "0"],
                                 ["--checkpoint-every", "positive integer"]),
        "--checkpoint-dir is a file": ([*fit, "--out", c.root / "o3", "--checkpoint-dir", c.a_file], ["is a file"]),
        "--resume with another fit's checkpoint": ([*fit, "--out", c.root / "o4", "--checkpoint-dir", c.checkpoint,
                                                    "--resume"], ["different fit", "expected"]),
    }


CLI_CASES = ["truncated ARFF", "ARFF row with an undeclared attribute", "sparse index out of range",
             "label file naming absent attributes", "data file checksum", "inf in ARFF", "ARFF without rows",
             "ARFF with one row", "model without weights", "model from a newer mlkd", "corrupted config field",
             "unwritable output directory", "predict with a model naming a column twice",
             "evaluate with a model naming a label twice",
             "ARFF with two columns of one name", "evaluate with other labels", "empty results database",
             "results database without cells", "--resume without --checkpoint-dir",
             "--checkpoint-every without --checkpoint-dir", "--checkpoint-seconds without --checkpoint-dir",
             "--checkpoint-every 0", "--checkpoint-dir is a file",
             "--resume with another fit's checkpoint"]


@pytest.fixture
def mlkd_main(capsys):
    from mlkd.cli import main

    threads = torch.get_num_threads()
    torch.set_num_threads(1)

    def run(args):
        capsys.readouterr()
        rc = main([str(a) for a in args])
        out, err = capsys.readouterr()
        return rc, out, err

    yield run
    torch.set_num_threads(threads)


@pytest.mark.parametrize("name", CLI_CASES)
def test_cli_bad_input_is_one_line_and_status_2(name, ctx, mlkd_main, request):
    checksum_data = None
    if name == "data file checksum":  # a copy of MULAN's flags with one byte changed
        checksum_data = _flags_with_bad_checksum(ctx, request.getfixturevalue("mulan_dir"))
    args, fragments = _cli(ctx, checksum_data)[name]
    rc, out, err = mlkd_main(args)
    lines = err.strip().splitlines()
    assert rc == 2 and out == "", (rc, out, err)
    assert len(lines) == 1 and lines[0].startswith("mlkd: error: ") and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in lines[0], f"{fragment!r} not in {lines[0]!r}"


def test_the_matrix_has_at_least_30_distinct_cases():
    assert len(API) + len(CLI_CASES) >= 30
    assert len({c.id for c in API}) == len(API) and len(set(CLI_CASES)) == len(CLI_CASES)


# -- accepted, with a warning (README: "Guarantees: errors, interruption, file safety") -------------------
def test_a_label_always_positive_is_accepted_with_a_warning():
    Y = Y0.copy()
    Y[:, 2] = 1
    with pytest.warns(UserWarning, match=r"0 label\(s\) never positive and 1 always positive .*columns \[2\]"):
        clf = _fit(X0, Y)
    assert clf.predict_proba(X0)[:, 2].mean() > 0.5


def test_a_label_never_positive_in_an_arff_file_is_one_warning_line(ctx, mlkd_main):
    rc, out, err = mlkd_main(["fit", ctx.never, "-m", "bce", "--n-labels", "2", "--max-epochs", "2", "--param",
                              "hidden=8", "--out", ctx.root / "never-model", "--quiet"])
    assert rc == 0, err
    warnings = [line for line in err.splitlines() if line.strip()]
    assert warnings == [w for w in warnings if w.startswith("mlkd: warning: ")]
    assert any("1 label(s) never positive" in w for w in warnings), err


def test_a_model_saved_with_a_repeated_name_still_loads_and_predicts(ctx):
    # earlier versions saved such models; refusing them on load would lose a user's model
    for path in (ctx.twice_labels, ctx.twice_columns):
        model = load_model(path)
        assert model.predict(X0[:5, :2]).shape == (5, 2)
    assert list(load_model(ctx.twice_labels).label_names_) == ["l0", "l0"]


def test_a_threshold_of_integer_0_loads_like_0_0(ctx):
    model = load_model(ctx.threshold_int)
    assert model.threshold_ == 0.0 and isinstance(model.threshold_, float)
    assert model.predict(X0[:, :2]).all()  # every probability is ≥ 0


def test_a_single_label_column_is_a_one_label_problem():
    clf = _fit(X0, Y0[:, :1])
    assert clf.predict(X0).shape == (40, 1) and clf.n_labels_ == 1


# -- sizes within range that do not fit in memory -----------------------------------------------------------
@contextlib.contextmanager
def _address_space_limit(extra: int = 8 << 30):
    """At most ``extra`` more bytes of address space for this process: a request for terabytes then fails at once
    whatever the machine's overcommit policy (one that grants it would fill the memory instead)."""
    import resource

    status = Path("/proc/self/status").read_text()
    used = int(re.search(r"^VmSize:\s+(\d+) kB", status, re.M).group(1)) * 1024
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = used + extra if hard == resource.RLIM_INFINITY else min(used + extra, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_AS and /proc/self/status are Linux's")
def test_a_model_too_large_for_memory_is_one_clear_error(ctx, mlkd_main):
    """hidden=2**20 passes the range check; its 2**40-weight layer (4 TiB) cannot be allocated."""
    with _address_space_limit():
        with pytest.raises(ValueError) as info:
            _fit(X0, Y0, hidden=1 << 20)
        rc, out, err = mlkd_main(["fit", ctx.arff, "-m", "bce", "--n-labels", "2", "--param", "hidden=1048576",
                                  "--out", ctx.root / "huge", "--quiet"])
    message = str(info.value)
    assert re.match(r"method 'bce' cannot be built for 4 features and 3 labels: allocating [\d,]{17} bytes "
                    r"\([\d,.]+ GiB\) failed, out of memory; expected .* lower hidden=1048576", message), message
    assert "\n" not in message
    assert rc == 2 and out == "" and err.count("\n") == 1, err
    assert err.startswith("mlkd: error: method 'bce' cannot be built for 2 features and 2 labels") and "lower "\
        "hidden=1048576" in err, err
    assert not (ctx.root / "huge" / "model.safetensors").exists()


def test_other_errors_while_building_a_model_are_not_reworded(monkeypatch):
    from mlkd.methods import REGISTRY, build_method

    def broken(self, *args, **kwargs):
        raise RuntimeError("a bug, not a size")

    monkeypatch.setattr(REGISTRY["bce"], "__init__", broken)
    with pytest.raises(RuntimeError, match="^a bug, not a size$"):
        build_method("bce", 4, 3, {"hidden": 8})


def test_running_out_of_memory_while_training_is_one_line_from_the_cli(ctx, mlkd_main, monkeypatch):
    from mlkd import trainer

    def out_of_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB. GPU 0 has a total capacity "
                                     "of 80 GiB of which 1 GiB is free.\nIf reserved but unallocated ...")

    monkeypatch.setattr(trainer.Trainer, "fit", out_of_memory)
    rc, out, err = mlkd_main(["fit", ctx.arff, "-m", "bce", "--n-labels", "2", "--param", "hidden=8", "--out",
                              ctx.root / "oom", "--quiet"])
    assert rc == 2 and out == "" and err.count("\n") == 1, err
    assert err.startswith("mlkd: error: out of memory (CUDA out of memory. Tried to allocate 20.00 GiB") and \
        err.rstrip().endswith("expected a smaller model, batch or data set"), err
    # the allocator's other wording (Windows: "not enough memory") is the same error, not a traceback
    monkeypatch.setattr(trainer.Trainer, "fit", lambda *a, **k: (_ for _ in ()).throw(
        RuntimeError("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: not enough memory: you tried to "
                     "allocate 1000000000000 bytes.")))
    rc, out, err = mlkd_main(["fit", ctx.arff, "-m", "bce", "--n-labels", "2", "--param", "hidden=8", "--out",
                              ctx.root / "oom2", "--quiet"])
    assert rc == 2 and err.startswith("mlkd: error: out of memory (") and err.count("\n") == 1, err


def test_pandas_names_are_unique_kept_and_mismatches_say_why():
    pd = pytest.importorskip("pandas")
    X = pd.DataFrame(X0, columns=["a", "b", "c", "d"])
    with pytest.raises(ValueError, match="X's column names hold 'a' more than once; expected unique names"):
        _fit(X.set_axis(["a", "a", "c", "d"], axis=1), Y0)
    with pytest.raises(ValueError, match="Y's column names hold 'y' more than once; expected unique names"):
        _fit(X, pd.DataFrame(Y0, columns=["y", "y", "z"]))
    binary = _fit(X, pd.Series(Y0[:, 0], name="spam"))  # a Series' name is the label's
    assert binary.label_names_ == ["spam"]
    clf = _fit(X, Y0)
    with pytest.raises(ValueError, match=r"X's column names do not match those seen at fit \(Feature names must be "
                                         r"in the same order as they were in fit\); expected X with the columns fit "
                                         r"saw \(a, b, c, d\), in that order") as info:
        clf.predict(X[["b", "a", "c", "d"]])
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match="unseen at fit time: z; Feature names seen at fit time, yet now missing: a"):
        clf.predict(X.rename(columns={"a": "z"}))
    categorical = X.assign(a=pd.Categorical(["x", "y"] * 20))
    with pytest.raises(TypeError, match="X holds non-numeric values \\(could not convert string to float: 'x'\\)"):
        _fit(categorical, Y0)


def test_label_columns_of_a_dataframe_in_another_order_are_refused_not_scored_against_other_labels():
    pd = pytest.importorskip("pandas")
    Y = pd.DataFrame(Y0, columns=["x", "y", "z"])
    clf = _fit(X0, Y)
    assert clf.score(X0, Y) == clf.score(X0, Y0)  # the fit's order, or plain arrays: taken by position
    shuffled = Y[["z", "y", "x"]]  # was scored silently, z against the model's x
    expected = r"^Y's column 0 is 'z', the model's label 2; expected Y's columns in the model's label order \(x, y, z\)"
    for call in (clf.score, clf.evaluate):
        with pytest.raises(ValueError, match=expected):
            call(X0, shuffled)
    with pytest.raises(ValueError, match=r"^Y_val's column 0 is 'z', the model's label 2"):  # tuned the threshold
        _fit(X0, Y, X_val=X0, Y_val=shuffled)
    assert _fit(X0, Y, X_val=X0, Y_val=Y.set_axis(["a", "b", "c"], axis=1)).n_labels_ == 3  # other names: by position


def test_a_label_dataframe_with_pandas_default_columns_is_taken_by_position_whatever_the_label_names():
    # pd.DataFrame(Y) names its columns 0, 1, 2: a model whose labels are called "1", "2", "3" must not read
    # them as its own labels at other positions
    pd = pytest.importorskip("pandas")
    named = pd.DataFrame(Y0, columns=["1", "2", "3"])
    clf = _fit(X0, named)
    assert clf.score(X0, pd.DataFrame(Y0)) == clf.score(X0, Y0)
    assert clf.evaluate(X0, pd.DataFrame(Y0)) == clf.evaluate(X0, Y0)
    assert _fit(X0, named, X_val=X0, Y_val=pd.DataFrame(Y0)).n_labels_ == 3
    with pytest.raises(ValueError, match=r"^Y's column 0 is '2', the model's label 1"):  # named, reordered: refused
        clf.score(X0, named[["2", "1", "3"]])


def test_numeric_strings_in_x_are_read_as_numbers_as_the_readme_says():
    text = X0.astype(str)
    numbers = text.astype(np.float64)
    assert np.array_equal(_fit(text, Y0).predict_proba(numbers), _fit(numbers, Y0).predict_proba(numbers))


def test_a_model_fitted_by_mlkd_fit_matches_a_dataframes_columns_by_the_names_it_recorded(tmp_path, recwarn):
    # 'mlkd fit' records the data file's columns as column_names_ (not feature_names_in_): a DataFrame given to
    # such a model in Python was read by position whatever its names, so columns in another order were silently
    # fed to the wrong inputs (yeast's test columns reversed: mAP 0.49 → 0.29), with scikit-learn's warning that
    # the model "was fitted without feature names" even for the right order
    pd = pytest.importorskip("pandas")
    clf = _fit(X0, Y0)
    clf.column_names_ = ["a", "b", "c", "d"]  # as 'mlkd fit' sets them
    model = load_model(clf.save(tmp_path / "model"))
    X = pd.DataFrame(X0, columns=model.column_names_)
    recwarn.clear()
    np.testing.assert_allclose(model.predict_proba(X), model.predict_proba(X0), atol=1e-6)  # layout: rounding
    assert not [w for w in recwarn if "feature names" in str(w.message)], [str(w.message) for w in recwarn]
    expected = r"^X's column 0 is 'b', the model's column 1; expected X's columns in the model's order \(a, b, c, d\)"
    for call in (model.predict, model.predict_proba):
        with pytest.raises(ValueError, match=expected):
            call(X[["b", "a", "c", "d"]])
    with pytest.raises(ValueError, match=expected):
        model.evaluate(X[["b", "a", "c", "d"]], Y0)
    assert model.predict(X.set_axis(["p", "q", "r", "s"], axis=1)).shape == Y0.shape  # other names: by position



def test_a_model_whose_label_names_repeat_takes_a_label_dataframe_with_those_very_columns(tmp_path):
    # an earlier mlkd saved models whose data file named two labels alike; the order check looked a repeated name
    # up at its last position only, so a Y DataFrame with exactly the model's label columns was refused ("Y's
    # column 0 is 'l', the model's label 1"), and so would a model's repeated column_names_ be
    pd = pytest.importorskip("pandas")
    clf = _fit(X0, Y0)
    clf.label_names_ = ["l", "l", "m"]
    model = load_model(clf.save(tmp_path / "model"))
    Y = pd.DataFrame(Y0, columns=model.label_names_)
    assert model.evaluate(X0, Y) == model.evaluate(X0, Y0)
    assert model.score(X0, Y) == model.score(X0, Y0)
    with pytest.raises(ValueError, match=r"^Y's column 0 is 'm', the model's label 2"):  # another order still fails
        model.evaluate(X0, Y.iloc[:, [2, 0, 1]])
