"""On a CUDA GPU (skipped where there is none, as in CI): every method trains there, a GPU fit is repeatable,
resumable and DDP-able, and what a user keeps from it — a saved model, a checkpoint — works on a CPU.

Run on a GPU machine with ``pytest tests/test_gpu.py``; BENCHMARKS.md and the issue notes say when it last ran.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from mlkd import MultiLabelClassifier
from mlkd.distributed import fit_ddp
from mlkd.methods import REGISTRY, build_method, config_fields
from mlkd.trainer import TrainConfig, Trainer, predict_logits

from .conftest import REAL_CUDA_AVAILABLE
from .helpers import linear_problem
from .test_resume import _env, _Interrupt, interrupt_after  # noqa: F401  (a fixture, used by name)

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture(autouse=True)
def real_cuda(monkeypatch):
    """Undo conftest's CPU pinning for these tests (and for the processes they start)."""
    monkeypatch.setattr(torch.cuda, "is_available", REAL_CUDA_AVAILABLE)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)


TRAINABLE = sorted(set(REGISTRY) - {"pretrained"})  # pretrained wraps a saved model: covered by 'distill' below
X, Y = linear_problem(n=240, d=10, L=5, seed=4)
Xt, Yt, Xv, Yv = X[:180], Y[:180], X[180:], Y[180:]


def _small(method: str) -> dict:
    fields = config_fields(method)
    small = {k: v for k, v in {"hidden": 16, "teacher_hidden": 32, "teacher_max_epochs": 3, "rounds": 2,
                               "generations": 2, "n_samples": 20}.items() if k in fields}
    return dict(max_epochs=8, patience=8, batch_size=32, lr=1e-2, **small)


def _on(clf) -> str:
    return next(clf.model_.parameters()).device.type


@pytest.mark.parametrize("method", TRAINABLE)
def test_every_method_trains_on_cuda_and_its_saved_model_predicts_the_same_on_a_cpu(method, tmp_path):
    clf = MultiLabelClassifier(method, device="cuda", **_small(method)).fit(Xt, Yt, Xv, Yv)
    assert _on(clf) == "cuda"
    P = clf.predict_proba(X)
    assert P.shape == Y.shape and np.isfinite(P).all() and ((P >= 0) & (P <= 1)).all()
    assert clf.evaluate(Xv, Yv)["mAP"] > 0.5  # it learned: constant scores give about the positive rate, 0.37
    clf.save(tmp_path / "model")
    cpu = MultiLabelClassifier.load(tmp_path / "model")
    assert _on(cpu) == "cpu"
    np.testing.assert_allclose(cpu.predict_proba(X), P, atol=1e-5)


def test_a_cuda_fit_is_repeatable_for_a_seed():
    # dropout and SKDTEA's label corruption draw from the CUDA generator: same seed, same stream
    fits = [MultiLabelClassifier("skdtea", device="cuda", random_state=3, **_small("skdtea")).fit(Xt, Yt, Xv, Yv)
            for _ in range(2)]
    assert [h["total"] for h in fits[0].history_] == [h["total"] for h in fits[1].history_]
    assert np.array_equal(fits[0].predict_proba(X), fits[1].predict_proba(X))


def test_a_fit_on_either_device_leaves_the_callers_cuda_random_streams_as_they_were():
    # torch.manual_seed, which fits used, reseeds every GPU's generator; a fit's fork restores the CPU's and its own
    torch.cuda.manual_seed_all(12)
    before = torch.cuda.get_rng_state_all()
    for device in ("cpu", "cuda"):
        MultiLabelClassifier("skdtea", device=device, **_small("skdtea")).fit(Xt, Yt, Xv, Yv)
        assert all(torch.equal(a, b) for a, b in zip(before, torch.cuda.get_rng_state_all(), strict=True)), device


def test_a_cuda_fit_agrees_with_the_cpu_fit_when_nothing_random_is_drawn():
    # without dropout the two devices train the same model from the same initial weights and batch order;
    # only float rounding (cuBLAS vs MKL kernels, TF32 off by default) separates them
    settings = dict(hidden=16, dropout=0.0, max_epochs=6, patience=6, batch_size=32, random_state=1)
    gpu = MultiLabelClassifier("bce", device="cuda", **settings).fit(Xt, Yt, Xv, Yv)
    cpu = MultiLabelClassifier("bce", device="cpu", **settings).fit(Xt, Yt, Xv, Yv)
    np.testing.assert_allclose([h["total"] for h in gpu.history_], [h["total"] for h in cpu.history_], rtol=1e-4)
    np.testing.assert_allclose(gpu.predict_proba(X), cpu.predict_proba(X), atol=1e-4)


def test_a_cuda_fit_killed_mid_way_resumes_to_the_uninterrupted_model(tmp_path, interrupt_after):  # noqa: F811
    params = dict(teacher_hidden=24, hidden=8, max_epochs=10, patience=10, batch_size=32, device="cuda")
    whole = MultiLabelClassifier("kdtea", **params).fit(Xt, Yt)
    restore = interrupt_after("stage1", 4)  # the student, after the teacher finished
    with pytest.raises(_Interrupt):
        MultiLabelClassifier("kdtea", checkpoint_dir=tmp_path, checkpoint_every=2, **params).fit(Xt, Yt)
    restore()
    resumed = MultiLabelClassifier("kdtea", checkpoint_dir=tmp_path, checkpoint_every=2, resume=True, **params)
    resumed.fit(Xt, Yt)
    assert [h["total"] for h in resumed.history_] == [h["total"] for h in whole.history_]
    assert np.array_equal(resumed.predict_proba(X), whole.predict_proba(X))


def test_a_teacher_saved_from_a_cuda_fit_is_distilled_on_cuda(tmp_path):
    teacher = MultiLabelClassifier("labelwise", device="cuda", **_small("labelwise")).fit(Xt, Yt, Xv, Yv)
    teacher.save(tmp_path / "teacher")
    student = MultiLabelClassifier("distill", device="cuda", teacher_dir=str(tmp_path / "teacher"),
                                   **_small("distill")).fit(Xt, Yt, Xv, Yv)
    assert _on(student) == "cuda" and np.isfinite(student.predict_proba(X)).all()


def test_ddp_on_cuda_runs_over_nccl_and_matches_one_process():
    cfg = TrainConfig(device="cuda", max_epochs=5, patience=5, batch_size=32, seed=2)
    params = {"hidden": 16, "dropout": 0.0}
    alone = build_method("bce", X.shape[1], Y.shape[1], params, seed=2)
    expected = Trainer(cfg).fit(alone, Xt, Yt, Xv, Yv)
    ranks = min(torch.cuda.device_count(), 2)  # NCCL needs one GPU per rank
    shared = build_method("bce", X.shape[1], Y.shape[1], params, seed=2)
    result = fit_ddp(shared, Xt, Yt, Xv, Yv, cfg, nproc=ranks)
    assert result.best_epoch == expected.best_epoch
    np.testing.assert_allclose([h["total"] for h in result.history], [h["total"] for h in expected.history],
                               rtol=1e-4)
    assert torch.allclose(predict_logits(shared.to("cuda"), X), predict_logits(alone, X), atol=1e-4)


@pytest.mark.skipif(torch.cuda.device_count() > 1, reason="checks the refusal on a one-GPU machine")
def test_ddp_asking_for_more_gpus_than_there_are_is_refused():
    with pytest.raises(ValueError, match="one GPU per process"):
        MultiLabelClassifier("bce", device="cuda", nproc=2, max_epochs=1).fit(Xt, Yt)


def test_cli_fit_trains_on_the_device_asked_for(tmp_path):
    from mlkd.io import load_model

    for device in ("cuda", "cpu"):
        out = tmp_path / device
        run = subprocess.run([sys.executable, "-m", "mlkd", "fit", "digits-ml", "-m", "bce", "--max-epochs", "2",
                              "--param", "hidden=16", "--device", device, "--out", str(out), "--quiet"],
                             capture_output=True, text=True, env=_env())  # _env copies os.environ: GPUs visible
        assert run.returncode == 0, run.stderr
        assert load_model(out).device == device
