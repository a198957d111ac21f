"""Safe files: models and checkpoints are safetensors + JSON, loading never unpickles, writes are atomic."""

from __future__ import annotations

import json
import pickle
import re
from pathlib import Path

import pytest
import torch

import mlkd.io
from mlkd import MultiLabelClassifier, load_model
from mlkd import checkpoint as ckpt
from mlkd.cli import main

from .helpers import linear_problem

SRC = Path(__file__).resolve().parents[1] / "src" / "mlkd"
X, Y = linear_problem(n=60, d=5, L=3)
TINY = dict(hidden=8, max_epochs=4, patience=4)


class _Plant:
    """Unpickling this creates ``marker``: had any loader unpickled it, the file would exist."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _payload(marker: Path) -> bytes:
    payload = pickle.dumps(_Plant(marker))
    proof = marker.with_name("proof")
    pickle.loads(pickle.dumps(_Plant(proof))).close()  # the payload is live: unpickling runs code
    assert proof.exists()
    proof.unlink()
    return payload


def _calls(source: str, name: str) -> list[str]:
    """The full text of every ``name(...)`` call in ``source`` (balanced parentheses)."""
    calls = []
    for match in re.finditer(rf"{re.escape(name)}\s*\(", source):
        depth, i = 0, match.end() - 1
        while i < len(source):
            depth += {"(": 1, ")": -1}.get(source[i], 0)
            if depth == 0:
                break
            i += 1
        calls.append(source[match.start() : i + 1])
    return calls


def test_the_package_never_unpickles():
    sources = {path: path.read_text(encoding="utf-8") for path in SRC.rglob("*.py")}
    assert len(sources) > 20
    for path, source in sources.items():
        for call in _calls(source, "torch.load"):
            assert re.search(r"weights_only\s*=\s*True", call), f"{path}: {call}"
        for call in _calls(source, "np.load") + _calls(source, "numpy.load"):
            assert not re.search(r"allow_pickle\s*=\s*True", call), f"{path}: {call}"
        assert not re.search(r"\b(pickle|cPickle|dill|cloudpickle|joblib|marshal|shelve)\.(load|loads|Unpickler)\b",
                             source), path
        assert not re.search(r"^\s*(import|from)\s+(pickle|dill|cloudpickle|joblib|shelve)\b", source, re.M), path
    assert not any(_calls(s, "torch.load") for s in sources.values())  # none today: nothing to audit


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("safe") / "model"
    MultiLabelClassifier("bce", **TINY).fit(X, Y).save(path)
    return path


def _copy(src: Path, dst: Path) -> Path:
    dst.mkdir()
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    return dst


@pytest.mark.parametrize("target", ["model.safetensors", "config.json"])
def test_a_pickle_planted_in_a_model_is_refused_and_never_runs(model_dir, tmp_path, target):
    model = _copy(model_dir, tmp_path / "m")
    marker = tmp_path / "executed"
    (model / target).write_bytes(_payload(marker))
    with pytest.raises(ValueError, match=f"{target} is not a valid .*: it is a pickle or torch.save file"):
        load_model(model)
    assert not marker.exists()


def test_a_torch_save_file_planted_as_weights_is_refused_through_the_cli(model_dir, tmp_path, capsys):
    model = _copy(model_dir, tmp_path / "m")
    marker = tmp_path / "executed"
    torch.save({"weights": torch.zeros(2), "trap": _Plant(marker)}, model / "model.safetensors")
    capsys.readouterr()
    assert main(["predict", str(model), "flags"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pickle or torch.save file" in err[0] and "never loads" in err[0], err
    assert not marker.exists()


@pytest.fixture(scope="module")
def interrupted_checkpoint(tmp_path_factory):
    """A checkpoint directory of a fit stopped after epoch 2 (stage0 in progress)."""
    path = tmp_path_factory.mktemp("ckpt") / "ckpt"
    save = ckpt.StageCheckpoint.save

    def stop_after_two(self, epoch, *args, **kwargs):
        save(self, epoch, *args, **kwargs)
        if epoch == 1:
            raise KeyboardInterrupt

    ckpt.StageCheckpoint.save = stop_after_two
    try:
        with pytest.raises(KeyboardInterrupt):
            MultiLabelClassifier("skdtea", checkpoint_dir=path, **TINY).fit(X, Y)
    finally:
        ckpt.StageCheckpoint.save = save
    return path


@pytest.mark.parametrize("target", ["tensors", "stage0.json", "checkpoint.json"])
def test_a_pickle_planted_in_a_checkpoint_is_refused_and_never_runs(interrupted_checkpoint, tmp_path, target):
    directory = _copy(interrupted_checkpoint, tmp_path / "ckpt")
    if target == "tensors":
        target = json.loads((directory / "stage0.json").read_text())["tensors"]
    marker = tmp_path / "executed"
    (directory / target).write_bytes(_payload(marker))
    with pytest.raises(ValueError, match=f"{re.escape(target)} is not a valid mlkd checkpoint file: it is a pickle"):
        MultiLabelClassifier("skdtea", checkpoint_dir=directory, resume=True, **TINY).fit(X, Y)
    assert not marker.exists()


def test_corrupted_checkpoint_tensors_are_a_clear_error(interrupted_checkpoint, tmp_path):
    directory = _copy(interrupted_checkpoint, tmp_path / "ckpt")
    tensors = directory / json.loads((directory / "stage0.json").read_text())["tensors"]
    tensors.write_bytes(tensors.read_bytes()[:-10])
    with pytest.raises(ValueError, match="do not match the SHA256 their JSON recorded; the checkpoint is corrupted"):
        MultiLabelClassifier("skdtea", checkpoint_dir=directory, resume=True, **TINY).fit(X, Y)


def test_an_interrupted_save_leaves_the_previous_model_intact(model_dir, tmp_path, monkeypatch):
    model = _copy(model_dir, tmp_path / "m")
    before = {f.name: f.read_bytes() for f in model.iterdir()}

    def disk_full(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"half a file")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(mlkd.io, "save_file", disk_full)
    with pytest.raises(OSError, match="No space left"):
        MultiLabelClassifier("bce", **{**TINY, "hidden": 16}).fit(X, Y).save(model, overwrite=True)
    assert {f.name: f.read_bytes() for f in model.iterdir()} == before  # no temporary file left either
    assert load_model(model).predict(X).shape == Y.shape


def test_a_save_interrupted_between_its_two_files_loads_the_new_model(model_dir, tmp_path, monkeypatch):
    model = _copy(model_dir, tmp_path / "m")
    replace, renames = mlkd.io.os.replace, []

    def interrupted_after_the_weights(src, dst):
        renames.append(dst)
        if len(renames) == 2:
            raise KeyboardInterrupt  # the config.json rename never happens
        return replace(src, dst)

    monkeypatch.setattr(mlkd.io.os, "replace", interrupted_after_the_weights)
    other = MultiLabelClassifier("bce", **TINY, threshold=0.2, random_state=1).fit(X, Y)  # same shapes
    with pytest.raises(KeyboardInterrupt):
        other.save(model, overwrite=True)
    monkeypatch.setattr(mlkd.io.os, "replace", replace)
    assert len(list(model.glob(".config.json.*.tmp"))) == 1  # the new config is kept, not deleted
    loaded = load_model(model)  # finishes the save: never new weights with the old threshold
    assert loaded.threshold_ == 0.2 and (loaded.predict_proba(X) == other.predict_proba(X)).all()
    assert sorted(f.name for f in model.iterdir()) == ["config.json", "model.safetensors"]
    (model / "config.json").write_bytes((model_dir / "config.json").read_bytes())  # the new config lost too
    with pytest.raises(ValueError, match="come from different saves .*save the model again"):
        load_model(model)  # new weights with the old threshold would load silently


def test_saving_a_model_twice_writes_the_same_bytes(model_dir, tmp_path):
    clf = load_model(model_dir)
    for name in ("a", "b"):
        clf.save(tmp_path / name)
    for f in ("model.safetensors", "config.json"):
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes()


def _no_fingerprint(record, directory):
    record["fingerprint"] = "?"


def _format_version_text(record, directory):
    record["format_version"] = "1"


def _tensors_unchecked_and_cut(record, directory):
    del record["tensors_sha256"]  # so that the safetensors reader itself meets the cut file
    tensors = directory / record["tensors"]
    tensors.write_bytes(tensors.read_bytes()[:20])


@pytest.mark.parametrize("corrupt", [_no_fingerprint, _format_version_text, _tensors_unchecked_and_cut])
def test_every_corrupted_checkpoint_says_which_files_to_remove(interrupted_checkpoint, tmp_path, corrupt):
    directory = _copy(interrupted_checkpoint, tmp_path / "ckpt")
    record = json.loads((directory / "stage0.json").read_text())
    corrupt(record, directory)
    (directory / "stage0.json").write_text(json.dumps(record))
    # two of them said only "the checkpoint is corrupted", not what to do about it
    with pytest.raises(ValueError, match=r"the checkpoint is corrupted \(remove the files mlkd wrote there to start "
                                         r"over: checkpoint.json, stageK.json"):
        MultiLabelClassifier("skdtea", checkpoint_dir=directory, resume=True, **TINY).fit(X, Y)


def test_a_checkpoint_from_a_newer_mlkd_is_refused(interrupted_checkpoint, tmp_path):
    directory = _copy(interrupted_checkpoint, tmp_path / "ckpt")
    record = json.loads((directory / "stage0.json").read_text())
    (directory / "stage0.json").write_text(json.dumps({**record, "format_version": 99}))
    with pytest.raises(ValueError, match="checkpoint format version 99, newer than this mlkd reads.*upgrade mlkd"):
        MultiLabelClassifier("skdtea", checkpoint_dir=directory, resume=True, **TINY).fit(X, Y)


@pytest.mark.parametrize("threshold", [5.0, -1.0, float("nan"), [0.5, 0.5, "a"], [0.5, 0.5], True])
def test_a_threshold_no_fit_could_make_is_refused_at_load(model_dir, tmp_path, threshold):
    bad = _copy(model_dir, tmp_path / "bad")
    config = json.loads((bad / "config.json").read_text())
    config["threshold"] = threshold  # every prediction would be 0 (or 1) without a word
    (bad / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="invalid threshold .*the model is corrupted"):
        load_model(bad)


def test_a_scaler_of_the_wrong_width_is_refused_at_load(tmp_path):
    clf = MultiLabelClassifier("bce", **TINY).fit(X, Y)
    clf.scaler_.mean = clf.scaler_.mean[:-1]  # saved with a consistent save id: only the shape check finds it
    clf.save(tmp_path / "m")
    with pytest.raises(ValueError, match=r"scaler.mean of shape \(4,\) for 5 features; the model is corrupted"):
        load_model(tmp_path / "m")


def test_a_missing_model_or_model_file_is_a_file_not_found_error(model_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_model(tmp_path / "nosuch")
    for name in ("config.json", "model.safetensors"):
        partial = _copy(model_dir, tmp_path / f"without-{name}")
        (partial / name).unlink()
        with pytest.raises(FileNotFoundError, match=f"{name} is missing") as caught:
            load_model(partial)
        assert isinstance(caught.value, ValueError)  # as before: every bad model path is a ValueError too
