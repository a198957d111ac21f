"""The ``mlkd`` command line.

``fit``, ``predict``, ``demo`` and two kinds of bad input run as a user runs them, ``python -m mlkd ...`` in
a subprocess (one BLAS thread each). Each subprocess pays a torch import of seconds, so the other cases
(every --help, datasets, evaluate, every kind of bad input) go through ``mlkd.cli.main(argv)`` in this
process (the ``call`` fixture): the same code, whose exit status and stderr are checked the same way.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src"
TINY = ["--max-epochs", "3", "--param", "hidden=16"]
COMMANDS = ("datasets", "fit", "predict", "evaluate", "demo")
MULAN = (
    "emotions",
    "scene",
    "yeast",
    "enron",
    "medical",
    "genbase",
    "bibtex",
    "delicious",
    "corel5k",
    "tmc2007",
    "flags",
)


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), *filter(None, [env.get("PYTHONPATH")])])
    if not env.get("MLKD_DATA", "").strip():
        env["MLKD_DATA"] = str(REPO.parent / "shared" / "datasets" / "mulan")
    # concurrent subprocesses on few cores: multi-threaded BLAS would stall them all
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", COLUMNS="100")
    return env


def _run_many(*commands, cwd=None, timeout=300) -> list[subprocess.CompletedProcess]:
    """Run ``python -m mlkd <args>`` for each argument list at the same time; results in order."""
    env = _env()
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "mlkd", *map(str, args)],
            cwd=cwd,
            env=env,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for args in commands
    ]
    results = []
    for args, proc in zip(commands, procs, strict=True):
        out, err = proc.communicate(timeout=timeout)
        results.append(subprocess.CompletedProcess(args, proc.returncode, out, err))
    return results


def _run(*args, cwd=None) -> subprocess.CompletedProcess:
    return _run_many(args, cwd=cwd)[0]


@pytest.fixture
def call(capsys, monkeypatch):
    """``call(*args, cwd=None)``: ``mlkd.cli.main(args)`` in this process, as a CompletedProcess."""
    import torch

    from mlkd.cli import main

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models; several threads only stall on shared cores

    def run(*args, cwd=None):
        if cwd is not None:
            monkeypatch.chdir(cwd)
        capsys.readouterr()
        rc = main([str(a) for a in args])
        out, err = capsys.readouterr()
        return subprocess.CompletedProcess(list(args), rc, out, err)

    yield run
    torch.set_num_threads(threads)


def _ok(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert result.returncode == 0, f"{result.args}: rc={result.returncode}\n{result.stderr}"
    return result


def _assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, f"{result.args}: rc={result.returncode}\n{result.stderr}"
    assert "Traceback" not in result.stderr, result.stderr
    assert len(lines) == 1 and lines[0].startswith("mlkd: error: "), f"{result.args}:\n{result.stderr}"
    for fragment in fragments:
        assert fragment.lower() in lines[0].lower(), f"{result.args}: {fragment!r} not in {lines[0]!r}"


def _write_arff(path: Path, n=60, d=5, L=3, seed=0) -> Path:
    """A small learnable multi-label ARFF: the labels are the last L attributes."""
    import numpy as np

    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    Y = (X[:, :L] + 0.3 * rng.normal(size=(n, L)) > 0).astype(int)
    Y[0] = 1  # every label has a positive and a negative
    Y[1] = 0
    lines = ["@relation tiny"]
    lines += [f"@attribute f{j} numeric" for j in range(d)]
    lines += [f"@attribute lab{k} {{0,1}}" for k in range(L)]
    lines.append("@data")
    lines += [",".join([*(f"{v:.4f}" for v in x), *map(str, y)]) for x, y in zip(X, Y, strict=True)]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """A model fitted by ``mlkd fit`` on a tiny ARFF (labels given as --n-labels)."""
    root = tmp_path_factory.mktemp("cli")
    arff = _write_arff(root / "tiny-train.arff")
    test = _write_arff(root / "tiny-test.arff", n=30, seed=1)
    result = _ok(_run("fit", arff, "--method", "bce", "--n-labels", "3", *TINY, "--quiet", cwd=root))
    return root, root / "runs" / "tiny-train-bce", test, result


# -------------------------------------------------------------------------------------------------
HELP_MUST_MENTION = {
    "datasets": ["--data-dir", "MLKD_DATA"],
    "fit": [
        "DATA",
        "--method",
        "--param",
        "--out",
        "--force",
        "--seed",
        "--max-epochs",
        "--batch-size",
        "--lr",
        "--threshold",
        "--threads",
        "--label-file",
        "--n-labels",
        "--data-dir",
        "--quiet",
        "skdtea:",
    ],
    "predict": ["MODEL_DIR", "DATA", "--out", "--proba", "--label-file", "--n-labels"],
    "evaluate": ["MODEL_DIR", "DATA", "--json", "--label-file", "--n-labels"],
    "demo": ["--dataset", "--methods", "--seed", "--max-epochs", "--quiet", "digits-ml"],
}


def test_help_of_every_command_shows_its_arguments_and_an_example(call):
    top = _ok(call("--help"))
    assert all(c in top.stdout for c in COMMANDS) and "examples:" in top.stdout
    for command, words in HELP_MUST_MENTION.items():
        result = _ok(call(command, "--help"))
        assert result.stderr == "" and f"usage: mlkd {command}" in result.stdout
        assert "examples:" in result.stdout and f"mlkd {command}" in result.stdout.split("examples:")[1]
        for word in words:
            assert word in result.stdout, f"{command} --help does not mention {word!r}"


_LIGHT_HELP = """
import sys
from mlkd.cli import main

for argv in (["--help"], ["--version"], ["bench", "--help"], ["report", "--help"], ["predict", "--help"]):
    assert main(argv) == 0, argv
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "sklearn"))
assert not heavy, heavy[:5]
import mlkd

assert "torch" not in sys.modules
assert mlkd.SKDTEAClassifier.__name__ == "SKDTEAClassifier" and "torch" in sys.modules  # loaded on first use
"""


def test_help_and_version_answer_without_loading_torch():
    """The parser (with every command's help) builds without torch and scikit-learn: `mlkd --help` takes a tenth
    of a second instead of three; the method tables of `fit --help` load the registry when they are shown."""
    done = subprocess.run([sys.executable, "-c", _LIGHT_HELP], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


def test_the_package_exports_its_names_on_first_use():
    import mlkd

    assert {"SKDTEAClassifier", "MultiLabelClassifier", "load_model", "save_model"} <= set(dir(mlkd))
    assert all(hasattr(mlkd, name) for name in mlkd.__all__)
    from mlkd import DistillClassifier, save_model  # noqa: F401
    with pytest.raises(AttributeError, match="has no attribute 'nosuch'"):
        mlkd.nosuch  # noqa: B018
    with pytest.raises(ImportError):
        from mlkd import nosuch  # noqa: F401


_SUBMODULES_ON_FIRST_USE = """
import mlkd

# the README's spellings, each in a fresh interpreter that imported only mlkd
assert mlkd.data.load_dataset("digits-ml").train.X.shape == (2000, 256)
assert mlkd.methods.config_fields("skdtea")["alpha"] == 0.5
assert mlkd.methods.c2ae.c2ae_official_train_config()["optimizer"] == "rmsprop"
assert callable(mlkd.batched.fit_seeds) and callable(mlkd.noise.add_label_noise) and mlkd.stages.Stage
"""


def test_the_submodules_the_readme_names_are_reached_from_import_mlkd():
    # 'import mlkd; mlkd.data.load_dataset("emotions")' raised AttributeError: module 'mlkd' has no attribute
    # 'data' unless something had imported mlkd.data before (from mlkd import SKDTEAClassifier does)
    done = subprocess.run([sys.executable, "-c", _SUBMODULES_ON_FIRST_USE], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


_SUBMODULES_LISTED = """
import mlkd, sys

# a name that cannot be a submodule is an AttributeError like any other (hasattr answers False): looking
# 'nosuch.x' up as the submodule mlkd.nosuch.x raised ModuleNotFoundError out of hasattr
assert not hasattr(mlkd, "nosuch.x") and not hasattr(mlkd, "") and not hasattr(mlkd, "data.nosuch")
# dir() lists the submodules reached on first use (tab completion in IPython), without importing them
assert {"data", "methods", "noise", "bench"} <= set(dir(mlkd)) and "torch" not in sys.modules
assert "__main__" not in dir(mlkd) and "_process" not in dir(mlkd)
# mlkd.bench's submodules too, as mlkd's ('import mlkd; mlkd.bench.stats.rank_matrix' raised AttributeError)
assert callable(mlkd.bench.stats.rank_matrix) and {"stats", "report"} <= set(dir(mlkd.bench))
"""


def test_the_lazy_submodules_answer_hasattr_and_dir_as_a_module_does():
    done = subprocess.run([sys.executable, "-c", _SUBMODULES_LISTED], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


def test_datasets_lists_every_set_with_its_status(call, tmp_path):
    data = Path(_env()["MLKD_DATA"])
    if not (data / "emotions").is_dir():
        pytest.skip(f"MULAN data not found in {data}; set MLKD_DATA")
    found = call("datasets", "--data-dir", data)
    missing = call("datasets", "--data-dir", tmp_path)
    for result, status in ((found, "found"), (missing, "missing")):
        rows = {line.split()[0]: line.split()[-1] for line in _ok(result).stdout.splitlines() if line.strip()}
        for name in MULAN:
            assert rows.get(name) == status, f"{name}: {rows.get(name)} in\n{result.stdout}"
        assert rows.get("digits-ml") == "embedded"
        assert "MLKD_DATA" in result.stdout and "--data-dir" in result.stdout
    assert f"data directory: {tmp_path}" in missing.stdout


def test_blank_data_dir_is_mlkd_data(call, tmp_path, monkeypatch):
    # --data-dir "$DIR" with DIR unset: the directory listed is the one checked ($MLKD_DATA, as mlkd bench reads
    # it), not $MLKD_DATA listed while the working directory is checked and every set reported missing
    data = Path(_env()["MLKD_DATA"])
    if not (data / "flags").is_dir():
        pytest.skip(f"MULAN data not found in {data}; set MLKD_DATA")
    monkeypatch.setenv("MLKD_DATA", str(data))
    out = _ok(call("datasets", "--data-dir", "", cwd=tmp_path)).stdout
    rows = {line.split()[0]: line.split()[-1] for line in out.splitlines() if line.strip()}
    assert rows["flags"] == "found" and f"data directory: {data}" in out
    assert f"{data / 'flags'} (found)" in _ok(call("datasets", "flags", "--data-dir", " ")).stdout


@pytest.mark.parametrize("blank", ["", " "])
def test_blank_data_dir_is_mlkd_data_for_bench(call, tmp_path, monkeypatch, blank):
    # mlkd bench read --data-dir " " as the folder '<cwd>/ ' (every set missing) where the other commands read
    # $MLKD_DATA
    data = Path(_env()["MLKD_DATA"])
    if not (data / "flags").is_dir():
        pytest.skip(f"MULAN data not found in {data}; set MLKD_DATA")
    monkeypatch.setenv("MLKD_DATA", str(data))
    result = _ok(call("bench", tmp_path / "r.db", "-d", "flags", "-m", "bce", "--seeds", "0", "--dry-run",
                      "--data-dir", blank, cwd=tmp_path))
    assert "not found" not in result.stderr, result.stderr


def test_datasets_name_counts_the_columns_a_fit_leaves_unscaled(call):
    # it counted the attributes declared 0/1 (flags: 33), but a fit leaves every column holding only 0 and 1 in
    # its training rows as it is: on flags also three counts (36)
    data = Path(_env()["MLKD_DATA"])
    if not (data / "flags").is_dir():
        pytest.skip(f"MULAN data not found in {data}; set MLKD_DATA")
    import numpy as np

    from mlkd import MultiLabelClassifier
    from mlkd.data import load_dataset

    train = load_dataset("flags", data_dir=data).train
    scaler = MultiLabelClassifier("bce", hidden=4, max_epochs=1).fit(train.X, train.Y).scaler_
    unscaled = int(np.count_nonzero((scaler.mean == 0) & (scaler.scale == 1)))
    assert unscaled == 36
    out = _ok(call("datasets", "flags", "--data-dir", data)).stdout
    assert f"43 ({unscaled} hold only 0/1 in the rows a fit trains on" in out


def test_datasets_name_says_a_file_is_altered(call, tmp_path):
    # a checksum mismatch is said as such ("its files are checksum mismatch" read as if they were absent)
    data = Path(_env()["MLKD_DATA"])
    if not (data / "flags").is_dir():
        pytest.skip(f"MULAN data not found in {data}; set MLKD_DATA")
    (tmp_path / "flags").mkdir()
    for name in ("flags-train.arff", "flags-test.arff", "flags.xml"):
        (tmp_path / "flags" / name).write_bytes((data / "flags" / name).read_bytes())
    with open(tmp_path / "flags" / "flags-train.arff", "a") as fh:
        fh.write("% a comment\n")
    out = _ok(call("datasets", "flags", "--data-dir", tmp_path)).stdout
    assert "(checksum mismatch)" in out and "a file is altered: its SHA256 differs" in out


def test_datasets_name_shows_one_set_from_its_files(call, tmp_path):
    """`mlkd datasets NAME`: what a user checks before a grid — rows, features, label frequencies, labels
    without positives — read from the files (the catalogue alone when they are missing)."""
    data = Path(_env()["MLKD_DATA"])
    if not (data / "medical").is_dir():
        pytest.skip(f"MULAN data not found in {data}; set MLKD_DATA")
    import numpy as np

    from mlkd.data import load_dataset

    bench = load_dataset("medical", data_dir=data)
    positives = bench.train.Y.sum(axis=0)
    out = _ok(call("datasets", "Medical", "--data-dir", data)).stdout
    assert out.startswith("medical — text")
    assert f"{data / 'medical'} (found)" in out and "333 train, 645 test" in out
    assert "1449 (" in out and "hold only 0/1 in the rows a fit trains on" in out
    assert f"min 0, median {int(np.median(positives))}, max {positives.max()} of 333" in out
    assert f"{int((positives == 0).sum())} label(s) in train, {int((bench.test.Y.sum(axis=0) == 0).sum())} in test" \
        in out
    top = bench.train.label_names[int(np.argmax(positives))]
    assert f"most frequent        {top} ({positives.max()})" in out and "… 35 more" in out
    missing = _ok(call("datasets", "medical", "--data-dir", tmp_path)).stdout
    assert f"{tmp_path / 'medical'} (missing)" in missing and "1449 features, 45 labels" in missing
    assert "MLKD_DATA" in missing and "\n  rows " not in missing  # nothing read from absent files
    digits = _ok(call("datasets", "digits-ml", "--data-dir", tmp_path)).stdout  # embedded: no files needed
    assert digits.startswith("digits-ml — embedded") and "10; labels per row" in digits


def test_fit_predict_evaluate_round_trip(fitted, call):
    root, model, test, fit = fitted
    assert (model / "model.safetensors").is_file() and (model / "config.json").is_file()
    summary = fit.stdout.strip().splitlines()
    assert len(summary) == 1 and "epochs" in summary[0] and "threshold" in summary[0]
    assert str(Path("runs") / "tiny-train-bce") in summary[0]

    # the test ARFF's labels are found by the model's label names: no --n-labels needed
    pred = _ok(_run("predict", model, test))
    lines = pred.stdout.strip().splitlines()
    assert lines[0] == "lab0,lab1,lab2" and len(lines) == 31
    assert all(set(row.split(",")) <= {"0", "1"} and len(row.split(",")) == 3 for row in lines[1:])

    from mlkd.metrics import METRICS

    table = _ok(call("evaluate", model, test))
    for info in METRICS.values():
        assert info.display_name in table.stdout
    assert "@0.5" in table.stdout and "@tuned" in table.stdout

    _ok(call("predict", model, test, "--proba", "--out", root / "proba.csv"))
    rows = (root / "proba.csv").read_text().strip().splitlines()
    assert rows[0] == "lab0,lab1,lab2" and len(rows) == 31
    values = [float(v) for row in rows[1:] for v in row.split(",")]
    assert all(0 <= v <= 1 for v in values) and len(set(values)) > 2
    report = json.loads(_ok(call("evaluate", model, test, "--json")).stdout)
    assert set(report["metrics"]["@tuned"]) == set(METRICS) == set(report["metrics"]["@0.5"])
    assert 0 < report["thresholds"]["@tuned"] < 1


def test_a_data_set_name_trains_on_train_and_predicts_the_test_split(call, tmp_path):
    data = Path(_env()["MLKD_DATA"])
    if not (data / "flags").is_dir():
        pytest.skip(f"MULAN data not found in {data}; set MLKD_DATA")
    out = tmp_path / "flags-model"
    fit = _ok(call("fit", "flags", "-m", "skdtea", *TINY, "--out", out, "--data-dir", data, "--threads", "1"))
    assert "flags train split (129 rows)" in fit.stdout
    rows = _ok(call("predict", out, "flags", "--data-dir", data)).stdout.strip().splitlines()
    assert len(rows) == 1 + 65 and len(rows[0].split(",")) == 7
    report = json.loads(_ok(call("evaluate", out, "flags", "--json", "--data-dir", data)).stdout)
    assert report["split"] == "test" and report["n_samples"] == 65


def test_fit_on_the_cpu_when_asked_saves_the_device_with_the_model(fitted, call, tmp_path):
    from mlkd.io import load_model

    root = fitted[0]
    _ok(call("fit", root / "tiny-train.arff", "--n-labels", "3", *TINY, "-m", "bce", "--device", "cpu",
             "--out", tmp_path / "m"))
    assert load_model(tmp_path / "m").device == "cpu"
    from mlkd.cli import build_parser

    assert build_parser().parse_args(["fit", "x.arff", "-m", "bce"]).device == "auto"


def test_fit_with_reference_kernels_trains_the_reference_path(fitted, call, tmp_path):
    """--reference-kernels reproduces an estimator fit on the reference path, not the default fast path."""
    import numpy as np

    from mlkd import MultiLabelClassifier
    from mlkd.data import read_arff
    from mlkd.io import load_model
    from mlkd.trainer import REFERENCE_KERNELS

    root = fitted[0]
    args = [root / "tiny-train.arff", "--n-labels", "3", *TINY, "-m", "bce"]
    _ok(call("fit", *args, "--reference-kernels", "--out", tmp_path / "ref"))
    data = read_arff(root / "tiny-train.arff", n_labels=3)
    saved = load_model(tmp_path / "ref")
    assert saved.fused_optimizer is False and saved.fused_mlp is False
    ref = MultiLabelClassifier("bce", max_epochs=3, hidden=16, **REFERENCE_KERNELS).fit(data.X, data.Y)
    fast = MultiLabelClassifier("bce", max_epochs=3, hidden=16).fit(data.X, data.Y)
    assert np.array_equal(saved.predict_proba(data.X), ref.predict_proba(data.X))
    assert not np.array_equal(ref.predict_proba(data.X), fast.predict_proba(data.X))


def test_fit_takes_the_training_settings_without_a_flag_as_params(fitted, call, tmp_path):
    """`--param monitor=loss --param weight_decay=…` train as the estimator with those settings does (the bench
    took them; `mlkd fit` had no way to set them)."""
    import numpy as np

    from mlkd import MultiLabelClassifier
    from mlkd.data import read_arff
    from mlkd.io import load_model

    root = fitted[0]
    args = [root / "tiny-train.arff", "--n-labels", "3", *TINY, "-m", "bce"]
    _ok(call("fit", *args, "--param", "monitor=loss", "--param", "weight_decay=0.05", "--out", tmp_path / "m"))
    data = read_arff(root / "tiny-train.arff", n_labels=3)
    saved = load_model(tmp_path / "m")
    assert (saved.monitor, saved.weight_decay) == ("loss", 0.05)
    same = MultiLabelClassifier("bce", max_epochs=3, hidden=16, monitor="loss", weight_decay=0.05).fit(data.X, data.Y)
    default = MultiLabelClassifier("bce", max_epochs=3, hidden=16).fit(data.X, data.Y)
    assert np.array_equal(saved.predict_proba(data.X), same.predict_proba(data.X))
    assert not np.array_equal(same.predict_proba(data.X), default.predict_proba(data.X))


def test_fit_never_overwrites_a_non_empty_directory_without_force(fitted, call):
    root, model, _, _ = fitted
    fit = ["fit", root / "tiny-train.arff", "--method", "bce", "--n-labels", "3", *TINY, "--quiet"]
    weights = (model / "model.safetensors").read_bytes()
    _assert_one_line_error(call(*fit, cwd=root), "not empty", "--force")
    assert (model / "model.safetensors").read_bytes() == weights
    mine = root / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    _assert_one_line_error(call(*fit, "--out", mine), "not empty", "--force")
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]
    _ok(call(*fit, "--out", mine, "--force"))
    assert (mine / "notes.txt").read_text() == "keep me" and (mine / "config.json").is_file()


def test_demo_prints_one_row_per_method():
    result = _ok(_run("demo", "--methods", "bce,skdtea", "--max-epochs", "2", "--hidden", "16", "--quiet"))
    lines = result.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("method"))
    for name in ("Example-F1", "Micro-F1", "Macro-F1", "mAP", "Ranking loss", "Hamming loss", "seconds"):
        assert name in lines[header]
    assert [line.split()[0] for line in lines[header + 2 : header + 4]] == ["bce", "skdtea"]
    footer = " ".join(lines[header + 4 :])
    assert "tuned threshold" in footer and "touched once" in footer


@pytest.fixture
def bad_inputs(fitted, tmp_path):
    """Every kind of bad input: name -> (argv, fragments the one-line message must contain)."""
    root, model, test, _ = fitted
    arff = root / "tiny-train.arff"
    garbage = tmp_path / "garbage.arff"
    garbage.write_text("this is not an ARFF file\n")
    other = _write_arff(tmp_path / "other.arff", d=4)  # 4 features; the model has 5
    corrupted = tmp_path / "corrupted"
    corrupted.mkdir()
    (corrupted / "config.json").write_bytes((model / "config.json").read_bytes())
    (corrupted / "model.safetensors").write_bytes((model / "model.safetensors").read_bytes()[:100])
    not_json = tmp_path / "not-json"
    not_json.mkdir()
    (not_json / "config.json").write_text("{oops")
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    fit = ["fit", arff, "--n-labels", "3", *TINY]
    return {
        "unknown data set": (["fit", "no-such-set", "--method", "bce"], ["no-such-set", "emotions"]),
        "datasets of an unknown set": (["datasets", "no-such-set"], ["no-such-set", "emotions"]),
        "data set files missing": (
            ["fit", "emotions", "--method", "bce", "--data-dir", tmp_path],
            ["emotions"],
        ),
        "unknown method": ([*fit, "--method", "no-such-method"], ["no-such-method", "skdtea"]),
        "misspelt method": ([*fit, "--method", "skd_tea"], ["'skd_tea': did you mean 'skdtea'?"]),
        "method in capitals": ([*fit, "--method", "SKDTEA"], ["'SKDTEA': did you mean 'skdtea'?"]),
        "misspelt data set": (["fit", "emotion", "--method", "bce"], ["'emotion': did you mean 'emotions'?"]),
        "demo misspelt method": (["demo", "--methods", "bce,lss"], ["'lss': did you mean 'ls'?"]),
        # an OverflowError traceback, and a segmentation fault (OpenMP cannot start 100000 threads)
        "epochs beyond any fit": ([*fit, "--method", "bce", "--max-epochs", "9" * 20], ["max_epochs", "2**30"]),
        "threads beyond any machine": ([*fit, "--method", "bce", "--threads", "100000"], ["num_threads", "1024"]),
        "bad --param syntax": ([*fit, "--method", "bce", "--param", "hidden"], ["KEY=VALUE"]),
        "unknown parameter": ([*fit, "--method", "bce", "--param", "nope=1"], ["nope", "hidden"]),
        "misspelt parameter": ([*fit, "--method", "bce", "--param", "weight_decy=0.1"],
                               ["'weight_decy': did you mean 'weight_decay'?"]),
        "misspelt setting with its own flag": ([*fit, "--method", "bce", "--param", "epochs=3"],
                                               ["'epochs': did you mean the flag --max-epochs N?"]),
        "setting with its own flag": ([*fit, "--method", "bce", "--param", "max_epochs=3"],
                                      ["'max_epochs' is a training setting", "--max-epochs N"]),
        "invalid setting": ([*fit, "--method", "bce", "--param", "monitor=auc"], ["monitor", "'mAP' or 'loss'"]),
        "invalid parameter": ([*fit, "--method", "bce", "--param", "hidden=abc"], ["hidden"]),
        "bad threshold": ([*fit, "--method", "bce", "--threshold", "2"], ["tuned"]),
        "missing --method": (["fit", arff], ["--method"]),
        "unknown command": (["train", arff], ["train"]),
        "unreadable ARFF": (["fit", garbage, "--method", "bce", "--n-labels", "1"], [str(garbage)]),
        "missing ARFF": (["fit", tmp_path / "absent.arff", "--method", "bce"], ["absent.arff"]),
        "missing model dir": (["predict", tmp_path / "no-model", test], ["no-model"]),
        "model dir without model": (["evaluate", tmp_path, test], ["config.json"]),
        "corrupted weights": (["predict", corrupted, test], ["corrupted"]),
        "corrupted config": (["evaluate", not_json, test], ["config.json"]),
        "feature mismatch": (["predict", model, other], ["1 of the model's 5 features", "'f4'"]),
        "unwritable --out": (["predict", model, test, "--out", a_file / "p.csv"], ["a-file"]),
        "bad --device": ([*fit, "--method", "bce", "--device", "gpu"], ["gpu", "cpu", "cuda:N"]),
        "absent GPU": ([*fit, "--method", "bce", "--device", "cuda:7"], ["cuda:7", "not available"]),
        "demo absent GPU": (["demo", "--device", "cuda:7"], ["cuda:7", "not available"]),
        "demo unknown method": (["demo", "--methods", "bce,nope"], ["nope"]),
        "demo method needing a model": (["demo", "--methods", "bce,pretrained"],
                                        ["cannot run method 'pretrained'", "model_dir"]),
        "demo unknown data set": (["demo", "--dataset", "nope"], ["nope"]),
    }


def test_bad_input_is_one_line_on_stderr_and_exit_status_2(bad_inputs, call, tmp_path):
    for what, (args, fragments) in bad_inputs.items():
        result = call(*args, cwd=tmp_path)
        assert result.stdout == "", what
        _assert_one_line_error(result, *fragments)
    # and the same as a real process: a usage error (argparse), a feature mismatch
    real = ["bad --param syntax", "feature mismatch"]
    for what, result in zip(real, _run_many(*(bad_inputs[k][0] for k in real), cwd=tmp_path), strict=True):
        assert result.stdout == "", what
        _assert_one_line_error(result, *bad_inputs[what][1])


# -- found by the 2026-12-03 audit of the command line ------------------------------------------------------
def test_predict_force_replaces_its_file_and_creates_missing_folders_with_normal_permissions(fitted, call):
    root, model, test, _ = fitted
    out = root / "again.csv"
    _ok(call("predict", model, test, "--out", out))
    _assert_one_line_error(call("predict", model, test, "--out", out), "exists", "--force")
    out.write_text("old\n")
    _ok(call("predict", model, test, "--out", out, "--force"))  # the help: "overwrite an existing --out file"
    assert out.read_text().startswith("lab0,lab1,lab2")
    nested = root / "new" / "folder" / "p.csv"
    _ok(call("predict", model, test, "--out", nested))
    umask = os.umask(0o022)
    os.umask(umask)
    assert nested.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's private 0600
    assert (model / "model.safetensors").stat().st_mode & 0o777 == 0o666 & ~umask


def test_predict_reads_rows_without_label_columns(fitted, call):
    root, model, test, _ = fitted
    lines = test.read_text().splitlines()
    features_only = [ln for ln in lines if not ln.startswith("@attribute lab")]
    features_only = [",".join(ln.split(",")[:5]) if ln[:1] not in "@" and ln else ln for ln in features_only]
    unlabelled = root / "unlabelled.arff"
    unlabelled.write_text("\n".join(features_only) + "\n")
    rows = _ok(call("predict", model, unlabelled)).stdout.strip().splitlines()
    assert rows == _ok(call("predict", model, test)).stdout.strip().splitlines()  # same predictions, no labels needed
    _assert_one_line_error(call("evaluate", model, unlabelled), "not declared")  # evaluate needs the labels
    _assert_one_line_error(call("predict", test, unlabelled), "is a file", "expected the directory")


def test_fit_trains_with_the_threads_asked_for_and_evaluate_says_how_the_threshold_was_set(fitted, call, tmp_path):
    root, _, test, _ = fitted
    arff = root / "tiny-train.arff"
    out = tmp_path / "m"
    summary = _ok(call("fit", arff, "-m", "bce", "--n-labels", "3", *TINY, "--threads", "2", "--threshold", "0.001",
                       "-q", "-o", out)).stdout
    assert json.loads((out / "config.json").read_text())["params"]["num_threads"] == 2
    assert "threshold 0.001 (fixed)" in summary  # not rounded to "0.00"
    footer = _ok(call("evaluate", out, test)).stdout
    assert "fixed at fit time" in footer and "tuned on validation" not in footer and "threshold 0.001," in footer


def test_report_never_overwrites_files_it_did_not_write(call, tmp_path, mulan_dir):
    db = tmp_path / "r.db"
    _ok(call("bench", db, "-d", "flags", "-m", "bce", "--seeds", "0", "-p", "max_epochs=1", "-p", "hidden=8",
             "--data-dir", mulan_dir))
    out = tmp_path / "rep"
    out.mkdir()
    (out / "index.md").write_text("# my notes\n")
    _assert_one_line_error(call("report", db, "--out", out), "index.md", "did not write")
    assert (out / "index.md").read_text() == "# my notes\n"
    (out / "index.md").unlink()
    _ok(call("report", db, "--out", out, "--tune-on-validation"))
    (out / "figures" / "mine.png").write_bytes(b"not the report's")
    drawn = {p.name for p in (out / "figures").glob("*.png")} - {"mine.png"}
    _ok(call("report", db, "--out", out))  # an earlier report there is replaced ...
    assert (out / "figures" / "mine.png").exists()  # ... but only what it wrote
    assert {p.name for p in (out / "figures").glob("*.png")} - {"mine.png"} == drawn
    assert not (out / "tuned.md").exists()  # the earlier report's, which this one does not write


@pytest.mark.parametrize("line, fragment", [("seeds = 0", "seeds = 0 in grid file"),
                                           ('datasets = "flags"', "is not a list"),
                                           ("params = 3", "is not a table"),
                                           ('methods = [{name = "bce", params = 5}]', "malformed")])
def test_grid_file_values_of_the_wrong_type_are_one_line_errors(call, tmp_path, line, fragment):
    spec = {"datasets": 'datasets = ["flags"]', "methods": 'methods = ["bce"]', "seeds": "seeds = [0]", "params": ""}
    spec[line.split(" ")[0]] = line
    grid = tmp_path / "g.toml"
    grid.write_text("\n".join(spec.values()) + "\n")
    _assert_one_line_error(call("bench", tmp_path / "g.db", "--grid", grid, "--dry-run"), fragment)


def _write_columns(path: Path, columns: dict, values: dict, order) -> Path:
    """An ARFF of the named ``columns`` (name -> ARFF type) in ``order``; ``values`` maps name -> column."""
    n = len(next(iter(values.values())))
    lines = ["@relation shuffled", *(f"@attribute {c} {columns[c]}" for c in order), "@data"]
    lines += [",".join(str(values[c][i]) for c in order) for i in range(n)]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_predict_and_evaluate_match_arff_columns_by_name_not_position(call, tmp_path):
    import numpy as np

    rng = np.random.default_rng(0)
    n = 90
    colour = rng.choice(["red", "green", "blue"], size=n)
    f = rng.normal(size=(n, 3))
    values = {"f0": [f"{v:.4f}" for v in f[:, 0]], "f1": [f"{v:.4f}" for v in f[:, 1]],
              "f2": [f"{v:.4f}" for v in f[:, 2]], "colour": list(colour),
              "a": list(((f[:, 0] > 0) | (colour == "red")).astype(int)), "b": list((f[:, 1] > 0).astype(int))}
    values["a"][0], values["b"][0], values["a"][1], values["b"][1] = 1, 1, 0, 0
    columns = {"f0": "numeric", "f1": "numeric", "f2": "numeric", "colour": "{red,green,blue}", "a": "{0,1}",
               "b": "{0,1}"}
    train = _write_columns(tmp_path / "train.arff", columns, values, ["f0", "f1", "f2", "colour", "a", "b"])
    model = tmp_path / "m"
    _ok(call("fit", train, "-m", "bce", "--n-labels", "2", *TINY, "-q", "-o", model))
    config = json.loads((model / "config.json").read_text())
    assert config["column_names"] == ["f0", "f1", "f2", "colour=red", "colour=green", "colour=blue"]
    assert config["feature_names"] == []  # not scikit-learn's DataFrame names: arrays predict without a warning

    same = _ok(call("evaluate", model, train, "--json")).stdout
    # the same rows with the attributes in another order and the nominal values declared in another order
    shuffled = _write_columns(tmp_path / "shuffled.arff", {**columns, "colour": "{blue,red,green}"}, values,
                              ["b", "colour", "f2", "a", "f0", "f1"])
    assert json.loads(_ok(call("evaluate", model, shuffled, "--json")).stdout)["metrics"] == \
        json.loads(same)["metrics"]
    proba = _ok(call("predict", model, train, "--proba")).stdout
    assert _ok(call("predict", model, shuffled, "--proba")).stdout == proba
    assert proba.splitlines()[0] == "a,b"  # the model's label order, whatever the file's

    # rows to predict: labels absent, or '?' (Weka's unknown), an extra attribute ignored with a warning
    unknown = _write_columns(tmp_path / "unknown.arff", {**columns, "note": "numeric"},
                             {**values, "a": ["?"] * n, "b": ["?"] * n, "note": [0] * n},
                             ["note", "f0", "f1", "f2", "colour", "a", "b"])
    result = _ok(call("predict", model, unknown, "--proba"))
    assert result.stdout == proba and "ignoring attribute(s) ['note']" in result.stderr
    no_labels = _write_columns(tmp_path / "nolabels.arff", columns, values, ["colour", "f2", "f1", "f0"])
    assert _ok(call("predict", model, no_labels, "--proba")).stdout == proba
    assert _ok(call("predict", model, no_labels, "--proba", "--n-labels", "0")).stdout == proba

    # what cannot be matched is a one-line error, never a silent misread
    _assert_one_line_error(call("evaluate", model, unknown), "missing value")
    _assert_one_line_error(call("evaluate", model, no_labels), "2 of the model's 2 label(s)", "'a'")
    lacks = _write_columns(tmp_path / "lacks.arff", columns, values, ["f0", "f1", "colour", "a", "b"])
    _assert_one_line_error(call("predict", model, lacks), "1 of the model's 6 features", "'f2'")
    purple = _write_columns(tmp_path / "purple.arff", {**columns, "colour": "{red,green,blue,purple}"},
                            {**values, "colour": ["purple", *colour[1:]]}, list(columns))
    _assert_one_line_error(call("predict", model, purple), "'colour' has value 'purple' (data row 1)")
    only_purple = _write_columns(tmp_path / "only-purple.arff", {**columns, "colour": "{purple}"},
                                 {**values, "colour": ["purple"] * n}, list(columns))  # no training value at all
    _assert_one_line_error(call("predict", model, only_purple), "'colour' has value 'purple' (data row 1)")

    from mlkd import load_model

    loaded = load_model(model)  # a re-fit on other data forgets the file's column names
    assert loaded.column_names_[:3] == ["f0", "f1", "f2"]
    loaded.set_params(max_epochs=1).fit(f[:, :2].astype(np.float32), np.array(values["a"])[:, None].astype(int))
    assert not hasattr(loaded, "column_names_")
    loaded.save(tmp_path / "refit")
    assert load_model(tmp_path / "refit").n_features_in_ == 2


# -- found by the CLI audit of researcher and compression users (auditor 6) ----------------------------------
def test_an_unknown_option_points_at_the_help_of_its_subcommand(fitted, call):
    root, _, _, _ = fitted
    cases = {("fit", root / "tiny-train.arff", "-m", "bce", "--epochs", "3"): ("--epochs 3", "mlkd fit --help"),
             ("datasets", "--zzz"): ("--zzz", "mlkd datasets --help"),
             ("report", "r.db", "--zzz"): ("--zzz", "mlkd report --help")}
    for args, (what, help_) in cases.items():
        result = call(*args)
        _assert_one_line_error(result, f"unrecognized arguments: {what}", f"see '{help_}'")
    _assert_one_line_error(call("--zzz"), "see 'mlkd --help'")  # no subcommand: the top-level help


def test_an_arff_without_label_information_names_the_command_line_options(call, tmp_path):
    unlabelled = tmp_path / "unlabelled.arff"
    unlabelled.write_text("@relation t\n@attribute a numeric\n@attribute b {0,1}\n@data\n1,0\n2,1\n")
    for command in ("fit", "distill"):
        result = call(command, unlabelled, *(["-m", "bce"] if command == "fit" else []), "--out", tmp_path / command)
        _assert_one_line_error(result, "no label information", "--label-file XML", "--n-labels N")
        assert "label_file=" not in result.stderr and "n_labels=" not in result.stderr, result.stderr


def test_distill_help_says_a_labelwise_teacher_must_be_fitted_larger_to_compress(call):
    text = " ".join(_ok(call("distill", "--help")).stdout.split())
    teacher = text[text.index("--teacher MODEL_DIR a saved"):]
    teacher = teacher[:teacher.index("--teacher-spec")]  # the option's own help
    assert "mlkd fit -m labelwise" in teacher and "compresses nothing" in teacher and "--param hidden=" in teacher


def test_resume_help_says_the_same_model_needs_the_same_threads(call):
    # a resume on another --threads goes on with a warning: its model is not the uninterrupted fit's
    for command in ("fit", "distill"):
        text = " ".join(_ok(call(command, "--help")).stdout.split())
        resume = text[text.index("--resume continue"):]
        assert "uninterrupted fit on the same --threads; another goes on with a warning" in resume, command


# -- found by the audit of a hostile user (audit 7) ------------------------------------------------------------
def _no_fit(monkeypatch):
    """Fail the test if a fit starts: a bad --out must be refused before any training."""
    from mlkd.estimator import MultiLabelClassifier

    def fit(self, *args, **kwargs):
        raise AssertionError("the fit ran before --out was checked")

    monkeypatch.setattr(MultiLabelClassifier, "fit", fit)


def test_a_model_out_no_model_could_go_to_is_refused_before_the_fit(fitted, call, tmp_path, monkeypatch):
    root, _, _, _ = fitted
    fit = ["fit", root / "tiny-train.arff", "--method", "bce", "--n-labels", "3", *TINY, "--quiet"]
    _no_fit(monkeypatch)
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    _assert_one_line_error(call(*fit, "--out", tmp_path / "dangling"), "dangling is a symlink to",
                           "nowhere, which does not exist")
    (tmp_path / "loop1").symlink_to(tmp_path / "loop2")
    (tmp_path / "loop2").symlink_to(tmp_path / "loop1")
    _assert_one_line_error(call(*fit, "--out", tmp_path / "loop1"), "loop1 is a symlink loop")
    (tmp_path / "a-file").write_text("")
    _assert_one_line_error(call(*fit, "--out", tmp_path / "a-file"), "a-file is a file")
    _assert_one_line_error(call(*fit, "--out", tmp_path / "a-file" / "m"), "cannot write model directory",
                           "a-file is a file")
    _assert_one_line_error(call(*fit, "--out", "/proc/mlkd-model"), "cannot create the model directory",
                           "/proc/mlkd-model")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file", "dangling", "loop1", "loop2"]


def test_a_failed_fit_leaves_no_model_directory_behind(fitted, call, tmp_path):
    root, _, _, _ = fitted
    out = tmp_path / "new" / "deeper"
    _assert_one_line_error(call("fit", tmp_path / "absent.arff", "--method", "bce", "--out", out), "absent.arff")
    assert list(tmp_path.iterdir()) == []  # the directories made for the model are gone again


def test_a_model_that_cannot_be_saved_after_the_fit_is_kept_elsewhere(fitted, call, tmp_path, monkeypatch):
    import mlkd.io
    from mlkd import load_model

    root, _, _, _ = fitted
    out = tmp_path / "m"
    real = mlkd.io.save_file

    def disk_full(tensors, filename, metadata=None):
        if Path(filename).parent == out:
            raise OSError(28, "No space left on device")
        return real(tensors, filename, metadata=metadata)

    monkeypatch.setattr(mlkd.io, "save_file", disk_full)
    result = call("fit", root / "tiny-train.arff", "--method", "bce", "--n-labels", "3", *TINY, "--quiet",
                  "--out", out)
    _assert_one_line_error(result, f"cannot save the fitted model to {out}", "No space left on device",
                           "it was saved to")
    rescue = Path(result.stderr.split("it was saved to ")[1].split(" instead")[0])
    try:
        assert load_model(rescue).n_labels_ == 3
    finally:
        import shutil

        shutil.rmtree(rescue)
    assert list(out.iterdir()) == []


def test_fit_never_overwrites_a_model_another_run_saved_meanwhile(fitted, call, tmp_path, monkeypatch):
    from mlkd import load_model
    from mlkd.estimator import MultiLabelClassifier

    root, model, _, _ = fitted
    out = tmp_path / "m"
    fit = ["fit", root / "tiny-train.arff", "--method", "bce", "--n-labels", "3", *TINY, "--quiet", "--out", out]
    real = MultiLabelClassifier.fit
    other = load_model(model)
    X_probe = [[0.1, -0.2, 0.3, 0.0, 1.0]]

    def another_run_saves_first(self, *args, **kwargs):
        real(self, *args, **kwargs)
        if not (out / "config.json").exists():
            other.save(out)  # the other terminal's fit finished first
        return self

    monkeypatch.setattr(MultiLabelClassifier, "fit", another_run_saves_first)
    result = _ok(call(*fit, "--param", "dropout=0.3"))
    assert f"saved to {out}-2 (--out {out} got another run's model meanwhile" in result.stdout
    def dropout(path):
        return json.loads((Path(path) / "config.json").read_text())["method_params"].get("dropout")

    assert load_model(out).predict_proba(X_probe).tolist() == other.predict_proba(X_probe).tolist()  # kept
    assert dropout(out) is None and dropout(f"{out}-2") == 0.3
    result = _ok(call(*fit, "--param", "dropout=0.1", "--force"))  # --force: replaces the model in --out
    assert result.stdout.rstrip().endswith(f"saved to {out}") and dropout(out) == 0.1


def test_a_fallback_folder_holding_a_users_files_is_passed_over(fitted, tmp_path):
    # --out got another run's model; DIR-2 holds the user's notes (never checked before the fit): DIR-3
    from mlkd import load_model
    from mlkd.cli import _ModelOut

    _, model, _, _ = fitted
    clf = load_model(model)
    out = tmp_path / "run"
    clf.save(out)
    (tmp_path / "run-2").mkdir()
    (tmp_path / "run-2" / "notes.txt").write_text("mine")
    where = _ModelOut(out).save(clf, force=False)
    assert where.startswith(f"{tmp_path / 'run-3'} (")
    assert sorted(p.name for p in (tmp_path / "run-2").iterdir()) == ["notes.txt"]


def test_a_checkpoint_dir_inside_out_does_not_send_the_model_elsewhere(fitted, call, tmp_path):
    from mlkd import load_model

    root, _, _, _ = fitted
    out = tmp_path / "m"
    result = _ok(call("fit", root / "tiny-train.arff", "--method", "bce", "--n-labels", "3", *TINY, "--quiet",
                      "--out", out, "--checkpoint-dir", out / "ck"))
    assert result.stdout.rstrip().endswith(f"saved to {out}"), result.stdout
    assert load_model(out).n_labels_ == 3 and (out / "ck").is_dir() and not Path(f"{out}-2").exists()


def test_a_torchrun_rank_above_0_leaves_the_new_out_to_rank_0(tmp_path, monkeypatch):
    # a rank > 0 never saves: it neither makes --out (on another node it would leave an empty folder) nor removes
    # it (rank 0 may be saving into it at that moment)
    from mlkd import cli

    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", "29500")
    from mlkd.distributed import is_primary

    assert not is_primary()
    with cli._model_out(tmp_path / "new" / "m"):
        pass
    assert not (tmp_path / "new").exists()
    (tmp_path / "shared").mkdir()  # the --out rank 0 made, on the same node
    with cli._model_out(tmp_path / "shared"):
        pass
    assert (tmp_path / "shared").is_dir()
    monkeypatch.setenv("RANK", "0")
    with cli._model_out(tmp_path / "new0" / "m"):
        pass
    assert not (tmp_path / "new0").exists()  # rank 0 (or a plain run) that did not save removes what it made


def test_a_torchrun_rank_above_0_ignores_what_its_node_holds_at_out(tmp_path, monkeypatch):
    # a rank > 0 never saves: another run's model in --out on its node (no shared file system) refused the fit
    # there, while rank 0, whose --out was free, waited for it
    from mlkd import cli

    held = tmp_path / "m"
    held.mkdir()
    (held / "model.safetensors").write_bytes(b"another run's")
    for key, value in {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "MASTER_ADDR": "127.0.0.1",
                       "MASTER_PORT": "29500"}.items():
        monkeypatch.setenv(key, value)
    cli._check_model_out(held, force=False)
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(ValueError, match="exists and is not empty"):
        cli._check_model_out(held, force=False)


def test_two_fits_into_one_out_at_once_lose_no_model(fitted, tmp_path):
    root, _, _, _ = fitted
    fit = ["fit", root / "tiny-train.arff", "--method", "bce", "--n-labels", "3", *TINY, "--quiet", "--out", "m"]
    runs = _run_many(*([*fit, "--param", f"dropout={d}"] for d in (0.1, 0.2)), cwd=tmp_path)
    saved = {}
    for dropout, run in zip((0.1, 0.2), runs, strict=True):
        if run.returncode == 0:  # else refused up front, because the other had saved already
            saved[dropout] = tmp_path / run.stdout.split("saved to ")[1].split()[0]
        else:
            _assert_one_line_error(run, "not empty")
    assert saved and len(set(saved.values())) == len(saved)
    for dropout, path in saved.items():
        assert json.loads((path / "config.json").read_text())["method_params"]["dropout"] == dropout


def test_a_killed_save_s_leftovers_do_not_block_the_next_fit(fitted, call, tmp_path):
    root, _, _, _ = fitted
    out = tmp_path / "m"
    out.mkdir()
    leftover = out / ".model.safetensors.fmffyp_x.tmp"
    leftover.write_bytes(b"x" * 10)
    os.utime(leftover, (1, 1))  # long ago
    fit = ["fit", root / "tiny-train.arff", "--method", "bce", "--n-labels", "3", *TINY, "--quiet", "--out", out]
    _ok(call(*fit))
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
    (out / "notes.txt").write_text("")
    _assert_one_line_error(call(*fit), "not empty (holds config.json, model.safetensors, notes.txt)", "--force")


def test_errors_name_the_data_dir_option_and_fit_help_says_threads_change_results(call, tmp_path):
    _assert_one_line_error(call("fit", "emotions", "--method", "bce", "--data-dir", tmp_path), "given with --data-dir")
    help_text = " ".join(_ok(call("fit", "--help")).stdout.split())
    assert "Results depend on it" in help_text and "every method" in help_text and "mpvae" in help_text


# -- found by the audit of the practitioner's path (audit-a) ------------------------------------------------
def test_predict_and_evaluate_a_model_fitted_on_a_1d_binary_y_give_one_column_per_label(call, tmp_path):
    import numpy as np

    from mlkd import MultiLabelClassifier
    from mlkd.data import read_arff

    test = _write_arff(tmp_path / "one-label.arff", n=40, L=1)
    ds = read_arff(test, n_labels=1)
    for classes in (["no", "yes"], [0, 1]):  # strings were written a character per cell, ints a traceback
        y = np.where(ds.Y[:, 0] == 1, classes[1], classes[0])
        clf = MultiLabelClassifier("bce", hidden=8, max_epochs=2).fit(ds.X, y, label_names=["lab0"])
        model = tmp_path / f"binary-{classes[0]}"
        clf.save(model)
        rows = _ok(call("predict", model, test)).stdout.splitlines()
        assert rows[0] == "lab0" and rows[1:] == [str(int(v == classes[1])) for v in clf.predict(ds.X)]
        proba = _ok(call("predict", model, test, "--proba")).stdout.splitlines()
        assert proba[1:] == [f"{p:.6g}" for p in clf.predict_proba(ds.X)[:, 1]]  # P(classes_[1]), one column
        metrics = json.loads(_ok(call("evaluate", model, test, "--json")).stdout)["metrics"]["@tuned"]
        assert metrics == pytest.approx(clf.evaluate(ds.X, ds.Y))
