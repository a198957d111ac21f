"""A model save interrupted at any moment (Ctrl-C, SIGTERM, SIGKILL) leaves the old model or the new one, never
neither; a corrupted weights file is refused; leftovers of a killed save neither block nor stay."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import signal
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import load_file, save_file

import mlkd.io
from mlkd import MultiLabelClassifier, load_model

from .helpers import linear_problem

X, Y = linear_problem(n=60, d=5, L=3)
TINY = dict(hidden=8, max_epochs=4, patience=4)


@pytest.fixture(scope="module")
def old_and_new():
    """Two fitted models of the same shapes with other weights and thresholds: the saved one and its successor."""
    old = MultiLabelClassifier("bce", **TINY).fit(X, Y)
    new = MultiLabelClassifier("bce", **TINY, threshold=0.2, random_state=1).fit(X, Y)
    return old, new


def _files(path: Path) -> dict[str, bytes]:
    return {f.name: f.read_bytes() for f in sorted(path.iterdir())}


def _same_model(a, b) -> bool:
    return bool(np.array_equal(a.predict_proba(X), b.predict_proba(X)) and np.all(a.threshold_ == b.threshold_))


@pytest.mark.parametrize("at", [1, 2])
def test_ctrl_c_at_either_rename_leaves_the_old_or_the_new_model(old_and_new, tmp_path, monkeypatch, at):
    old, new = old_and_new
    path = old.save(tmp_path / "m")
    before = _files(path)
    replace, calls = mlkd.io.os.replace, []

    def interrupted(src, dst):
        calls.append(dst)
        if len(calls) == at:
            raise KeyboardInterrupt
        return replace(src, dst)

    monkeypatch.setattr(mlkd.io.os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        new.save(path, overwrite=True)
    monkeypatch.undo()
    loaded = load_model(path)
    if at == 1:  # before any rename: the old model, as it was, and no temporary file
        assert _files(path) == before and _same_model(loaded, old)
    else:  # after the weights' rename: the new model, its save finished by the load
        assert _same_model(loaded, new) and sorted(_files(path)) == ["config.json", "model.safetensors"]


def test_a_real_ctrl_c_during_the_renames_waits_until_both_are_done(old_and_new, tmp_path, monkeypatch):
    old, new = old_and_new
    path = old.save(tmp_path / "m")
    replace = mlkd.io.os.replace

    def signalled(src, dst):
        os.kill(os.getpid(), signal.SIGINT)  # held back: delivered once the pair is renamed
        return replace(src, dst)

    monkeypatch.setattr(mlkd.io.os, "replace", signalled)
    with pytest.raises(KeyboardInterrupt):
        new.save(path, overwrite=True)
    monkeypatch.undo()
    assert _same_model(load_model(path), new)
    assert sorted(_files(path)) == ["config.json", "model.safetensors"]


_KILLED_SAVE = """
import os, signal, sys
import mlkd.io
from mlkd import load_model
clf = load_model(sys.argv[1])
clf.scaler_.mean = clf.scaler_.mean + 1.0  # other tensors: another save id
replace = os.replace
def killed(src, dst):
    replace(src, dst)
    os.kill(os.getpid(), getattr(signal, sys.argv[2]))  # SIGKILL cannot be held back: no config rename
mlkd.io.os.replace = killed
clf.save(sys.argv[1], overwrite=True)
"""


@pytest.mark.parametrize("kill", ["SIGKILL", "SIGTERM"])
def test_a_save_killed_between_its_renames_is_finished_by_the_next_load(old_and_new, tmp_path, kill):
    old, _ = old_and_new
    path = old.save(tmp_path / "m")
    run = subprocess.run([sys.executable, "-c", _KILLED_SAVE, str(path), kill], capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == -getattr(signal, kill), run.stderr
    # SIGTERM is held back until both renames are done; after a SIGKILL the next load finishes the save
    assert len(list(path.glob(".config.json.*.tmp"))) == (1 if kill == "SIGKILL" else 0)
    new_id = bytes(load_file(path / "model.safetensors")["save_id"].tolist()).hex()
    assert mlkd.io.saved_model_id(path) == new_id  # a teacher_dir's id is the new model's, as it loads
    loaded = load_model(path)
    assert np.allclose(loaded.scaler_.mean, old.scaler_.mean + 1.0)  # the new model
    assert sorted(_files(path)) == ["config.json", "model.safetensors"]  # the save is finished
    assert json.loads((path / "config.json").read_text())["save_id"] == bytes(
        load_file(path / "model.safetensors")["save_id"].tolist()).hex()


def test_a_killed_save_in_a_read_only_directory_loads_from_its_temporary_config(old_and_new, tmp_path, monkeypatch):
    old, new = old_and_new
    path = old.save(tmp_path / "m")
    replace, calls = mlkd.io.os.replace, []

    def killed(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise SystemExit(137)  # as a SIGKILL: nothing after the weights' rename runs
        return replace(src, dst)

    monkeypatch.setattr(mlkd.io.os, "replace", killed)
    with pytest.raises(SystemExit):
        new.save(path, overwrite=True)

    def read_only(src, dst):
        raise PermissionError(13, "Permission denied", str(src))

    monkeypatch.setattr(mlkd.io.os, "replace", read_only)
    assert _same_model(load_model(path), new)
    assert len(list(path.glob(".config.json.*.tmp"))) == 1  # left as it was


def test_a_load_between_the_renames_of_a_running_save_does_not_break_it(old_and_new, tmp_path, monkeypatch):
    old, new = old_and_new
    path = old.save(tmp_path / "m")
    replace, seen = mlkd.io.os.replace, []

    def with_a_reader(src, dst):
        replace(src, dst)
        if not seen:
            monkeypatch.setattr(mlkd.io.os, "replace", replace)
            seen.append(load_model(path))  # another process reads now: it finishes the pair itself
            monkeypatch.setattr(mlkd.io.os, "replace", with_a_reader)

    monkeypatch.setattr(mlkd.io.os, "replace", with_a_reader)
    new.save(path, overwrite=True)  # its own config rename finds the work done
    monkeypatch.undo()
    assert _same_model(seen[0], new) and _same_model(load_model(path), new)


# -- a corrupted weights file ---------------------------------------------------------------------------
def _tensor_offset(weights: Path, name: str) -> int:
    """Where tensor ``name``'s bytes start in a safetensors file."""
    raw = weights.read_bytes()
    (size,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + size])
    return 8 + size + header[name]["data_offsets"][0]


@pytest.mark.parametrize("tensor", ["model.net.0.weight", "scaler.mean", "save_id"])
def test_a_flipped_bit_in_the_weights_is_refused_as_corrupted(old_and_new, tmp_path, tensor):
    old, _ = old_and_new
    path = old.save(tmp_path / "m")
    weights = path / "model.safetensors"
    names = load_file(weights)
    assert tensor in names, sorted(names)
    raw = bytearray(weights.read_bytes())
    raw[_tensor_offset(weights, tensor) + 3] ^= 0x40
    weights.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="weights do not match their save id \\(the file is corrupted\\)") as caught:
        load_model(path)
    assert "interrupted" not in str(caught.value) and "\n" not in str(caught.value)


def test_a_model_saved_before_save_ids_still_loads(old_and_new, tmp_path):
    old, _ = old_and_new
    path = old.save(tmp_path / "m")
    tensors = load_file(path / "model.safetensors")
    del tensors["save_id"]
    save_file(tensors, path / "model.safetensors", metadata={"format": "mlkd-model"})
    config = json.loads((path / "config.json").read_text())
    del config["save_id"]
    (path / "config.json").write_text(json.dumps(config))
    assert _same_model(load_model(path), old)


def test_a_model_whose_save_id_also_hashed_its_config_still_loads(old_and_new, tmp_path):
    """For a short while (8d937cc) the id hashed the config too; such a model loads and is still checked."""
    old, _ = old_and_new
    path = old.save(tmp_path / "m")
    tensors = load_file(path / "model.safetensors")
    config = json.loads((path / "config.json").read_text())
    del config["save_id"]
    digest = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode())
    for name in sorted(k for k in tensors if k != "save_id"):
        digest.update(name.encode())
        digest.update(tensors[name].numpy().tobytes())
    config["save_id"] = digest.hexdigest()[:32]
    tensors["save_id"] = tensors["save_id"].new_tensor(list(bytes.fromhex(config["save_id"])))
    save_file(tensors, path / "model.safetensors", metadata={"format": "mlkd-model"})
    (path / "config.json").write_text(json.dumps(config, indent=2))
    assert _same_model(load_model(path), old)
    config["threshold"] = 0.3  # the config was part of the id: an edit is a mismatch
    (path / "config.json").write_text(json.dumps(config, indent=2))
    with pytest.raises(ValueError, match="do not match their save id"):
        load_model(path)


# -- leftovers of a killed save -----------------------------------------------------------------------------
def _leftover(path: Path, name: str, age: float = 3600.0) -> Path:
    path.mkdir(exist_ok=True)
    leftover = path / name
    leftover.write_bytes(b"x" * 100)
    stamp = leftover.stat().st_mtime - age
    os.utime(leftover, (stamp, stamp))
    return leftover


def test_leftovers_of_a_killed_save_neither_block_nor_stay(old_and_new, tmp_path):
    old, _ = old_and_new
    path = tmp_path / "m"
    stale = [_leftover(path, ".model.safetensors.fmffyp_x.tmp"), _leftover(path, ".config.json.abcd1234.tmp")]
    fresh = _leftover(path, ".model.safetensors.zzzzzzzz.tmp", age=0)  # perhaps a running save's: kept
    locked = _leftover(path, ".config.json.lockedxx.tmp")
    others = [_leftover(path, ".notes.tmp"), _leftover(path, ".config.json.tmp")]  # not the save's names
    assert mlkd.io.model_dir_entries(path) == [".config.json.tmp", ".notes.tmp"]
    for other in others:
        other.unlink()
    assert mlkd.io.model_dir_entries(path) == []
    with open(locked, "rb") as handle:
        fcntl.flock(handle, fcntl.LOCK_SH)  # a running save holds its files
        old.save(path)  # overwrite=False: the leftovers do not make the directory non-empty
    assert not any(p.exists() for p in stale)
    assert fresh.exists() and locked.exists()
    assert _same_model(load_model(path), old)


def test_a_non_empty_directory_is_refused_naming_its_entries(old_and_new, tmp_path):
    old, _ = old_and_new
    path = tmp_path / "m"
    _leftover(path, "notes.txt")
    _leftover(path, ".model.safetensors.fmffyp_x.tmp")
    with pytest.raises(mlkd.io.ModelDirectoryNotEmptyError, match=r"not empty \(holds notes.txt\)"):
        old.save(path)


def test_a_save_without_overwrite_never_replaces_a_model_saved_meanwhile(old_and_new, tmp_path, monkeypatch):
    old, new = old_and_new
    path = tmp_path / "m"
    path.mkdir()
    write_pair = mlkd.io._atomic_write_pair

    def another_save_first(writes, exclusive=False):
        monkeypatch.setattr(mlkd.io, "_atomic_write_pair", write_pair)
        old.save(path)  # finishes while this save writes its files
        write_pair(writes, exclusive)

    monkeypatch.setattr(mlkd.io, "_atomic_write_pair", another_save_first)
    with pytest.raises(mlkd.io.ModelDirectoryNotEmptyError, match="from another save meanwhile"):
        new.save(path)
    assert _same_model(load_model(path), old)
    assert sorted(_files(path)) == ["config.json", "model.safetensors"]


def test_saving_to_an_existing_file_says_it_is_a_file(old_and_new, tmp_path):
    old, _ = old_and_new
    (tmp_path / "t4.py").write_text("print()\n")
    with pytest.raises(ValueError, match=r"model path .*t4.py is a file; expected the path of a new or empty"):
        old.save(tmp_path / "t4.py")
