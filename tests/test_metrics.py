"""Tests for mlkd.metrics: hand-computed cases, conventions, threshold tuning, properties, validation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlkd import metrics as M
from mlkd.metrics import (
    METRICS,
    evaluate,
    mean_average_precision,
    ranking_metrics,
    threshold_metrics,
    tune_threshold,
)

# --------------------------------------------------------------------------------------------------
# The 3 x 4 worked example
# --------------------------------------------------------------------------------------------------
Y3 = np.array([
    [1, 0, 1, 0],
    [0, 1, 0, 0],
    [1, 1, 0, 1],
])
S3 = np.array([
    [0.9, 0.6, 0.4, 0.1],
    [0.2, 0.7, 0.3, 0.8],
    [0.8, 0.3, 0.6, 0.5],
])
# Predictions at 0.5 (scores >= 0.5):
#   row0 [1,1,0,0]   row1 [0,1,0,1]   row2 [1,0,1,1]
# Cell counts: TP = 1 + 1 + 2 = 4; FP = (r0,l1) (r1,l3) (r2,l2) = 3; FN = (r0,l2) (r2,l1) = 2.
EXPECTED3 = {
    # example F1 = 2|Y∩P| / (|Y|+|P|):
    #   row0 Y={0,2} P={0,1}: 2*1/(2+2) = 1/2;  row1 Y={1} P={1,3}: 2*1/(1+2) = 2/3;
    #   row2 Y={0,1,3} P={0,2,3}: 2*2/(3+3) = 2/3  ->  (1/2 + 2/3 + 2/3) / 3 = 11/18
    "example_f1": 11 / 18,
    # micro F1 = 2TP / (2TP + FP + FN) = 8 / (8 + 3 + 2) = 8/13
    "micro_f1": 8 / 13,
    # per label: l0 Y[1,0,1] P[1,0,1] -> 1;  l1 Y[0,1,1] P[1,1,0] -> tp1 fp1 fn1 -> 2/4 = 1/2;
    #   l2 Y[1,0,0] P[0,0,1] -> tp0 -> 0;  l3 Y[0,0,1] P[0,1,1] -> tp1 fp1 -> 2/3
    #   macro = (1 + 1/2 + 0 + 2/3) / 4 = 13/24
    "macro_f1": 13 / 24,
    # wrong cells = FP + FN = 5 of 12
    "hamming_loss": 5 / 12,
    # no row predicted exactly
    "subset_accuracy": 0.0,
    # AP per label (rank by score, mean precision at each positive):
    #   l0 [.9+ .8+ .2-] -> 1;  l1 [.7+ .6- .3+] -> (1 + 2/3)/2 = 5/6;
    #   l2 [.6- .4+ .3-] -> 1/2;  l3 [.8- .5+ .1-] -> 1/2   ->  (1 + 5/6 + 1/2 + 1/2) / 4 = 17/24
    "mAP": 17 / 24,
    # misordered (relevant, irrelevant) pairs / all pairs:
    #   row0 rel{0:.9, 2:.4} irr{1:.6, 3:.1}: (2,1) wrong -> 1/4
    #   row1 rel{1:.7} irr{0:.2, 2:.3, 3:.8}: (1,3) wrong -> 1/3
    #   row2 rel{0:.8, 1:.3, 3:.5} irr{2:.6}: (1,2) (3,2) wrong -> 2/3   ->  (1/4 + 1/3 + 2/3)/3 = 5/12
    "ranking_loss": 5 / 12,
    # rank of the worst true label - 1:  row0 order 0,1,2,3 -> label2 at rank 3 -> 2;
    #   row1 order 3,1,2,0 -> label1 at rank 2 -> 1;  row2 order 0,2,3,1 -> label1 at rank 4 -> 3
    #   -> (2 + 1 + 3) / 3 = 2
    "coverage": 2.0,
    # top label: row0 -> 0 (true), row1 -> 3 (false), row2 -> 0 (true)  ->  1/3
    "one_error": 1 / 3,
    # LRAP: per true label, (#true at or above it) / rank:
    #   row0 l0 1/1, l2 2/3 -> 5/6;  row1 l1 1/2 -> 1/2;  row2 l0 1/1, l3 2/3, l1 3/4 -> 29/36
    #   -> (30/36 + 18/36 + 29/36) / 3 = 77/108
    "lrap": 77 / 108,
}


def test_metrics_registry_order_and_flags():
    assert list(METRICS) == ["example_f1", "micro_f1", "macro_f1", "hamming_loss", "subset_accuracy",
                             "mAP", "ranking_loss", "coverage", "one_error", "lrap"]
    lower = {"hamming_loss", "ranking_loss", "coverage", "one_error"}
    for key, info in METRICS.items():
        name, higher, needs_thr = info
        assert isinstance(name, str) and name
        assert higher == (key not in lower)
        assert needs_thr == (key in list(METRICS)[:5])
        assert info.display_name == name and info.higher_is_better == higher


def test_worked_example_3x4():
    out = evaluate(Y3, S3, threshold=0.5)
    assert list(out) == list(METRICS)
    assert all(type(v) is float for v in out.values())
    for k, v in EXPECTED3.items():
        assert out[k] == pytest.approx(v, abs=1e-12), k


def test_split_functions_match_evaluate():
    P = (S3 >= 0.5).astype(int)
    t = threshold_metrics(Y3, P)
    r = ranking_metrics(Y3, S3)
    assert list(t) == list(METRICS)[:5] and list(r) == list(METRICS)[5:]
    for k in METRICS:
        assert {**t, **r}[k] == pytest.approx(EXPECTED3[k], abs=1e-12)
    assert mean_average_precision(Y3, S3) == pytest.approx(17 / 24)


def test_accepts_bool_float_and_float32_inputs():
    out = evaluate(Y3.astype(bool), S3.astype(np.float32))
    out2 = evaluate(Y3.astype(float), S3.tolist())
    for k in METRICS:
        assert out[k] == pytest.approx(EXPECTED3[k], abs=1e-6)
        assert out2[k] == pytest.approx(EXPECTED3[k], abs=1e-12)


# --------------------------------------------------------------------------------------------------
# Conventions
# --------------------------------------------------------------------------------------------------
def test_example_f1_empty_empty_is_one():
    # row0: no true, no predicted -> 1; row1: {0} vs {0} -> 1
    assert threshold_metrics([[0, 0], [1, 0]], [[0, 0], [1, 0]])["example_f1"] == 1.0
    assert threshold_metrics([[0, 0, 0]], [[0, 0, 0]])["example_f1"] == 1.0
    # empty truth but something predicted -> 0; truth but nothing predicted -> 0
    assert threshold_metrics([[0, 0]], [[1, 0]])["example_f1"] == 0.0
    assert threshold_metrics([[1, 0]], [[0, 0]])["example_f1"] == 0.0
    # mixed: (1 + 0 + 0 + 2*1/(2+1)) / 4 = (1 + 2/3) / 4 = 5/12
    Y = [[0, 0, 0], [1, 0, 0], [0, 0, 0], [1, 1, 0]]
    P = [[0, 0, 0], [0, 0, 0], [1, 0, 0], [1, 0, 0]]
    assert threshold_metrics(Y, P)["example_f1"] == pytest.approx(5 / 12)
    # same via evaluate: row with all scores < 0.5 and no true label
    assert evaluate([[0, 0], [0, 1]], [[0.1, 0.2], [0.3, 0.9]])["example_f1"] == 1.0


def test_macro_f1_label_without_positives_counts_zero():
    # label1 never true, never predicted -> F1 0; label0 perfect -> 1; macro over ALL labels = 1/2
    out = threshold_metrics([[1, 0], [1, 0]], [[1, 0], [1, 0]])
    assert out["macro_f1"] == 0.5
    assert out["micro_f1"] == 1.0
    assert out["example_f1"] == 1.0
    # micro-F1 with nothing true and nothing predicted anywhere: 0 (zero_division=0)
    assert threshold_metrics([[0, 0]], [[0, 0]])["micro_f1"] == 0.0


def test_map_skips_labels_without_positives():
    Y = np.array([[1, 0, 0], [0, 1, 0], [1, 0, 0]])
    S = np.array([[0.9, 0.1, 0.99], [0.2, 0.8, 0.5], [0.3, 0.7, 0.6]])
    # l0 [.9+ .3+ .2-] -> 1;  l1 [.8+ .7- .1-] -> 1;  l2 has no positive -> skipped  ->  mAP = 1
    assert mean_average_precision(Y, S) == 1.0
    # l1 now ranks its positive second: [.8- .7+ .1-] -> 1/2  ->  mAP = (1 + 1/2) / 2 = 3/4
    S2 = S.copy()
    S2[:, 1] = [0.1, 0.7, 0.8]
    assert mean_average_precision(Y, S2) == pytest.approx(0.75)
    assert math.isnan(mean_average_precision(np.zeros((2, 3)), S[:2]))
    assert math.isnan(evaluate(np.zeros((2, 3)), S[:2])["mAP"])


def test_coverage_of_perfect_ranking_is_true_count_minus_one():
    Y = np.array([[1, 1, 0, 0], [1, 0, 0, 0], [1, 1, 1, 0]])
    S = np.array([[0.9, 0.8, 0.2, 0.1], [0.7, 0.3, 0.2, 0.1], [0.9, 0.8, 0.7, 0.1]])
    # (2-1 + 1-1 + 3-1) / 3 = 1
    assert ranking_metrics(Y, S)["coverage"] == pytest.approx(1.0)
    assert ranking_metrics(Y[1:2], S[1:2])["coverage"] == 0.0  # single true label ranked first
    # a row without true labels contributes 0 steps (never -1): (1 + 0 + 2 + 0) / 4 = 3/4
    Y4 = np.vstack([Y, [0, 0, 0, 0]])
    S4 = np.vstack([S, [0.5, 0.4, 0.3, 0.2]])
    assert ranking_metrics(Y4, S4)["coverage"] == pytest.approx(0.75)


def test_one_error_excludes_rows_without_true_labels_and_breaks_ties_by_first_index():
    Y = np.array([[1, 0, 0], [0, 0, 0], [0, 1, 0]])
    S = np.array([[0.9, 0.1, 0.2], [0.9, 0.1, 0.2], [0.8, 0.1, 0.2]])
    # row1 excluded; row0 top=0 true; row2 top=0 false -> 1/2
    assert ranking_metrics(Y, S)["one_error"] == 0.5
    # tie at the top between labels 0 and 1 -> argmax takes label 0
    assert ranking_metrics([[1, 0]], [[0.5, 0.5]])["one_error"] == 0.0
    assert ranking_metrics([[0, 1]], [[0.5, 0.5]])["one_error"] == 1.0
    # every row empty -> NaN
    assert math.isnan(ranking_metrics(np.zeros((2, 3)), S[:2])["one_error"])


def test_ranking_loss_and_lrap_on_rows_without_true_labels_follow_sklearn():
    Y = np.array([[0, 0, 0], [1, 0, 0]])
    S = np.array([[0.1, 0.2, 0.3], [0.1, 0.2, 0.3]])
    r = ranking_metrics(Y, S)
    # row0 empty -> loss 0, LRAP 1;  row1: label0 ranked last of 3 -> loss 2/2 = 1, LRAP 1/3
    assert r["ranking_loss"] == pytest.approx((0 + 1) / 2)
    assert r["lrap"] == pytest.approx((1 + 1 / 3) / 2)
    # coverage: row0 0, row1 rank 3 - 1 = 2  ->  1
    assert r["coverage"] == pytest.approx(1.0)


def test_ranking_metrics_accept_logits():
    logits = np.log(S3 / (1 - S3))  # same order as S3
    r = ranking_metrics(Y3, logits)
    for k in r:
        assert r[k] == pytest.approx(EXPECTED3[k], abs=1e-12)


# --------------------------------------------------------------------------------------------------
# Per-label thresholds
# --------------------------------------------------------------------------------------------------
def test_per_label_threshold_array_equal_entries_matches_scalar():
    for t in (0.35, 0.5, 0.65):
        assert evaluate(Y3, S3, threshold=np.full(4, t)) == evaluate(Y3, S3, threshold=t)


def test_per_label_threshold_array_is_applied_per_column():
    thr = np.array([0.5, 0.5, 0.35, 0.9])
    # col2 at 0.35: [.4 .3 .6] -> [1,0,1]; col3 at 0.9: [.1 .8 .5] -> [0,0,0]
    # P = row0 [1,1,1,0] row1 [0,1,0,0] row2 [1,0,1,0]
    # example F1: row0 Y{0,2} P{0,1,2} 4/5; row1 1; row2 Y{0,1,3} P{0,2} 2/5 -> (4/5 + 1 + 2/5)/3 = 11/15
    # hamming: row0 l1 ; row2 l1 l2 l3 -> 4/12
    out = evaluate(Y3, S3, threshold=thr)
    assert out["example_f1"] == pytest.approx(11 / 15)
    assert out["hamming_loss"] == pytest.approx(4 / 12)
    assert out["mAP"] == pytest.approx(17 / 24)  # ranking metrics ignore the threshold


# --------------------------------------------------------------------------------------------------
# tune_threshold
# --------------------------------------------------------------------------------------------------
def _separable(pos, neg, Y):
    return np.where(Y == 1, pos, neg)


YT = np.array([[1, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 1], [1, 0, 0]])


def test_tune_global_threshold_known_optimum():
    # positives 0.3, negatives 0.2: every t in (0.2, 0.3] gives example F1 = 1; closest to 0.5 -> 0.3
    t = tune_threshold(YT, _separable(0.3, 0.2, YT))
    assert type(t) is float and t == pytest.approx(0.3)
    assert evaluate(YT, _separable(0.3, 0.2, YT), t)["example_f1"] == 1.0
    # positives 0.7, negatives 0.6: optimum (0.6, 0.7]; closest to 0.5 -> 0.61
    assert tune_threshold(YT, _separable(0.7, 0.6, YT)) == pytest.approx(0.61)
    # float32 scores behave the same
    assert tune_threshold(YT, _separable(0.3, 0.2, YT).astype(np.float32)) == pytest.approx(0.3)


def test_tune_global_threshold_tie_prefers_closest_to_half():
    # scores 0.0/1.0 perfectly separated: every grid value is optimal -> 0.5
    assert tune_threshold(YT, YT.astype(float)) == 0.5
    # custom grids whose values are exactly equidistant from 0.5 in binary floating point (0.2/0.8 are not:
    # |0.8 - 0.5| = 0.30000000000000004 > |0.2 - 0.5|), so the tie reaches the second key: the smaller wins
    for grid, smaller in (([0.25, 0.75], 0.25), ([0.75, 0.25], 0.25), ([0.4, 0.6], 0.4), ([0.6, 0.4], 0.4)):
        lo, hi = grid if grid[0] < grid[1] else grid[::-1]
        assert abs(lo - 0.5) == abs(hi - 0.5)  # the primary key really ties
        assert tune_threshold(YT, YT.astype(float), grid=grid) == smaller


def test_tune_per_label_finds_different_thresholds():
    Y = np.array([[1, 1, 0], [0, 1, 0], [1, 0, 0], [0, 0, 0]])
    S = np.zeros(Y.shape, dtype=np.float32)
    S[:, 0] = np.where(Y[:, 0] == 1, 0.3, 0.2)  # optimum (0.2, 0.3] -> 0.3
    S[:, 1] = np.where(Y[:, 1] == 1, 0.8, 0.7)  # optimum (0.7, 0.8] -> 0.71
    S[:, 2] = [0.9, 0.1, 0.4, 0.6]  # no positive in validation -> keeps 0.5
    t = tune_threshold(Y, S, per_label=True)
    assert isinstance(t, np.ndarray) and t.dtype == np.float32 and t.shape == (3,)
    np.testing.assert_allclose(t, [0.3, 0.71, 0.5], atol=1e-6)
    # the returned thresholds reproduce the validation optimum exactly (even with float64 scores)
    for scores in (S, _separable(0.3, 0.2, Y).astype(np.float64)):
        tt = tune_threshold(Y[:, :1], scores[:, :1], per_label=True)
        assert evaluate(Y[:, :1], scores[:, :1], tt)["macro_f1"] == 1.0


def test_tune_threshold_is_pure():
    rng = np.random.default_rng(0)
    Y = (rng.random((20, 5)) < 0.3).astype(int)
    S = rng.random((20, 5))
    Y0, S0 = Y.copy(), S.copy()
    Y.setflags(write=False)
    S.setflags(write=False)
    state = np.random.get_state()[1].copy()
    a = tune_threshold(Y, S)
    evaluate(1 - Y0, 1 - S0)  # unrelated work in between changes nothing
    b = tune_threshold(Y, S)
    pa, pb = tune_threshold(Y, S, per_label=True), tune_threshold(Y, S, per_label=True)
    assert a == b
    np.testing.assert_array_equal(pa, pb)
    np.testing.assert_array_equal(Y, Y0)
    np.testing.assert_array_equal(S, S0)
    np.testing.assert_array_equal(np.random.get_state()[1], state)


def test_tune_threshold_chunked_equals_unchunked(monkeypatch):
    rng = np.random.default_rng(1)
    Y = (rng.random((30, 6)) < 0.4).astype(int)
    S = rng.random((30, 6))
    full = (tune_threshold(Y, S), tune_threshold(Y, S, per_label=True))
    monkeypatch.setattr(M, "_MAX_CELLS", 30 * 6 * 7)  # 7 grid values per chunk
    chunked = (tune_threshold(Y, S), tune_threshold(Y, S, per_label=True))
    assert full[0] == chunked[0]
    np.testing.assert_array_equal(full[1], chunked[1])


# --------------------------------------------------------------------------------------------------
# Bounds and properties
# --------------------------------------------------------------------------------------------------
def test_perfect_scores():
    Y = np.array([[1, 0, 1, 0], [0, 1, 0, 0], [1, 1, 0, 1], [0, 0, 1, 1]])
    S = np.where(Y == 1, 0.95, 0.05)
    out = evaluate(Y, S)
    assert out["example_f1"] == out["micro_f1"] == out["macro_f1"] == 1.0
    assert out["hamming_loss"] == 0.0 and out["subset_accuracy"] == 1.0
    assert out["ranking_loss"] == 0.0 and out["one_error"] == 0.0
    assert out["mAP"] == 1.0 and out["lrap"] == 1.0
    assert out["coverage"] == pytest.approx((1 + 0 + 2 + 1) / 4)  # mean(#true - 1)


@st.composite
def problems(draw, max_n=8, max_l=6):
    n = draw(st.integers(1, max_n))
    L = draw(st.integers(1, max_l))
    Y = np.array(draw(st.lists(st.lists(st.booleans(), min_size=L, max_size=L), min_size=n, max_size=n)))
    # scores from a coarse grid so that ties (and exact hits on the threshold) actually occur
    vals = st.one_of(st.sampled_from([0.0, 0.25, 0.5, 0.75, 1.0]), st.floats(0.0, 1.0))
    S = np.array(draw(st.lists(st.lists(vals, min_size=L, max_size=L), min_size=n, max_size=n)))
    return Y.astype(int).reshape(n, L), S.astype(float).reshape(n, L)


FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(problems())
def test_bounds(prob):
    Y, S = prob
    n, L = Y.shape
    out = evaluate(Y, S)
    for k in ("example_f1", "micro_f1", "macro_f1", "hamming_loss", "subset_accuracy",
              "ranking_loss", "lrap"):
        assert 0.0 <= out[k] <= 1.0, k
    assert out["lrap"] > 0.0
    assert 0.0 <= out["coverage"] <= L - 1
    assert math.isnan(out["mAP"]) == (not Y.any())
    if Y.any():
        assert 0.0 < out["mAP"] <= 1.0
    assert math.isnan(out["one_error"]) == (not Y.any(axis=1).any())
    if Y.any(axis=1).any():
        assert 0.0 <= out["one_error"] <= 1.0


@settings(max_examples=25, deadline=None)
@given(problems(), st.randoms(use_true_random=False))
def test_invariant_to_label_permutation(prob, rnd):
    Y, S = prob
    L = Y.shape[1]
    perm = list(range(L))
    rnd.shuffle(perm)
    thr = np.linspace(0.3, 0.7, L)
    a = evaluate(Y, S, thr)
    b = evaluate(Y[:, perm], S[:, perm], thr[perm])
    unique_top = all((row == row.max()).sum() == 1 for row in S)
    for k in METRICS:
        if k == "one_error" and not unique_top:
            continue  # top-score ties go to the first index, which a permutation moves
        assert a[k] == pytest.approx(b[k], abs=1e-12, nan_ok=True), k


@FAST
@given(problems(), st.floats(0.0, 1.0))
def test_micro_f1_is_2tp_over_2tp_fp_fn(prob, t):
    Y, S = prob
    P = S >= t
    tp = int(np.sum(P & (Y == 1)))
    fp = int(np.sum(P & (Y == 0)))
    fn = int(np.sum(~P & (Y == 1)))
    expected = 2 * tp / (2 * tp + fp + fn) if (2 * tp + fp + fn) else 0.0
    out = threshold_metrics(Y, P)
    assert out["micro_f1"] == pytest.approx(expected, abs=1e-12)
    # hamming loss is (fp + fn) / cells
    assert out["hamming_loss"] == pytest.approx((fp + fn) / Y.size, abs=1e-12)


def _example_f1_numpy(Y, P):
    """Independent oracle: mean over examples of 2|Y∩P| / (|Y| + |P|), 1 when both are empty."""
    tp = np.sum((Y == 1) & P, axis=1)
    denom = Y.sum(axis=1) + P.sum(axis=1)
    return float(np.mean(np.where(denom == 0, 1.0, 2 * tp / np.maximum(denom, 1))))


@settings(max_examples=40, deadline=None)
@given(problems())
def test_tuned_threshold_is_the_grid_argmax(prob):
    Y, S = prob
    grid = np.round(np.arange(0.1, 1.0, 0.1), 2)
    t = tune_threshold(Y, S, grid=grid)
    f = np.array([_example_f1_numpy(Y, S >= g) for g in grid])
    assert t in grid
    assert threshold_metrics(Y, S >= t)["example_f1"] == pytest.approx(f.max(), abs=1e-12)
    best = grid[np.isclose(f, f.max(), rtol=0, atol=1e-12)]
    assert abs(t - 0.5) == pytest.approx(np.abs(best - 0.5).min())
    # per-label: each label's F1 at its threshold is the best over the grid (labels with positives)
    tl = tune_threshold(Y, S, per_label=True, grid=grid)
    for j in range(Y.shape[1]):
        if not Y[:, j].any():
            assert tl[j] == np.float32(0.5)
            continue
        yj = Y[:, j]
        fj = [2 * np.sum(yj & (S[:, j] >= g)) / (yj.sum() + np.sum(S[:, j] >= g)) for g in
              grid.astype(np.float32).astype(float)]
        got = 2 * np.sum(yj & (S[:, j] >= tl[j])) / (yj.sum() + np.sum(S[:, j] >= tl[j]))
        assert got == pytest.approx(max(fj), abs=1e-12)


# --------------------------------------------------------------------------------------------------
# Input validation
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("Y", "S", "match"),
    [
        (Y3, S3[:, :3], r"scores: has shape \(3, 3\) but Y has shape \(3, 4\)"),
        (Y3[0], S3[0], r"Y_true: Expected 2D array, got 1D array"),
        (Y3, S3[None], r"scores: Found array with dim 3"),
        (Y3 * 2, S3, r"Y_true: contains value 2 -- expected a 2-D .* 0/1 indicator"),
        (Y3 - 0.5, S3, r"Y_true: contains value 0.5"),
        (Y3, np.where(S3 > 0.85, np.nan, S3), r"scores: .*NaN"),
        (Y3, np.where(S3 > 0.85, np.inf, S3), r"scores: .*infinity"),
        (Y3, S3 * 2, r"scores: values span \[0.2, 1.8\] -- expected .*probabilities in \[0, 1\]"),
        (np.zeros((0, 4)), np.zeros((0, 4)), r"Y_true: Found array with 0 sample"),
        ([["a", "b"]], [[0.1, 0.2]], r"Y_true: has non-numeric dtype"),
    ],
)
def test_bad_inputs_raise(Y, S, match):
    with pytest.raises(ValueError, match=match):
        evaluate(Y, S)


def test_bad_inputs_other_functions():
    with pytest.raises(ValueError, match=r"threshold: got shape \(3,\) -- expected a float or an array"):
        evaluate(Y3, S3, threshold=[0.5, 0.5, 0.5])
    with pytest.raises(ValueError, match=r"threshold: contains NaN"):
        evaluate(Y3, S3, threshold=float("nan"))
    with pytest.raises(ValueError, match=r"threshold: got 'x'"):
        evaluate(Y3, S3, threshold="x")
    threshold_metrics(Y3, S3 >= 0.5)  # bool predictions are fine, scores are not:
    with pytest.raises(ValueError, match=r"Y_pred: contains value 0.7"):
        threshold_metrics(Y3, np.full(Y3.shape, 0.7))
    with pytest.raises(ValueError, match=r"Y_pred: has shape"):
        threshold_metrics(Y3, Y3[:, :2])
    with pytest.raises(ValueError, match=r"scores: .*NaN"):
        ranking_metrics(Y3, np.full(Y3.shape, np.nan))
    with pytest.raises(ValueError, match=r"scores_val: values span"):
        tune_threshold(Y3, S3 + 1)
    with pytest.raises(ValueError, match=r"grid: got shape \(0,\)"):
        tune_threshold(Y3, S3, grid=[])
    with pytest.raises(ValueError, match=r"Y_val: contains value 3"):
        tune_threshold(Y3 * 3, S3)
    # the message is a single line
    with pytest.raises(ValueError) as exc:
        evaluate(Y3[0], S3[0])
    assert "\n" not in str(exc.value)


def test_single_label_and_single_positive_label():
    # L = 1: sklearn would read an (n, 1) column as a binary target; the module keeps multi-label semantics
    Y = np.array([[1], [0], [0], [1]])
    S = np.array([[0.9], [0.6], [0.2], [0.4]])
    out = evaluate(Y, S)
    # P = [1,1,0,0]; per example F1: 1, 0, 1 (empty/empty), 0  ->  1/2
    assert out["example_f1"] == pytest.approx(0.5)
    # TP 1, FP 1, FN 1 -> micro = macro = 2/4
    assert out["micro_f1"] == pytest.approx(0.5) and out["macro_f1"] == pytest.approx(0.5)
    assert out["hamming_loss"] == pytest.approx(0.5) and out["subset_accuracy"] == pytest.approx(0.5)
    # AP: ranked .9+ .6- .4+ .2-  ->  (1 + 2/3) / 2 = 5/6
    assert out["mAP"] == pytest.approx(5 / 6)
    assert (out["ranking_loss"], out["coverage"], out["one_error"], out["lrap"]) == (0.0, 0.0, 0.0, 1.0)
    # example F1 by threshold: t<=.2 -> [1,0,0,1] 1/2; (.2,.4] -> 1,0,1,1 = 3/4; (.4,.6] -> 1/2;
    # (.6,.9] -> 1,1,1,0 = 3/4.  Optimal grid set (.2,.4] ∪ (.6,.9]; nearest 0.5: 0.4 (vs 0.61)
    assert tune_threshold(Y, S) == pytest.approx(0.4)
    # only one label with positives: mAP is that label's AP
    Y2 = np.hstack([Y, np.zeros_like(Y)])
    S2 = np.hstack([S, S[::-1]])
    assert mean_average_precision(Y2, S2) == pytest.approx(5 / 6)


def test_a_tie_across_half_goes_to_the_smaller_threshold_on_the_default_grid():
    # 0.43 and 0.57 both reach the best example-F1 here (and nothing closer to 0.5 does); in floating point
    # |0.57 - 0.5| < |0.43 - 0.5|, which had made 0.57 win against the documented rule
    Y = np.array([[1, 1], [0, 1]])
    S = np.array([[0.43, 0.57], [0.56, 0.95]])
    assert tune_threshold(Y, S) == pytest.approx(0.43)
    for lo in np.round(np.arange(0.01, 0.5, 0.01), 2):  # every symmetric pair of the default grid
        assert tune_threshold(YT, _separable(1.0, 0.0, YT), grid=[lo, round(1 - lo, 2)]) == lo
