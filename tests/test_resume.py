"""Interrupted training: a fit killed mid-way and resumed from its checkpoint ends with the same model, bit for bit.

The first test kills a real ``python -m mlkd fit`` with SIGKILL; the others interrupt in-process (an exception
right after a checkpoint is written) to cover multi-stage methods, early stopping and refusals cheaply.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from mlkd import MultiLabelClassifier
from mlkd import checkpoint as ckpt
from mlkd.methods import build_method
from mlkd.methods.base import Method
from mlkd.trainer import TrainConfig, Trainer

from .helpers import linear_problem

REPO = Path(__file__).resolve().parents[1]


def _env() -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), *filter(None, [env.get("PYTHONPATH")])])
    return env


def _write_arff(path: Path, n=240, d=8, L=4, seed=0) -> Path:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    Y = (X[:, :L] + X[:, L : 2 * L] + 0.5 * rng.normal(size=(n, L)) > 0).astype(int)
    lines = ["@relation resume", *(f"@attribute f{j} numeric" for j in range(d)),
             *(f"@attribute y{k} {{0,1}}" for k in range(L)), "@data"]
    lines += [",".join([*(f"{v:.5f}" for v in x), *map(str, y)]) for x, y in zip(X, Y, strict=True)]
    path.write_text("\n".join(lines) + "\n")
    return path


def _epochs_done(directory: Path) -> int:
    try:
        return json.loads((directory / "stage0.json").read_text())["epochs_done"]
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        return 0


def _same_tensors(a: Path, b: Path) -> None:
    ta, tb = load_file(str(a)), load_file(str(b))
    assert ta.keys() == tb.keys()
    for key in ta:
        assert torch.equal(ta[key], tb[key]), key


def _summary(model_dir: Path) -> dict:
    config = json.loads((model_dir / "config.json").read_text())
    history = [{k: v for k, v in row.items() if k != "seconds"} for row in config["history"]]
    return {"threshold": config["threshold"], "best_epoch": config["best_epoch"], "history": history}


def test_sigkill_then_resume_gives_the_uninterrupted_model_bit_for_bit(tmp_path):
    from mlkd.cli import main

    data = _write_arff(tmp_path / "d.arff")
    fit = ["fit", str(data), "-m", "skdtea", "--n-labels", "4", "--param", "hidden=16", "--batch-size", "32",
           "--max-epochs", "60", "--patience", "30", "--quiet"]
    resumable = [sys.executable, "-m", "mlkd", *fit, "--checkpoint-dir", str(tmp_path / "ckpt"), "--checkpoint-every",
                 "3"]
    killed = subprocess.Popen([*resumable, "--out", str(tmp_path / "resumed")], env=_env(), stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while _epochs_done(tmp_path / "ckpt") < 9 and killed.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert killed.poll() is None, "the fit ended before it could be killed"
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    at_kill = _epochs_done(tmp_path / "ckpt")
    assert at_kill >= 9 and not (tmp_path / "resumed" / "model.safetensors").exists()

    resumed = subprocess.Popen([*resumable, "--out", str(tmp_path / "resumed"), "--resume"], env=_env(),
                               stderr=subprocess.PIPE, text=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the subprocesses (OMP_NUM_THREADS=1)
    try:
        assert main([*fit, "--out", str(tmp_path / "whole")]) == 0  # the uninterrupted fit, while that one starts
    finally:
        torch.set_num_threads(threads)
    _, stderr = resumed.communicate(timeout=300)
    assert resumed.returncode == 0 and "Traceback" not in stderr, stderr
    _same_tensors(tmp_path / "resumed" / "model.safetensors", tmp_path / "whole" / "model.safetensors")
    expected = _summary(tmp_path / "whole")
    assert _summary(tmp_path / "resumed") == expected
    assert len(expected["history"]) > at_kill  # the resumed process really trained the remaining epochs
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == [
        "checkpoint.json", "stage0.done.json", "stage0.done.safetensors"]


class _Interrupt(Exception):
    pass


@pytest.fixture
def interrupt_after(monkeypatch):
    """``interrupt_after(stage, epochs)``: the next fits raise right after that stage checkpoints that epoch."""

    def arm(stage: str, epochs: int):
        save = ckpt.StageCheckpoint.save

        def save_then_stop(self, epoch, *args, **kwargs):
            save(self, epoch, *args, **kwargs)
            if self.name == stage and epoch + 1 == epochs:
                raise _Interrupt

        monkeypatch.setattr(ckpt.StageCheckpoint, "save", save_then_stop)
        return lambda: monkeypatch.setattr(ckpt.StageCheckpoint, "save", save)

    return arm


X, Y = linear_problem(n=160, d=8, L=4, seed=3)


def _same_fit(a, b) -> None:
    sa, sb = a.model_.state_dict(), b.model_.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert np.array_equal(a.threshold_, b.threshold_) and a.best_epoch_ == b.best_epoch_
    strip = [{k: v for k, v in row.items() if k != "seconds"} for row in a.history_]
    assert strip == [{k: v for k, v in row.items() if k != "seconds"} for row in b.history_]
    assert np.array_equal(a.predict_proba(X), b.predict_proba(X))


def test_multi_stage_resume_keeps_finished_stages_and_matches_the_uninterrupted_fit(tmp_path, interrupt_after,
                                                                                  monkeypatch):
    params = dict(teacher_hidden=24, hidden=8, max_epochs=14, patience=14, batch_size=32)
    whole = MultiLabelClassifier("kdtea", **params).fit(X, Y)
    restore = interrupt_after("stage1", 6)  # the student, after the teacher finished
    with pytest.raises(_Interrupt):
        MultiLabelClassifier("kdtea", checkpoint_dir=tmp_path, checkpoint_every=3, **params).fit(X, Y)
    restore()
    assert {p.name for p in tmp_path.iterdir()} >= {"stage0.done.json", "stage0.done.safetensors", "stage1.json"}

    epochs = []  # which (method, epoch) the resumed fit trains
    monkeypatch.setattr(Method, "on_epoch_end", lambda self, ctx: epochs.append((self.name, ctx.epoch)))
    resumed = MultiLabelClassifier("kdtea", checkpoint_dir=tmp_path, checkpoint_every=3, resume=True, **params)
    resumed.fit(X, Y)
    assert epochs and {name for name, _ in epochs} == {"kdtea"} and epochs[0][1] == 6
    _same_fit(resumed, whole)
    teacher_a, teacher_b = resumed.stage_results_["teacher"], whole.stage_results_["teacher"]
    assert [r["total"] for r in teacher_a.history] == [r["total"] for r in teacher_b.history]


def test_checkpoint_seconds_spaces_the_writes_and_a_resume_reports_the_time_already_spent(tmp_path, monkeypatch):
    params = dict(hidden=8, max_epochs=10, patience=10, batch_size=32)
    written = []
    write = ckpt._write_tensors
    monkeypatch.setattr(ckpt, "_write_tensors", lambda path, tensors: written.append(path.name) or write(path, tensors))
    every_epoch = MultiLabelClassifier("bce", checkpoint_dir=tmp_path / "a", **params).fit(X, Y)
    assert len(written) == 11 and written[-1] == "stage0.done.safetensors"  # 10 epochs + the final weights
    written.clear()
    spaced = MultiLabelClassifier("bce", checkpoint_dir=tmp_path / "b", checkpoint_seconds=3600, **params).fit(X, Y)
    assert written == ["stage0.done.safetensors"]  # no epoch was an hour after the last write
    _same_fit(spaced, every_epoch)
    assert every_epoch.resumed_seconds_ == 0.0
    # a resume finds the finished fit: nothing is trained, and its time is the time recorded before
    again = MultiLabelClassifier("bce", checkpoint_dir=tmp_path / "b", resume=True, **params).fit(X, Y)
    assert again.resumed_seconds_ == pytest.approx(spaced.stage_results_["bce"].seconds) and again.resumed_seconds_ > 0
    _same_fit(again, spaced)


def test_early_stopping_state_survives_the_interruption(tmp_path, interrupt_after):
    Xe, Ye = linear_problem(n=200, seed=2)

    def fit(checkpoint=None):
        model = build_method("bce", Xe.shape[1], Ye.shape[1], {"hidden": 64, "dropout": 0.2}, seed=0)
        cfg = TrainConfig(max_epochs=200, patience=6, seed=0, lr=2e-2, batch_size=16)  # overfits, stops early
        return model, Trainer(cfg).fit(model, Xe[:100], Ye[:100], Xe[100:], Ye[100:], checkpoint=checkpoint)

    model, result = fit()
    assert result.stopped_early
    stop_at = result.best_epoch + 3  # mid-patience: best state, best score and counter all matter
    restore = interrupt_after("stage0", stop_at)
    with pytest.raises(_Interrupt):
        fit(ckpt.Checkpointer(tmp_path, every=1))
    restore()
    saved = json.loads((tmp_path / "stage0.json").read_text())
    assert saved["since_best"] == 2 and saved["has_best_state"]
    model2, result2 = fit(ckpt.Checkpointer(tmp_path, every=1, resume=True))
    assert (result2.best_epoch, result2.epochs_run, result2.stopped_early) == (
        result.best_epoch, result.epochs_run, result.stopped_early)
    assert result2.best_score == result.best_score
    weights, weights2 = model.state_dict(), model2.state_dict()
    assert all(torch.equal(weights[k], weights2[k]) for k in weights)


def test_a_kill_between_the_tensors_and_their_json_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    params = dict(hidden=8, max_epochs=12, patience=12, batch_size=32, checkpoint_dir=tmp_path, checkpoint_every=2)
    whole = MultiLabelClassifier("pskd", **{**params, "checkpoint_dir": None}).fit(X, Y)
    write_json, calls = ckpt._write_json, []

    def die_on_the_third_commit(path, obj):
        calls.append(path.name)
        if len(calls) == 4:  # checkpoint.json, then epochs 2 and 4; epoch 6's tensors are written, not committed
            raise _Interrupt
        write_json(path, obj)

    monkeypatch.setattr(ckpt, "_write_json", die_on_the_third_commit)
    with pytest.raises(_Interrupt):
        MultiLabelClassifier("pskd", **params).fit(X, Y)
    monkeypatch.setattr(ckpt, "_write_json", write_json)
    names = {p.name for p in tmp_path.iterdir()}
    assert {"stage0.e000004.safetensors", "stage0.e000006.safetensors"} <= names  # 6 is an orphan
    assert json.loads((tmp_path / "stage0.json").read_text())["epochs_done"] == 4
    _same_fit(MultiLabelClassifier("pskd", resume=True, **params).fit(X, Y), whole)


def test_leftovers_of_interrupted_writes_are_removed_and_a_users_own_temporary_files_are_kept(tmp_path):
    ours = [".checkpoint.json.k3x_9q.tmp", ".stage0.json.ab12cd.tmp", ".stage1.e000004.safetensors.zz9.tmp",
            ".stage0.done.safetensors.q1.tmp", ".probe.x7y.tmp"]
    theirs = [".draft.tmp", ".report.md.tmp", ".notes.2026.tmp", "keep.tmp"]
    for name in ours + theirs:
        (tmp_path / name).write_text("partial")
    ckpt.Checkpointer(tmp_path)  # --checkpoint-dir on a directory the user also keeps other files in
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(theirs)


def test_a_users_copy_of_a_checkpoint_file_beside_it_is_kept_when_the_fit_moves_on(tmp_path, interrupt_after):
    params = dict(hidden=8, max_epochs=5, patience=5, batch_size=32, checkpoint_dir=tmp_path)
    restore = interrupt_after("stage0", 2)
    with pytest.raises(_Interrupt):
        MultiLabelClassifier("bce", **params).fit(X, Y)
    restore()
    backup = tmp_path / "stage0.e000002.bak.safetensors"  # a user's backup, named like the file it copies
    backup.write_bytes((tmp_path / "stage0.e000002.safetensors").read_bytes())
    MultiLabelClassifier("bce", resume=True, **params).fit(X, Y)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "checkpoint.json", "stage0.done.json", "stage0.done.safetensors", backup.name]


@pytest.mark.parametrize("method, stage", [("bce", "stage0"), ("kdtea", "stage1")])
def test_a_resume_on_another_thread_count_warns_that_its_model_is_not_bit_identical(tmp_path, interrupt_after,
                                                                                   method, stage):
    # float rounding depends on the thread count: the resumed model would silently match neither whole fit
    params = dict(hidden=8, teacher_hidden=8, max_epochs=4, patience=4, batch_size=32, checkpoint_dir=tmp_path)
    params = {k: v for k, v in params.items() if k != "teacher_hidden" or method == "kdtea"}
    restore = interrupt_after(stage, 2)  # kdtea: the teacher (1 thread) finished, the student did not
    with pytest.raises(_Interrupt):
        MultiLabelClassifier(method, num_threads=1, **params).fit(X, Y)
    restore()
    with pytest.warns(UserWarning, match=r"written by a fit on 1 CPU thread\(s\) and this one runs on 2: .*"
                                         r"not bit-identical.*--threads 1"):
        MultiLabelClassifier(method, num_threads=2, resume=True, **params).fit(X, Y)
    with warnings.catch_warnings():  # a finished fit trains nothing: the same model on any thread count
        warnings.simplefilter("error")
        MultiLabelClassifier(method, num_threads=1, resume=True, **params).fit(X, Y)


@pytest.mark.parametrize("threads", [2, 1])
def test_a_checkpoint_already_resumed_on_another_thread_count_warns_on_every_count(tmp_path, interrupt_after, threads):
    # 2 epochs on 1 thread, 2 on 2 threads: the second run's record matches no uninterrupted fit, also resumed on the 2
    # threads it was written with (that resume was silent) or the first run's 1 (then advised to resume on 2)
    params = dict(hidden=8, max_epochs=6, patience=6, batch_size=32, checkpoint_dir=tmp_path)
    restore = interrupt_after("stage0", 2)
    with pytest.raises(_Interrupt):
        MultiLabelClassifier("bce", num_threads=1, **params).fit(X, Y)
    restore()
    restore = interrupt_after("stage0", 4)
    with pytest.warns(UserWarning, match="written by a fit on 1 CPU thread"), pytest.raises(_Interrupt):
        MultiLabelClassifier("bce", num_threads=2, resume=True, **params).fit(X, Y)
    restore()
    with pytest.warns(UserWarning, match=r"already resumed on another CPU thread count: .*not bit-identical to an "
                                         r"uninterrupted fit's on any count; expected an empty checkpoint directory"):
        MultiLabelClassifier("bce", num_threads=threads, resume=True, **params).fit(X, Y)


def test_a_checkpoint_directory_made_read_only_mid_fit_is_one_error_naming_the_checkpoint_file(tmp_path,
                                                                                            monkeypatch):
    mkstemp = ckpt.tempfile.mkstemp

    def read_only_for_stage_files(*args, prefix="", **kwargs):  # the directory probe and manifest were written
        if prefix.startswith(".stage"):
            raise PermissionError(13, "Permission denied", str(tmp_path / f"{prefix}x1.tmp"))
        return mkstemp(*args, prefix=prefix, **kwargs)

    monkeypatch.setattr(ckpt.tempfile, "mkstemp", read_only_for_stage_files)
    with pytest.raises(ValueError, match=r"^cannot write checkpoint file .*stage0\.e000001\.safetensors: Permission "
                                         r"denied; expected a writable checkpoint directory$"):
        MultiLabelClassifier("bce", hidden=8, max_epochs=3, checkpoint_dir=tmp_path).fit(X, Y)


def test_resume_on_an_empty_directory_starts_a_fresh_fit_and_a_finished_fit_is_not_retrained(tmp_path, monkeypatch):
    params = dict(hidden=8, max_epochs=5, batch_size=32, checkpoint_dir=tmp_path / "new", resume=True)
    first = MultiLabelClassifier("skdtea", **params).fit(X, Y)
    steps = []
    monkeypatch.setattr(Method, "on_epoch_end", lambda self, ctx: steps.append(ctx.epoch))
    again = MultiLabelClassifier("skdtea", **params).fit(X, Y)
    assert steps == []
    _same_fit(again, first)


def test_checkpoint_files_are_safetensors_and_json_only(tmp_path, interrupt_after):
    interrupt_after("stage0", 4)
    with pytest.raises(_Interrupt):
        MultiLabelClassifier("skdtea", hidden=8, max_epochs=10, checkpoint_dir=tmp_path, checkpoint_every=2).fit(X, Y)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["checkpoint.json", "stage0.e000004.safetensors", "stage0.json"]
    record = json.loads((tmp_path / "stage0.json").read_text())
    assert record["format"] == "mlkd-checkpoint" and record["epochs_done"] == 4
    tensors = load_file(str(tmp_path / record["tensors"]))
    rng = {k: v for k, v in tensors.items() if k.startswith("rng.")}
    assert set(rng) == {"rng.torch_cpu", "rng.generator0", "rng.generator1"}
    assert all(v.dtype == torch.uint8 for v in rng.values())
    assert any(k.startswith("optim.") and k.endswith(".exp_avg") for k in tensors)
    assert any(k.startswith("best.") for k in tensors) and any(k.startswith("model.") for k in tensors)
    manifest = json.loads((tmp_path / "checkpoint.json").read_text())["fingerprint"]
    assert manifest["data_shape"][0] == [160, 8] and len(manifest["data_hash"]) == 32


def test_a_parameter_typed_at_its_default_resumes_and_another_value_is_refused_with_both_values(
        tmp_path, interrupt_after):
    params = dict(hidden=8, max_epochs=10, patience=10, batch_size=32, checkpoint_every=2)
    whole = MultiLabelClassifier("skdtea", **params).fit(X, Y)
    restore = interrupt_after("stage0", 4)
    with pytest.raises(_Interrupt):
        MultiLabelClassifier("skdtea", checkpoint_dir=tmp_path, **params).fit(X, Y)  # alpha left at its default
    restore()
    with pytest.raises(ValueError, match=r"its configuration differs \(alpha=0\.5→0\.3\)"):
        MultiLabelClassifier("skdtea", checkpoint_dir=tmp_path, resume=True, alpha=0.3, **params).fit(X, Y)
    resumed = MultiLabelClassifier("skdtea", checkpoint_dir=tmp_path, resume=True, alpha=0.5, **params).fit(X, Y)
    _same_fit(resumed, whole)


def _typed_fingerprint(manifest: Path, clf, untyped=()) -> None:
    """Rewrite ``manifest`` as mlkd wrote it before fingerprints held resolved values: the typed parameters
    (less ``untyped``: parameters that did not exist yet)."""
    from mlkd.trainer import REFERENCE_KERNELS

    skip = {"verbose", "num_threads", "checkpoint_dir", "checkpoint_every", "checkpoint_seconds", "resume", *untyped}
    config = {"estimator": type(clf).__name__, "method": clf.method,
              **{k: v for k, v in clf.get_params(deep=False).items() if k not in skip}}
    config = {k: v for k, v in config.items() if not (k in REFERENCE_KERNELS and v == REFERENCE_KERNELS[k])}
    record = json.loads(manifest.read_text())
    typed = ckpt.fingerprint(config)
    record["fingerprint"].update(config=typed["config"], config_hash=typed["config_hash"])
    manifest.write_text(json.dumps(record))


def test_a_checkpoint_of_the_earlier_typed_fingerprint_resumes_when_the_resolved_configs_agree(
        tmp_path, interrupt_after):
    params = dict(hidden=8, max_epochs=10, patience=10, batch_size=32, checkpoint_every=2)
    whole = MultiLabelClassifier("skdtea", **params).fit(X, Y)
    restore = interrupt_after("stage0", 4)
    first = MultiLabelClassifier("skdtea", checkpoint_dir=tmp_path, **params)
    with pytest.raises(_Interrupt):
        first.fit(X, Y)
    restore()
    manifest = tmp_path / "checkpoint.json"
    _typed_fingerprint(manifest, first)
    assert "alpha" not in json.loads(manifest.read_text())["fingerprint"]["config"]  # typed: alpha was omitted
    with pytest.raises(ValueError, match=r"its configuration differs \(alpha=0\.5→0\.3\)"):
        MultiLabelClassifier("skdtea", checkpoint_dir=tmp_path, resume=True, alpha=0.3, **params).fit(X, Y)
    resumed = MultiLabelClassifier("skdtea", checkpoint_dir=tmp_path, resume=True, alpha=0.5, **params).fit(X, Y)
    _same_fit(resumed, whole)

    record = json.loads(manifest.read_text())  # an earlier config this mlkd cannot resolve: refused, no crash
    record["fingerprint"]["config"]["bogus"] = 1
    record["fingerprint"]["config_hash"] = "0" * 16
    manifest.write_text(json.dumps(record))
    with pytest.raises(ValueError, match=r"written by an earlier mlkd .*'bogus'.*; expected an empty checkpoint"):
        MultiLabelClassifier("skdtea", checkpoint_dir=tmp_path, resume=True, **params).fit(X, Y)


def test_a_typed_checkpoint_from_before_a_parameter_existed_resumes_with_the_setting_it_was_written_with(
        tmp_path, interrupt_after):
    # CS-KD's KD term carried T² until t2_scaling existed: its interrupted fits continue with t2_scaling=True
    params = dict(hidden=8, max_epochs=10, patience=10, batch_size=32, checkpoint_every=2)
    whole = MultiLabelClassifier("cskd", t2_scaling=True, **params).fit(X, Y)
    restore = interrupt_after("stage0", 4)
    first = MultiLabelClassifier("cskd", t2_scaling=True, checkpoint_dir=tmp_path, **params)
    with pytest.raises(_Interrupt):
        first.fit(X, Y)
    restore()
    _typed_fingerprint(tmp_path / "checkpoint.json", first, untyped={"t2_scaling"})
    with pytest.raises(ValueError, match=r"its configuration differs \(method_config\.t2_scaling=True→False\)"):
        MultiLabelClassifier("cskd", checkpoint_dir=tmp_path, resume=True, **params).fit(X, Y)
    resumed = MultiLabelClassifier("cskd", t2_scaling=True, checkpoint_dir=tmp_path, resume=True, **params).fit(X, Y)
    _same_fit(resumed, whole)


def test_cskd_pair_batches_resume_bit_for_bit(tmp_path, interrupt_after):
    # the partner draws come from the method's generator, which the checkpoint holds: the same partners after
    params = dict(hidden=8, max_epochs=8, patience=8, batch_size=32, checkpoint_every=1, partners="train")
    whole = MultiLabelClassifier("cskd", **params).fit(X, Y)
    restore = interrupt_after("stage0", 3)
    with pytest.raises(_Interrupt):
        MultiLabelClassifier("cskd", checkpoint_dir=tmp_path, **params).fit(X, Y)
    restore()
    resumed = MultiLabelClassifier("cskd", checkpoint_dir=tmp_path, resume=True, **params).fit(X, Y)
    _same_fit(resumed, whole)


def test_a_distilled_student_does_not_resume_on_another_teacher_fitted_into_the_same_folder(tmp_path,
                                                                                             interrupt_after):
    teacher = tmp_path / "teacher"
    MultiLabelClassifier("labelwise", hidden=16, max_epochs=2, random_state=0).fit(X, Y).save(teacher)
    params = dict(hidden=8, max_epochs=6, patience=6, batch_size=32, teacher_dir=str(teacher))
    restore = interrupt_after("stage0", 2)
    with pytest.raises(_Interrupt):
        MultiLabelClassifier("distill", checkpoint_dir=tmp_path / "ckpt", **params).fit(X, Y)
    restore()
    MultiLabelClassifier("labelwise", hidden=16, max_epochs=2, random_state=1).fit(X, Y).save(teacher, overwrite=True)
    with pytest.raises(ValueError, match=r"its configuration differs \(saved_models\.teacher_dir="):
        MultiLabelClassifier("distill", checkpoint_dir=tmp_path / "ckpt", resume=True, **params).fit(X, Y)


def test_cli_resume_accepts_a_parameter_typed_at_its_default(tmp_path):
    from mlkd.cli import main

    data = _write_arff(tmp_path / "d.arff", n=120)
    fit = ["fit", str(data), "-m", "skdtea", "--n-labels", "4", "--param", "hidden=8", "--max-epochs", "3", "--quiet",
           "--checkpoint-dir", str(tmp_path / "ckpt")]
    assert main([*fit, "--out", str(tmp_path / "a")]) == 0
    assert main([*fit, "--out", str(tmp_path / "b"), "--param", "alpha=0.5", "--resume"]) == 0
    _same_tensors(tmp_path / "a" / "model.safetensors", tmp_path / "b" / "model.safetensors")


def test_cli_distill_killed_in_its_student_resumes_to_the_uninterrupted_student(tmp_path, interrupt_after):
    # mlkd distill trains a teacher, then the student: a kill during the student must not cost the teacher
    from mlkd.cli import main

    data = _write_arff(tmp_path / "d.arff", n=120)
    distill = ["distill", str(data), "--n-labels", "4", "--teacher-spec", "hidden=24", "max_epochs=4",
               "--student-spec", "hidden=8", "max_epochs=8", "patience=8", "batch_size=32", "--quiet"]
    resumable = [*distill, "--out", str(tmp_path / "resumed"), "--checkpoint-dir", str(tmp_path / "ckpt"),
                 "--checkpoint-every", "2"]
    assert main([*distill, "--out", str(tmp_path / "whole")]) == 0
    restore = interrupt_after("stage1", 4)  # the student, after the teacher finished
    with pytest.raises(_Interrupt):
        main(resumable)
    restore()
    assert {"stage0.done.json", "stage1.json"} <= {p.name for p in (tmp_path / "ckpt").iterdir()}
    assert main([*resumable, "--resume"]) == 0
    _same_tensors(tmp_path / "resumed" / "model.safetensors", tmp_path / "whole" / "model.safetensors")
    assert _summary(tmp_path / "resumed") == _summary(tmp_path / "whole")
    assert main([*distill, "--out", str(tmp_path / "o"), "--resume"]) == 2  # needs --checkpoint-dir


# -- a fit is identified by what it is, not by how it was spelled ------------------------------------------------
def _rewrite_fingerprints(directory: Path, manifest=None, stage=None) -> None:
    """Rewrite the fingerprints in ``directory``'s checkpoint files: ``manifest(config)`` for checkpoint.json's,
    ``stage(config)`` for each stage record's (each edits the config in place), then rehash as mlkd does."""
    for path in directory.glob("*.json"):
        edit = manifest if path.name == "checkpoint.json" else stage
        if edit is None:
            continue
        record = json.loads(path.read_text())
        edit(record["fingerprint"]["config"])
        rehashed = ckpt.fingerprint(record["fingerprint"]["config"])
        record["fingerprint"].update(config=rehashed["config"], config_hash=rehashed["config_hash"])
        path.write_text(json.dumps(record))


def _as_written_before(directory: Path, estimator: str, device: str, model_dirs: dict) -> None:
    """Rewrite ``directory``'s checkpoint as mlkd wrote it before fingerprints held identities (until 2026-12-04):
    the estimator's class name, the device and any teacher_dir / model_dir as typed, in the manifest and in each
    stage's record (whose "device" was already the resolved one)."""

    def manifest(config):
        config.update(estimator=estimator, device=device, **model_dirs)

    def stage(config):
        config["train"]["device"] = device
        config["method_config"].update({k: v for k, v in model_dirs.items() if k in config["method_config"]})

    _rewrite_fingerprints(directory, manifest, stage)


@pytest.fixture
def teacher_folder(tmp_path, monkeypatch):
    """A saved labelwise model at ./models/teacher, a symlink ./link to it; the working directory is tmp_path."""
    monkeypatch.chdir(tmp_path)
    teacher = tmp_path / "models" / "teacher"
    MultiLabelClassifier("labelwise", hidden=16, max_epochs=2, random_state=0).fit(X, Y).save(teacher)
    (tmp_path / "link").symlink_to(teacher, target_is_directory=True)
    return teacher


def _spellings(teacher: Path) -> list:
    return ["models/teacher", "./models/teacher", "models/teacher/", f"{teacher}/", "link", "link/",
            "models/../models/teacher", Path("models/teacher"), teacher]


@pytest.mark.parametrize("method, param", [("distill", "teacher_dir"), ("pretrained", "model_dir")])
def test_the_same_saved_model_spelled_as_another_path_resumes_bit_for_bit(tmp_path, interrupt_after, teacher_folder,
                                                                         method, param):
    params = dict(max_epochs=6, patience=6, batch_size=32, **({"hidden": 8} if method == "distill" else {}))
    whole = MultiLabelClassifier(method, **{param: str(teacher_folder)}, **params).fit(X, Y)
    restore = interrupt_after("stage0", 2)
    with pytest.raises(_Interrupt):
        MultiLabelClassifier(method, checkpoint_dir=tmp_path / "ckpt", **{param: str(teacher_folder)},
                             **params).fit(X, Y)
    restore()
    for i, spelled in enumerate(_spellings(teacher_folder)):
        copy = tmp_path / f"ckpt{i}"
        shutil.copytree(tmp_path / "ckpt", copy)
        resumed = MultiLabelClassifier(method, checkpoint_dir=copy, resume=True, **{param: spelled}, **params)
        _same_fit(resumed.fit(X, Y), whole)
    # another model fitted into the folder is another fit, however the folder is spelled
    MultiLabelClassifier("labelwise", hidden=16, max_epochs=2, random_state=1).fit(X, Y).save(teacher_folder,
                                                                                            overwrite=True)
    with pytest.raises(ValueError, match=rf"^checkpoint .* its configuration differs \(saved_models\.{param}="):
        MultiLabelClassifier(method, checkpoint_dir=tmp_path / "ckpt", resume=True, **{param: "link/"}, **params).fit(
            X, Y)


def test_a_saved_model_in_another_folder_is_another_fit(tmp_path, interrupt_after, teacher_folder):
    # the same model copied elsewhere: refused, as benchmark cells key a saved model by its folder and its contents
    shutil.copytree(teacher_folder, tmp_path / "copy")
    params = dict(hidden=8, max_epochs=6, patience=6, batch_size=32)
    restore = interrupt_after("stage0", 2)
    with pytest.raises(_Interrupt):
        MultiLabelClassifier("distill", checkpoint_dir=tmp_path / "ckpt", teacher_dir="models/teacher", **params).fit(
            X, Y)
    restore()
    with pytest.raises(ValueError, match=rf"its configuration differs \(teacher_dir='{teacher_folder}'→"
                                         rf"'{tmp_path / 'copy'}'\); expected the interrupted fit's"):
        MultiLabelClassifier("distill", checkpoint_dir=tmp_path / "ckpt", resume=True, teacher_dir="copy",
                             **params).fit(X, Y)


def test_cli_distill_resumes_with_the_teacher_folder_spelled_another_way(tmp_path, interrupt_after, teacher_folder):
    from mlkd.cli import main

    data = _write_arff(tmp_path / "d.arff", n=120)
    distill = ["distill", str(data), "--n-labels", "4", "--student-spec", "hidden=8", "max_epochs=6", "patience=6",
               "batch_size=32", "--quiet"]
    assert main([*distill, "--teacher", str(teacher_folder), "--out", "whole"]) == 0
    resumable = [*distill, "--out", "resumed", "--checkpoint-dir", "ckpt"]
    restore = interrupt_after("stage0", 2)
    with pytest.raises(_Interrupt):
        main([*resumable, "--teacher", "./models/teacher/"])
    restore()
    assert main([*resumable, "--teacher", str(tmp_path / "link"), "--resume"]) == 0
    _same_tensors(tmp_path / "resumed" / "model.safetensors", tmp_path / "whole" / "model.safetensors")
    assert _summary(tmp_path / "resumed") == _summary(tmp_path / "whole")


def _bound_classes() -> list:
    import mlkd.estimator as est

    return sorted((cls for cls in vars(est).values() if isinstance(cls, type) and getattr(cls, "bound_method", None)),
                  key=lambda cls: cls.__name__)


def test_a_method_bound_class_and_multilabelclassifier_of_its_method_are_the_same_fit(tmp_path, interrupt_after):
    from mlkd import SKDTEAClassifier

    params = dict(hidden=8, max_epochs=8, patience=8, batch_size=32, checkpoint_every=2)
    whole = MultiLabelClassifier("skdtea", **params).fit(X, Y)
    for i, (first, then) in enumerate([(SKDTEAClassifier, lambda **p: MultiLabelClassifier("skdtea", **p)),
                                       (lambda **p: MultiLabelClassifier("skdtea", **p), SKDTEAClassifier)]):
        restore = interrupt_after("stage0", 4)
        with pytest.raises(_Interrupt):
            first(checkpoint_dir=tmp_path / str(i), **params).fit(X, Y)
        restore()
        _same_fit(then(checkpoint_dir=tmp_path / str(i), resume=True, **params).fit(X, Y), whole)


@pytest.mark.parametrize("cls", _bound_classes(), ids=lambda cls: cls.__name__)
def test_every_method_bound_class_resumes_as_multilabelclassifier_of_its_method(tmp_path, monkeypatch, cls):
    params = dict(max_epochs=1, batch_size=32, checkpoint_dir=tmp_path)
    cls(**params).fit(X, Y)
    epochs = []
    monkeypatch.setattr(Method, "on_epoch_end", lambda self, ctx: epochs.append(ctx.epoch))
    MultiLabelClassifier(cls.bound_method, resume=True, **params).fit(X, Y)
    assert epochs == []  # the finished fit was found, not refused or retrained


class _OwnThreshold(MultiLabelClassifier):
    """A user's subclass: it may change what a fit does, so its checkpoints stay its own."""


def test_a_users_subclass_does_not_resume_a_multilabelclassifier_checkpoint(tmp_path):
    params = dict(max_epochs=1, batch_size=32, checkpoint_dir=tmp_path)
    MultiLabelClassifier("bce", **params).fit(X, Y)
    with pytest.raises(ValueError, match=r"its configuration differs \(estimator='MultiLabelClassifier'→"
                                         r"'_OwnThreshold'\)"):
        _OwnThreshold("bce", resume=True, **params).fit(X, Y)


@pytest.mark.skipif(torch.cuda.is_available(), reason="'auto' is 'cpu' only on a machine without CUDA")
def test_device_auto_and_cpu_are_the_same_fit_on_a_machine_without_cuda(tmp_path, interrupt_after):
    params = dict(hidden=8, teacher_hidden=8, max_epochs=6, patience=6, batch_size=32, checkpoint_every=2)
    whole = MultiLabelClassifier("kdtea", **params).fit(X, Y)
    for i, (first, then) in enumerate([("auto", "cpu"), ("cpu", "auto"), (torch.device("cpu"), "auto")]):
        directory = tmp_path / str(i)
        restore = interrupt_after("stage1", 2)  # the teacher finished, the student did not
        with pytest.raises(_Interrupt):
            MultiLabelClassifier("kdtea", device=first, checkpoint_dir=directory, **params).fit(X, Y)
        restore()
        _same_fit(MultiLabelClassifier("kdtea", device=then, checkpoint_dir=directory, resume=True, **params).fit(X, Y),
                  whole)


def _bce_fit_interrupted(params, interrupt_after):
    """A BCE fit with ``params`` (a checkpoint_dir among them) killed after its second epoch."""
    restore = interrupt_after("stage0", 2)
    with pytest.raises(_Interrupt):
        MultiLabelClassifier("bce", **params).fit(X, Y)
    restore()


@pytest.mark.skipif(torch.cuda.is_available(), reason="simulates a checkpoint of a CUDA fit on a machine without one")
def test_a_checkpoint_of_a_fit_on_another_device_is_refused_in_one_line(tmp_path, interrupt_after):
    params = dict(hidden=8, max_epochs=6, patience=6, batch_size=32, checkpoint_dir=tmp_path)
    _bce_fit_interrupted(params, interrupt_after)

    def on_cuda(config):  # as a fit with device="auto" (or "cuda") on a machine with a GPU writes it
        config["device"] = "cuda"
        config.get("train", {}).update(device="cuda")

    _rewrite_fingerprints(tmp_path, on_cuda, on_cuda)
    for device in ("auto", "cpu"):
        with pytest.raises(ValueError, match=r"^checkpoint \S+checkpoint\.json was written by a different fit: its "
                                             r"configuration differs \(device='cuda'→'cpu'\); expected [^\n]+$"):
            MultiLabelClassifier("bce", device=device, resume=True, **params).fit(X, Y)


@pytest.mark.parametrize("first, method, stage, extra", [
    ("DistillClassifier", "distill", "stage0", {"teacher_dir": "./models/teacher/"}),
    ("KDTEAClassifier", "kdtea", "stage1", {"teacher_hidden": 8}),  # the teacher's finished record too
])
def test_a_checkpoint_whose_fingerprints_held_spellings_resumes_bit_for_bit(tmp_path, interrupt_after, teacher_folder,
                                                                            first, method, stage, extra):
    import mlkd

    params = dict(hidden=8, max_epochs=6, patience=6, batch_size=32, **extra)
    whole = MultiLabelClassifier(method, **params).fit(X, Y)
    restore = interrupt_after(stage, 2)
    with pytest.raises(_Interrupt):
        getattr(mlkd, first)(checkpoint_dir=tmp_path / "ckpt", device="auto", **params).fit(X, Y)
    restore()
    _as_written_before(tmp_path / "ckpt", first, "auto", {k: v for k, v in extra.items() if k == "teacher_dir"})
    manifest = json.loads((tmp_path / "ckpt" / "checkpoint.json").read_text())["fingerprint"]["config"]
    assert (manifest["estimator"], manifest["device"]) == (first, "auto")
    shutil.copytree(tmp_path / "ckpt", tmp_path / "again")
    # as it was spelled then (what that mlkd resumed), and spelled otherwise
    resumed = getattr(mlkd, first)(checkpoint_dir=tmp_path / "ckpt", device="auto", resume=True, **params)
    _same_fit(resumed.fit(X, Y), whole)
    other = {**params, **({"teacher_dir": "link"} if "teacher_dir" in extra else {})}
    _same_fit(MultiLabelClassifier(method, checkpoint_dir=tmp_path / "again", device="cpu", resume=True,
                                   **other).fit(X, Y), whole)


def test_a_checkpoint_whose_fingerprints_held_spellings_is_refused_for_another_teacher(tmp_path, interrupt_after,
                                                                                      teacher_folder):
    params = dict(hidden=8, max_epochs=6, patience=6, batch_size=32, teacher_dir="models/teacher")
    restore = interrupt_after("stage0", 2)
    with pytest.raises(_Interrupt):
        MultiLabelClassifier("distill", checkpoint_dir=tmp_path / "ckpt", **params).fit(X, Y)
    restore()
    _as_written_before(tmp_path / "ckpt", "MultiLabelClassifier", "auto", {"teacher_dir": "models/teacher"})
    MultiLabelClassifier("labelwise", hidden=16, max_epochs=2, random_state=1).fit(X, Y).save(teacher_folder,
                                                                                            overwrite=True)
    with pytest.raises(ValueError, match=r"^checkpoint \S+checkpoint\.json was written by a different fit: its "
                                         r"configuration differs \(saved_models\.teacher_dir='\w+'→'\w+'\); "):
        MultiLabelClassifier("distill", checkpoint_dir=tmp_path / "ckpt", resume=True, **params).fit(X, Y)


@pytest.mark.skipif(torch.cuda.is_available(), reason="simulates a checkpoint of a CUDA fit on a machine without one")
def test_a_checkpoint_whose_fingerprints_held_spellings_is_refused_on_another_device(tmp_path, interrupt_after):
    # device="auto" on a machine with a GPU: the manifest said "auto", the stage the device it picked ("cuda")
    params = dict(hidden=8, max_epochs=6, patience=6, batch_size=32, checkpoint_dir=tmp_path)
    _bce_fit_interrupted(params, interrupt_after)

    def stage(config):
        config["train"]["device"], config["device"] = "auto", "cuda"

    _rewrite_fingerprints(tmp_path, lambda config: config.update(device="auto"), stage)
    with pytest.raises(ValueError, match=r"^checkpoint \S+stage0\.json was written by a different fit: its "
                                         r"configuration differs \(device='cuda'→'cpu', train\.device='cuda'→'cpu'\); "
                                         r"expected "):
        MultiLabelClassifier("bce", device="auto", resume=True, **params).fit(X, Y)
