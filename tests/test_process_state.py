"""What a fit or a prediction leaves of the process's state: the caller's random streams on every device,
the thread count the fit's own numbers are computed at, the model's train/eval modes."""

from __future__ import annotations

import contextlib
import sys

import numpy as np
import pytest
import torch

from mlkd import MultiLabelClassifier
from mlkd.batched import fit_seeds
from mlkd.methods import build_method
from mlkd.trainer import TrainConfig, Trainer

from .helpers import linear_problem

X, Y = linear_problem(n=60, d=6, L=3, seed=0)
TINY = dict(hidden=8, max_epochs=2, batch_size=16)


@pytest.fixture
def accelerator_seeding(monkeypatch):
    """Every call that seeds an accelerator's generators (what ``torch.manual_seed`` makes besides the CPU's)."""
    calls = []
    for module, name in ((torch.cuda, "manual_seed_all"), (torch.cuda, "manual_seed"), (torch.mps, "manual_seed"),
                         (torch.xpu, "manual_seed_all"), (torch.mtia, "manual_seed_all")):
        monkeypatch.setattr(module, name, lambda seed, _n=f"{module.__name__}.{name}": calls.append(_n))
    return calls


def test_a_cpu_fit_reseeds_no_accelerator_generator(accelerator_seeding):
    # torch.manual_seed seeds every CUDA device (and MPS, XPU, …), and a fit's fork_rng restores only the CPU's
    # and its own device's: a CPU fit on a GPU machine reseeded the user's CUDA streams with the fit's seed (at
    # once, or when CUDA started later), so their numbers depended on having fitted before
    build_method("skdtea", 6, 3, {"hidden": 8}, seed=3)
    m = build_method("bce", 6, 3, {"hidden": 8}, seed=0)
    Trainer(TrainConfig(max_epochs=1, batch_size=16, device="cpu")).fit(m, X, Y)
    fit_seeds("bce", X, Y, seeds=[0, 1], params={"hidden": 8}, config=TrainConfig(max_epochs=1, device="cpu"))
    MultiLabelClassifier("ban", generations=2, device="cpu", **TINY).fit(X, Y)
    assert accelerator_seeding == []


def test_a_fits_threshold_is_tuned_on_predictions_at_the_fits_own_thread_count(monkeypatch):
    # predictions change in float rounding with the thread count (BENCHMARKS.md), and the tuned threshold is the
    # fit's: computed at the caller's count, outside the fits' turn-taking, it depended on the caller's setting
    # and, from a thread pool, on whether another thread's fit had set its own count meanwhile
    import mlkd.estimator as estimator
    from mlkd.methods.base import TORCH_GLOBAL_STATE

    seen, predict = [], estimator.predict_logits

    def spy(*args, **kwargs):
        seen.append((torch.get_num_threads(), TORCH_GLOBAL_STATE._is_owned()))
        return predict(*args, **kwargs)

    monkeypatch.setattr(estimator, "predict_logits", spy)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        MultiLabelClassifier("bce", num_threads=1, **TINY).fit(X, Y)
        assert seen == [(1, True)]
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("method", ["bce", "skdtea", "mpvae", "labelwise"])
def test_predicting_leaves_a_model_in_the_mode_its_user_left_it(method):
    # a user who put model_ in train mode (to train it further in their own loop) and predicted in between
    # found it switched to eval for good: dropout silently off in their training afterwards
    params = {"latent": 4, "n_samples": 3} if method == "mpvae" else {"hidden": 8}
    clf = MultiLabelClassifier(method, max_epochs=2, batch_size=16, **params).fit(X, Y)
    expected, state = clf.predict_proba(X), {k: v.clone() for k, v in clf.model_.state_dict().items()}
    clf.model_.train()
    modes = [m.training for m in clf.model_.modules()]
    rng = torch.random.get_rng_state()
    for predict in (clf.predict_proba, clf.predict, lambda X: clf.score(X, Y), lambda X: clf.evaluate(X, Y)):
        predict(X)
    assert (clf.predict_proba(X) == expected).all()  # predictions are always the eval mode's
    assert [m.training for m in clf.model_.modules()] == modes
    assert all(torch.equal(v, state[k]) for k, v in clf.model_.state_dict().items())
    assert torch.equal(rng, torch.random.get_rng_state())


def test_predictions_from_several_threads_of_a_model_left_in_train_mode_are_all_the_eval_modes():
    # each prediction switches the model to eval and gives the modes back: one thread's giving back must not
    # put the model in train mode under another's forward pass (its dropout would draw: other, random outputs)
    from concurrent.futures import ThreadPoolExecutor

    Xs = np.repeat(X, 50, axis=0)
    clf = MultiLabelClassifier("bce", max_epochs=1, hidden=64, dropout=0.5).fit(X, Y)
    expected = clf.predict_proba(Xs)
    clf.model_.train()
    with ThreadPoolExecutor(4) as pool:
        outputs = list(pool.map(lambda _: clf.predict_proba(Xs), range(200)))
    assert all((p == expected).all() for p in outputs)
    assert all(m.training for m in clf.model_.modules())


def _process_state() -> dict:
    import gc
    import os
    import random
    import signal
    import warnings

    from mlkd.nn import fused_mlp_enabled
    from mlkd.trainer import _dynamo_disabled_functions

    return {
        "threads": torch.get_num_threads(), "torch rng": torch.random.get_rng_state(),
        "numpy rng": repr(np.random.get_state()), "random": random.getstate(), "gc": gc.isenabled(),
        "grad": torch.is_grad_enabled(), "dtype": torch.get_default_dtype(),
        "deterministic": torch.are_deterministic_algorithms_enabled(), "warnings": list(warnings.filters),
        "signals": [signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)], "environ": dict(os.environ),
        "fused mlp": fused_mlp_enabled(),
        # mlkd's stand-ins for torch's compiler import; once torch._dynamo is imported, torch sets them itself
        "torch.optim": None if "torch._dynamo" in sys.modules else
        [vars(fn).get("__dynamo_disable") for fn in _dynamo_disabled_functions()],
    }


def _same_state(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        same = torch.equal(a[key], b[key]) if isinstance(a[key], torch.Tensor) else a[key] == b[key]
        assert same, key


@pytest.mark.parametrize("stop", [KeyboardInterrupt, RuntimeError])
def test_a_fit_stopped_midway_gives_the_process_state_back(monkeypatch, tmp_path, stop):
    # README: a fit's process-wide settings come back when it ends, on an error or Ctrl-C too; a teacher-first
    # method stopped in its student stage, checkpointing, in the fit's second epoch
    from mlkd.methods import method_class

    cls = method_class("ban")
    end = cls.on_epoch_end

    def stopping(self, ctx):
        if ctx.epoch == 1:
            raise stop("stopped")
        return end(self, ctx)

    torch.manual_seed(5)
    np.random.seed(5)
    before = _process_state()
    monkeypatch.setattr(cls, "on_epoch_end", stopping)
    with pytest.raises(stop):
        MultiLabelClassifier("ban", generations=2, checkpoint_dir=tmp_path, **TINY).fit(X, Y)
    _same_state(before, _process_state())
    monkeypatch.setattr(cls, "on_epoch_end", end)
    MultiLabelClassifier("ban", generations=2, checkpoint_dir=tmp_path, resume=True, **TINY).fit(X, Y)
    _same_state(before, _process_state())


@contextlib.contextmanager
def _default_dtype(dtype):
    before = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(before)


CALLER_SETTINGS = {"no_grad": torch.no_grad, "inference_mode": torch.inference_mode,
                   "float64 default": lambda: _default_dtype(torch.float64)}


@pytest.mark.parametrize("setting", sorted(CALLER_SETTINGS))
@pytest.mark.parametrize("method", ["bce", "kdtea"])
def test_a_fit_and_a_load_do_not_depend_on_the_callers_autograd_mode_or_default_dtype(setting, method, tmp_path):
    # a fit inside the caller's torch.no_grad() or inference_mode() was an autograd traceback ("element 0 of
    # tensors does not require grad"), and after torch.set_default_dtype(torch.float64) fits and loaded models
    # were float64 models fed float32 rows ("mat1 and mat2 must have the same dtype")
    from mlkd import load_model

    params = dict(teacher_hidden=8, **TINY) if method == "kdtea" else TINY
    expected = MultiLabelClassifier(method, **params).fit(X, Y)
    expected.save(tmp_path / "model")
    with CALLER_SETTINGS[setting]():
        got = MultiLabelClassifier(method, **params).fit(X, Y)
        loaded = load_model(tmp_path / "model")
        assert torch.is_grad_enabled() == (setting == "float64 default")
    assert torch.get_default_dtype() == torch.float32
    for clf in (got, loaded):
        assert all(p.dtype == torch.float32 for p in clf.model_.parameters())
        np.testing.assert_array_equal(clf.predict_proba(X), expected.predict_proba(X))
    assert all(torch.equal(v, got.model_.state_dict()[k]) for k, v in expected.model_.state_dict().items())
