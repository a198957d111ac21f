"""Synthetic label noise: requested rates, determinism, the direction of each kind, and the estimator option.

Rates are checked within 5 binomial standard deviations, sqrt(η(1 − η)/m) for m Bernoulli trials (a false
alarm has probability < 1e-6 per check).
"""

import math

import numpy as np
import pytest

import mlkd.estimator as estimator_module
from mlkd import MultiLabelClassifier
from mlkd.noise import add_label_noise, cooccurrence_conditional

from .helpers import linear_problem


def labels(n=2000, L=20, density=0.3, seed=0):
    return (np.random.default_rng(seed).random((n, L)) < density).astype(np.uint8)


def within_5_sd(observed: float, rate: float, trials: int) -> bool:
    return abs(observed - rate) <= 5 * math.sqrt(rate * (1 - rate) / trials)


@pytest.mark.parametrize("rate", [0.1, 0.3])
def test_symmetric_flips_every_bit_at_the_rate(rate):
    Y = labels()
    noisy = add_label_noise(Y, "symmetric", rate, seed=1)
    flipped = noisy != Y
    assert within_5_sd(flipped.mean(), rate, Y.size)
    assert within_5_sd(flipped[Y == 1].mean(), rate, int(Y.sum()))  # positives and negatives alike
    assert within_5_sd(flipped[Y == 0].mean(), rate, int((Y == 0).sum()))


@pytest.mark.parametrize("rate", [0.1, 0.4])
def test_missing_drops_positives_at_the_rate_and_never_creates_one(rate):
    Y = labels()
    noisy = add_label_noise(Y, "missing", rate, seed=2)
    assert np.all(noisy <= Y)
    assert within_5_sd(1 - noisy[Y == 1].mean(), rate, int(Y.sum()))


def block_labels(n=3000, seed=0):
    """Two label blocks, {0,1,2} and {3,4,5}: a row has 1 or 2 positives, all in one block."""
    rng = np.random.default_rng(seed)
    Y = np.zeros((n, 6), dtype=np.uint8)
    block = 3 * rng.integers(0, 2, n)
    first = rng.integers(0, 3, n)
    second = (first + rng.integers(1, 3, n)) % 3
    Y[np.arange(n), block + first] = 1
    two = rng.random(n) < 0.6
    Y[np.arange(n)[two], (block + second)[two]] = 1
    return Y


@pytest.mark.parametrize("rate", [0.2, 0.4])
def test_correlated_moves_positives_along_label_cooccurrence(rate):
    Y = block_labels()
    noisy = add_label_noise(Y, "correlated", rate, seed=3)
    turned_off = (Y == 1) & (noisy == 0)
    turned_on = (Y == 0) & (noisy == 1)
    assert within_5_sd(turned_off.sum() / Y.sum(), rate, int(Y.sum()))  # every selected positive leaves
    off, on = turned_off.sum(1), turned_on.sum(1)
    assert np.all(on[off == 1] == 1)  # a moved positive lands on exactly one label …
    assert np.all((on >= 1) & (on <= off) | (off == 0))  # … and two moves in a row may land on the same one
    # labels never co-occur across blocks, so a positive only moves within its own block
    in_block = np.zeros_like(Y, dtype=bool)
    for lo in (0, 3):
        row_in = Y[:, lo : lo + 3].any(1)
        in_block[row_in, lo : lo + 3] = True
    assert not np.any(turned_on & ~in_block)
    assert turned_on.sum() > 0


def test_cooccurrence_conditional():
    Y = np.array([[1, 1, 0], [1, 0, 0], [0, 1, 1], [0, 0, 0]])
    P = cooccurrence_conditional(Y)
    assert np.allclose(P, [[0, 0.5, 0], [0.5, 0, 0.5], [0, 1, 0]])


@pytest.mark.parametrize("kind", ["symmetric", "missing", "correlated"])
def test_noise_is_deterministic_per_seed_and_rate_zero_is_clean(kind):
    Y = labels(n=300, L=8)
    a, b = add_label_noise(Y, kind, 0.2, seed=5), add_label_noise(Y, kind, 0.2, seed=5)
    assert np.array_equal(a, b) and a.dtype == np.uint8 and a.shape == Y.shape
    assert not np.array_equal(a, add_label_noise(Y, kind, 0.2, seed=6))
    assert np.array_equal(add_label_noise(Y, kind, 0.0, seed=5), Y)


def test_extreme_rates():
    Y = labels(n=50, L=5)
    assert np.array_equal(add_label_noise(Y, "symmetric", 1.0), 1 - Y)
    assert not add_label_noise(Y, "missing", 1.0).any()


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((np.zeros((3, 2)), "gaussian", 0.1), "kind='gaussian' is not valid"),
        ((np.zeros((3, 2)), "missing", 1.5), "rate=1.5 is out of range"),
        ((np.full((3, 2), 2), "missing", 0.1), "only 0 and 1"),
        ((np.zeros(3), "missing", 0.1), "2-D"),
    ],
)
def test_bad_arguments_are_value_errors(args, match):
    with pytest.raises(ValueError, match=match):
        add_label_noise(*args)


# -- the estimator option -------------------------------------------------------------------------------
def test_estimator_corrupts_training_and_validation_labels_only(monkeypatch):
    seen = {}

    class RecordingTrainer(estimator_module.Trainer):
        def fit(self, method, X, Y, X_val=None, Y_val=None, **kwargs):
            seen["Y"], seen["Y_val"] = Y.copy(), Y_val.copy()
            return super().fit(method, X, Y, X_val, Y_val, **kwargs)

    monkeypatch.setattr(estimator_module, "Trainer", RecordingTrainer)
    X, Y = linear_problem(n=240, d=6, L=4, seed=1)
    kw = dict(hidden=8, max_epochs=2, random_state=3)
    clean = MultiLabelClassifier("bce", **kw).fit(X, Y)
    Y_clean, Yv_clean = seen["Y"], seen["Y_val"]
    noisy = MultiLabelClassifier("bce", label_noise_kind="missing", label_noise_rate=0.3, **kw).fit(X, Y)
    assert np.all(seen["Y"] <= Y_clean) and np.all(seen["Y_val"] <= Yv_clean)  # same split, positives dropped
    assert seen["Y"].sum() < 0.85 * Y_clean.sum() and seen["Y_val"].sum() < Yv_clean.sum()
    expected = add_label_noise(np.vstack([Y_clean, Yv_clean]), "missing", 0.3, seed=3)
    assert np.array_equal(np.vstack([seen["Y"], seen["Y_val"]]), expected)
    assert clean.get_params()["label_noise_kind"] is None and noisy.get_params()["label_noise_kind"] == "missing"


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"label_noise_kind": "flip", "label_noise_rate": 0.1}, "label_noise_kind='flip' is invalid"),
        ({"label_noise_kind": "missing", "label_noise_rate": 2.0}, "label_noise_rate=2.0 is invalid"),
        ({"label_noise_rate": 0.2}, "needs a label_noise_kind"),
    ],
)
def test_estimator_rejects_bad_noise_settings(params, match):
    X, Y = linear_problem(n=60, d=4, L=3)
    with pytest.raises(ValueError, match=match):
        MultiLabelClassifier("bce", hidden=8, max_epochs=1, **params).fit(X, Y)


def test_train_and_validation_noise_is_one_draw_over_both():
    from mlkd.noise import add_train_val_noise

    rng = np.random.default_rng(0)
    Y_tr, Y_va = (rng.random((300, 7)) < 0.3).astype(np.uint8), (rng.random((60, 7)) < 0.3).astype(np.uint8)
    noisy_tr, noisy_va = add_train_val_noise(Y_tr, Y_va, "symmetric", 0.2, seed=3)
    both = add_label_noise(np.vstack([Y_tr, Y_va]), "symmetric", 0.2, seed=3)
    assert np.array_equal(noisy_tr, both[:300]) and np.array_equal(noisy_va, both[300:])
    assert 0.15 < np.mean(noisy_va != Y_va) < 0.25  # validation labels are corrupted too
    only_tr, none = add_train_val_noise(Y_tr, None, "missing", 0.5, seed=3)
    assert none is None and np.array_equal(only_tr, add_label_noise(Y_tr, "missing", 0.5, seed=3))
