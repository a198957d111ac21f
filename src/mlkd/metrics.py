"""Multi-label evaluation metrics (PROTOCOL.md items 4 and 5).

Every metric that ``sklearn.metrics`` provides is computed with it; this module only fixes the
conventions for the degenerate cases, validates inputs, and adds threshold tuning.

Inputs
------
``Y_true`` is an ``(n, L)`` 0/1 indicator matrix (bool/int/float holding only 0 and 1).
``scores`` is an ``(n, L)`` finite real matrix with the same shape. Functions that apply a threshold
(:func:`evaluate`, :func:`tune_threshold`) additionally require ``scores`` in ``[0, 1]``
(probabilities); :func:`ranking_metrics` accepts any finite real scores (e.g. logits).
Invalid input raises ``ValueError`` with a one-line message saying what was wrong and what was expected.

Threshold-based metrics (predictions are ``scores >= threshold``; threshold scalar or per-label ``(L,)``)
---------------------------------------------------------------------------------------------------
* ``example_f1`` -- ``f1_score(average="samples", zero_division=1)``. An example with no true and no
  predicted label scores 1 (perfect agreement, MULAN's convention); an example with true labels but
  no predictions (or vice versa) scores 0.
* ``micro_f1`` -- ``f1_score(average="micro", zero_division=0)``: 2TP / (2TP + FP + FN) over all cells;
  0 in the degenerate case where Y_true and the predictions are both entirely empty.
* ``macro_f1`` -- ``f1_score(average="macro", zero_division=0)`` (computed as the mean of
  ``average=None``): averaged over ALL labels; a label with no positive in Y_true and none predicted
  counts as 0.
* ``hamming_loss`` -- ``hamming_loss``: fraction of wrong cells.
* ``subset_accuracy`` -- ``accuracy_score``: fraction of examples whose label set is predicted exactly.

Ranking metrics (computed from the scores, no threshold)
--------------------------------------------------------
* ``mAP`` -- macro ``average_precision_score`` over the labels with >= 1 positive in Y_true only; NaN
  if no label has a positive.
* ``ranking_loss`` -- ``label_ranking_loss`` (sklearn: examples with no true label, or all labels true,
  contribute 0 and are counted in the mean).
* ``coverage`` -- MULAN convention = sklearn ``coverage_error - 1``: how many steps down the ranking one
  must go to cover all true labels (0 for a perfect ranking of a single true label; #true - 1 for a
  perfect ranking in general). Examples with no true label contribute 0 (sklearn gives them 0 steps)
  and are counted in the mean.
* ``one_error`` -- fraction of examples whose top-scored label is not relevant; ties in the top score go
  to the first label index (``np.argmax``). Examples with no true label are EXCLUDED (NaN if every
  example has no true label).
* ``lrap`` -- ``label_ranking_average_precision_score`` (sklearn: examples with no true label, or all
  labels true, score 1).

Single-label input (L = 1) keeps these multi-label semantics (sklearn would read an (n, 1) column as a
binary target): ranking_loss 0, coverage 0, lrap 1, and the F1s/Hamming as if with L = 1.

Threshold tuning (:func:`tune_threshold`, a pure function of the validation data it is given):
default one global threshold maximising validation example_f1 over the grid 0.01, 0.02, ..., 0.99;
``per_label=True`` maximises each label's F1 (labels with no validation positive keep 0.5). Ties go to
the threshold closest to 0.5, then to the smaller one. Returns a float, or a float32 array (L,).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from sklearn import metrics as skm
from sklearn.utils.validation import check_array

__all__ = [
    "METRICS",
    "MetricInfo",
    "evaluate",
    "mean_average_precision",
    "ranking_metrics",
    "threshold_metrics",
    "tune_threshold",
    "DEFAULT_GRID",
]

#: The degenerate-case conventions above in one sentence, for the headers of the tables reports write
#: (PROTOCOL.md §5: "state it").
CONVENTIONS = (
    "mAP averages over the labels with a positive in test; macro-F1 over all labels, a label with no positive "
    "and none predicted counting 0; example-F1 scores 1 for a row with no true and no predicted label; "
    "coverage is MULAN's (sklearn's coverage_error − 1); one-error leaves out rows without a true label."
)


class MetricInfo(NamedTuple):
    """Description of one metric: display name, direction, and whether it needs a threshold."""

    display_name: str
    higher_is_better: bool
    needs_threshold: bool


METRICS: dict[str, MetricInfo] = {
    "example_f1": MetricInfo("Example-F1", True, True),
    "micro_f1": MetricInfo("Micro-F1", True, True),
    "macro_f1": MetricInfo("Macro-F1", True, True),
    "hamming_loss": MetricInfo("Hamming loss", False, True),
    "subset_accuracy": MetricInfo("Subset accuracy", True, True),
    "mAP": MetricInfo("mAP", True, False),
    "ranking_loss": MetricInfo("Ranking loss", False, False),
    "coverage": MetricInfo("Coverage", False, False),
    "one_error": MetricInfo("One-error", False, False),
    "lrap": MetricInfo("LRAP", True, False),
}

#: Default threshold grid of :func:`tune_threshold`: 0.01, 0.02, ..., 0.99.
DEFAULT_GRID: np.ndarray = np.arange(1, 100) / 100.0

# Max number of booleans materialised at once by the vectorised threshold search.
_MAX_CELLS = 50_000_000


# --------------------------------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------------------------------
def _check_2d(a, name: str, what: str) -> np.ndarray:
    """check_array wrapper turning sklearn's (multi-line) errors into a one-line ValueError."""
    try:
        # check_array's defaults reject NaN/inf; ensure_2d rejects 1-D/3-D input, min sizes reject empties.
        arr = check_array(a, accept_sparse=False, ensure_2d=True, allow_nd=False, dtype=None,
                          ensure_min_samples=1, ensure_min_features=1, input_name=name)
    except (ValueError, TypeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"{name}: {first.rstrip(':.')} -- expected {what}") from None
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise ValueError(f"{name}: has non-numeric dtype {arr.dtype} -- expected {what}")
    return arr


def _check_indicator(a, name: str) -> np.ndarray:
    what = "a 2-D (n_examples, n_labels) 0/1 indicator matrix"
    arr = _check_2d(a, name, what)
    if arr.dtype != bool and not np.isin(arr, (0, 1)).all():
        bad = arr[~np.isin(arr, (0, 1))].ravel()[0].item()
        raise ValueError(f"{name}: contains value {bad!r} -- expected {what}")
    return arr.astype(np.int8)


def _check_scores(a, name: str, shape: tuple[int, int], probabilities: bool) -> np.ndarray:
    what = ("a finite 2-D (n_examples, n_labels) array of probabilities in [0, 1]" if probabilities
            else "a finite 2-D (n_examples, n_labels) array of scores")
    arr = _check_2d(a, name, what).astype(np.float64)
    if arr.shape != shape:
        raise ValueError(f"{name}: has shape {arr.shape} but Y has shape {shape} -- expected equal shapes")
    if probabilities and (arr.min() < 0.0 or arr.max() > 1.0):
        raise ValueError(f"{name}: values span [{arr.min():.4g}, {arr.max():.4g}] -- expected {what}")
    return arr


def _check_threshold(threshold, n_labels: int) -> np.ndarray:
    try:
        t = np.asarray(threshold, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"threshold: got {threshold!r} -- expected a float or an array of shape "
                         f"({n_labels},)") from None
    if not (t.ndim == 0 or t.shape == (n_labels,)):
        raise ValueError(f"threshold: got shape {t.shape} -- expected a float or an array of shape "
                         f"({n_labels},)")
    if not np.isfinite(t).all():
        raise ValueError("threshold: contains NaN or inf -- expected finite values")
    if ((t < 0) | (t > 1)).any():  # the scores are probabilities: outside [0, 1] every label is 0 (or 1)
        raise ValueError(f"threshold: got {threshold!r} -- expected values in [0, 1], like the probabilities")
    return t


# --------------------------------------------------------------------------------------------------
# metrics
# --------------------------------------------------------------------------------------------------
def _threshold_metrics(Y: np.ndarray, P: np.ndarray, sample_weight=None) -> dict[str, float]:
    L = Y.shape[1]
    if L == 1:
        # sklearn reads an (n, 1) indicator as a *binary* target (samples-F1 refuses it, macro-F1 would
        # average over the classes 0 and 1). An all-zero extra column changes no example's or cell's
        # TP/FP/FN, so pad with one and rescale/slice the two metrics that see the column count.
        Y = np.hstack([Y, np.zeros_like(Y)])
        P = np.hstack([P, np.zeros_like(P)])
    w = sample_weight
    per_label = skm.f1_score(Y, P, average=None, zero_division=0, sample_weight=w)[:L]
    return {
        "example_f1": float(skm.f1_score(Y, P, average="samples", zero_division=1, sample_weight=w)),
        "micro_f1": float(skm.f1_score(Y, P, average="micro", zero_division=0, sample_weight=w)),
        # == f1_score(average="macro", zero_division=0) for L >= 2
        "macro_f1": float(np.mean(per_label)),
        "hamming_loss": float(skm.hamming_loss(Y, P, sample_weight=w)) * Y.shape[1] / L,
        "subset_accuracy": float(skm.accuracy_score(Y, P, sample_weight=w)),
    }


def _mean_average_precision(Y: np.ndarray, S: np.ndarray) -> float:
    keep = np.flatnonzero(Y.any(axis=0))
    if keep.size == 0:
        return float("nan")
    if keep.size == 1:  # a single column is a binary target for sklearn: pass it 1-D
        return float(skm.average_precision_score(Y[:, keep[0]], S[:, keep[0]]))
    return float(skm.average_precision_score(Y[:, keep], S[:, keep], average="macro"))


def _ranking_metrics(Y: np.ndarray, S: np.ndarray) -> dict[str, float]:
    n, L = Y.shape
    has_true = Y.any(axis=1)
    n_has = int(has_true.sum())
    if L == 1:
        # sklearn rejects a single-label target for these; with one label there is nothing to order:
        # no (relevant, irrelevant) pair -> loss 0; a true label is always ranked first -> coverage 0,
        # LRAP 1 (sklearn's value for "no" or "all labels relevant" rows).
        return {"mAP": _mean_average_precision(Y, S), "ranking_loss": 0.0, "coverage": 0.0,
                "one_error": 0.0 if n_has else float("nan"), "lrap": 1.0}
    if n_has:
        # sklearn's coverage_error gives examples without true labels 0; do the "- 1" only on the others.
        coverage = (float(skm.coverage_error(Y[has_true], S[has_true])) - 1.0) * n_has / n
        top = np.argmax(S[has_true], axis=1)
        one_error = float(np.mean(Y[has_true, top] == 0))
    else:
        coverage, one_error = 0.0, float("nan")
    return {
        "mAP": _mean_average_precision(Y, S),
        "ranking_loss": float(skm.label_ranking_loss(Y, S)),
        "coverage": coverage,
        "one_error": one_error,
        "lrap": float(skm.label_ranking_average_precision_score(Y, S)),
    }


def threshold_metrics(Y_true, Y_pred, sample_weight=None) -> dict[str, float]:
    """The five threshold-based metrics from a 0/1 prediction matrix.

    Returns ``{"example_f1", "micro_f1", "macro_f1", "hamming_loss", "subset_accuracy"}`` (METRICS order).
    Conventions: example_f1 uses ``zero_division=1`` -- an example with no true and no predicted label
    scores 1 (MULAN); micro_f1 is 0 if Y_true and Y_pred are both all-zero; macro_f1 averages over ALL
    labels, a label with no positive and none predicted counting 0 (``zero_division=0``).
    ``sample_weight`` (n,) weighs each example, as scikit-learn's metrics do.
    Raises ValueError unless both are 2-D 0/1 matrices of equal shape.
    """
    Y = _check_indicator(Y_true, "Y_true")
    P = _check_indicator(Y_pred, "Y_pred")
    if P.shape != Y.shape:
        raise ValueError(f"Y_pred: has shape {P.shape} but Y_true has shape {Y.shape} -- "
                         "expected equal shapes")
    return _threshold_metrics(Y, P, sample_weight)


def ranking_metrics(Y_true, scores) -> dict[str, float]:
    """The five ranking metrics: ``{"mAP", "ranking_loss", "coverage", "one_error", "lrap"}``.

    ``scores`` may be any finite reals (probabilities or logits); higher = more relevant.
    Conventions: mAP = macro average precision over labels with >= 1 positive in Y_true (NaN if none);
    ranking_loss and lrap are sklearn's (examples with no true label give 0 and 1 respectively);
    coverage = sklearn ``coverage_error - 1`` (MULAN; examples with no true label contribute 0);
    one_error excludes examples with no true label (NaN if none remain), top-score ties -> first index.
    """
    Y = _check_indicator(Y_true, "Y_true")
    S = _check_scores(scores, "scores", Y.shape, probabilities=False)
    return _ranking_metrics(Y, S)


def mean_average_precision(Y_true, scores) -> float:
    """Macro average precision (``sklearn.metrics.average_precision_score``) over the labels that have
    at least one positive in ``Y_true``; labels without positives are skipped. NaN if no label has one."""
    Y = _check_indicator(Y_true, "Y_true")
    S = _check_scores(scores, "scores", Y.shape, probabilities=False)
    return _mean_average_precision(Y, S)


def evaluate(Y_true, scores, threshold=0.5) -> dict[str, float]:
    """Every metric of :data:`METRICS`, in that order.

    ``Y_true``: (n, L) 0/1; ``scores``: (n, L) probabilities in [0, 1]; ``threshold``: a float or an
    (L,) array of per-label thresholds. Threshold-based metrics use ``scores >= threshold``.
    Conventions (see the module docstring): example_f1 = 1 for an example with no true and no predicted
    label; macro_f1 over ALL labels, empty-and-unpredicted labels count 0; micro_f1 = 0 when everything is
    empty; mAP over labels with >= 1 positive (NaN if none); coverage = sklearn ``coverage_error - 1``;
    one_error excludes examples with no true label (NaN if none remain), ties -> first index;
    ranking_loss / lrap are sklearn's.
    Raises ValueError on bad shapes, non-finite values, non-0/1 Y, scores outside [0, 1], bad threshold.
    """
    Y = _check_indicator(Y_true, "Y_true")
    S = _check_scores(scores, "scores", Y.shape, probabilities=True)
    t = _check_threshold(threshold, Y.shape[1])
    P = (S >= t).astype(np.int8)
    out = _threshold_metrics(Y, P)
    out.update(_ranking_metrics(Y, S))
    return {k: out[k] for k in METRICS}


# --------------------------------------------------------------------------------------------------
# threshold tuning
# --------------------------------------------------------------------------------------------------
def _pick(values: np.ndarray, grid: np.ndarray) -> float:
    """argmax of ``values`` over ``grid``; ties -> closest to 0.5, then the smaller threshold."""
    best = values.max()
    cand = np.flatnonzero(np.isclose(values, best, rtol=0.0, atol=1e-12))
    g = grid[cand]
    # the distance rounded: in binary floating point |0.57 − 0.5| < |0.43 − 0.5|, which made 0.57 win a tie
    order = np.lexsort((g, np.round(np.abs(g.astype(np.float64) - 0.5), 9)))
    return float(g[order[0]])


def tune_threshold(Y_val, scores_val, per_label: bool = False, grid=None):
    """Tune the decision threshold on validation data (a pure function of its arguments).

    ``per_label=False`` (default, PROTOCOL item 4): the single grid threshold maximising the validation
    example_f1 (same convention as :func:`evaluate`: an example with no true and no predicted label scores
    1); returns a python float. ``per_label=True``: for each label, the grid threshold maximising that
    label's F1 on validation; labels with no positive in validation keep 0.5; returns a float32 array (L,)
    -- the search then uses the grid rounded to float32, so the returned thresholds reproduce exactly the
    validation predictions they were chosen on.
    Ties -> the threshold closest to 0.5 (then the smaller). Predictions are ``scores >= t``.
    ``grid`` defaults to :data:`DEFAULT_GRID` (0.01, 0.02, ..., 0.99). Fully vectorised with numpy
    broadcasting, chunked over the grid so that at most ~5e7 booleans exist at once.
    """
    Y = _check_indicator(Y_val, "Y_val").astype(bool)
    S = _check_scores(scores_val, "scores_val", Y.shape, probabilities=True)
    g = DEFAULT_GRID if grid is None else np.asarray(grid, dtype=np.float64)
    if g.ndim != 1 or g.size == 0 or not np.isfinite(g).all():
        raise ValueError(f"grid: got shape {g.shape} -- expected a non-empty 1-D array of finite thresholds")
    if per_label:
        g = g.astype(np.float32).astype(np.float64)
    n, L = Y.shape
    chunk = max(1, _MAX_CELLS // (n * L))
    n_true_ex = Y.sum(axis=1)  # (n,)
    n_pos_lab = Y.sum(axis=0)  # (L,)
    vals = []
    for start in range(0, g.size, chunk):
        gc = g[start:start + chunk]
        pred = S[None, :, :] >= gc[:, None, None]  # (G, n, L)
        hit = pred & Y[None]
        if per_label:
            tp = hit.sum(axis=1)  # (G, L)
            denom = n_pos_lab[None, :] + pred.sum(axis=1)
            f = np.where(denom > 0, 2.0 * tp / np.maximum(denom, 1), 0.0)
            vals.append(f)
        else:
            tp = hit.sum(axis=2)  # (G, n)
            denom = n_true_ex[None, :] + pred.sum(axis=2)
            f = np.where(denom > 0, 2.0 * tp / np.maximum(denom, 1), 1.0)
            vals.append(f.mean(axis=1))
    F = np.concatenate(vals, axis=0)
    if not per_label:
        return _pick(F, g)
    out = np.full(L, 0.5, dtype=np.float32)
    for j in np.flatnonzero(n_pos_lab > 0):
        out[j] = _pick(F[:, j], g)
    return out
