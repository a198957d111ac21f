"""Synthetic label noise for the label-noise benchmark (METHODS.md §5). Test labels are never corrupted.

>>> Y_noisy = add_label_noise(Y_train, "missing", 0.2, seed=0)

Kinds, each seeded and vectorised, for rate η:
- "symmetric": every bit (positive or negative) is flipped independently with probability η.
- "missing": every positive is dropped (set to 0) independently with probability η; never creates a positive.
- "correlated": every positive j is, with probability η, MOVED to a label k that is negative in that row,
  drawn with probability ∝ P(k | j), the co-occurrence rate of k given j in Y itself (C = YᵀY,
  P(k | j) = C_jk / C_jj); if no negative label of the row ever co-occurs with j, k is uniform over the
  row's negatives; a row with no negative keeps its labels. So confusions follow label correlation, the
  number of positives is kept (up to two moves in a row landing on the same k) and exactly the selected
  positives are turned off.
"""

from __future__ import annotations

import numpy as np

KINDS = ("symmetric", "missing", "correlated")


def add_label_noise(Y, kind: str, rate: float, seed: int = 0) -> np.ndarray:
    """A corrupted copy of Y.

    Y : array-like of shape (n_samples, n_labels), 0/1. kind : "symmetric" | "missing" | "correlated".
    rate : η in [0, 1]. seed : the same seed and Y give the same noise. Returns uint8 (n_samples, n_labels).
    """
    Y = np.asarray(Y)
    if Y.ndim != 2:
        raise ValueError(f"Y must be a 2-D 0/1 label matrix (n_samples, n_labels); got shape {Y.shape}")
    if Y.size and not np.isin(Y, (0, 1)).all():
        raise ValueError("Y must contain only 0 and 1")
    if kind not in KINDS:
        raise ValueError(f"label noise kind={kind!r} is not valid; expected one of {list(KINDS)}")
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"label noise rate={rate!r} is out of range; expected a value in [0, 1]")
    Y = Y.astype(np.uint8)
    rng = np.random.default_rng(seed)
    if kind == "symmetric":
        return Y ^ (rng.random(Y.shape) < rate).astype(np.uint8)
    if kind == "missing":
        return Y & (rng.random(Y.shape) >= rate).astype(np.uint8)
    return _correlated(Y, rate, rng)


def add_train_val_noise(Y_train, Y_val, kind: str, rate: float, seed: int = 0):
    """(noisy Y_train, noisy Y_val): one draw over both stacked, so they share one noise process (and, for
    "correlated", one co-occurrence matrix); ``Y_val`` None gives (noisy Y_train, None). Test labels stay
    out of it: a model is selected on validation labels as noisy as a user's would be."""
    if Y_val is None:
        return add_label_noise(Y_train, kind, rate, seed), None
    noisy = add_label_noise(np.vstack([Y_train, Y_val]), kind, rate, seed)
    return noisy[: len(Y_train)], noisy[len(Y_train) :]


def cooccurrence_conditional(Y: np.ndarray) -> np.ndarray:
    """P of shape (L, L): P[j, k] = P(k positive | j positive) from Y's rows, P[j, j] = 0; 0 where j never occurs."""
    Yf = Y.astype(np.float64)
    counts = Yf.T @ Yf
    occurs = np.diag(counts).copy()
    P = np.divide(counts, occurs[:, None], out=np.zeros_like(counts), where=occurs[:, None] > 0)
    np.fill_diagonal(P, 0.0)
    return P


def _correlated(Y: np.ndarray, rate: float, rng: np.random.Generator) -> np.ndarray:
    rows, sources = np.nonzero(Y)
    chosen = rng.random(rows.shape[0]) < rate
    rows, sources = rows[chosen], sources[chosen]
    negatives = (1 - Y[rows]).astype(np.float64)  # (M, L): where each moved positive may land
    keep = negatives.sum(1) > 0
    rows, sources, negatives = rows[keep], sources[keep], negatives[keep]
    weights = cooccurrence_conditional(Y)[sources] * negatives
    uncorrelated = weights.sum(1) == 0
    weights[uncorrelated] = negatives[uncorrelated]
    cdf = np.cumsum(weights, axis=1)
    cdf /= cdf[:, -1:]  # last entry exactly 1, so a draw never lands past the last allowed label
    u = rng.random(rows.shape[0])[:, None]
    targets = (u >= cdf).sum(1)  # inverse CDF: the first label whose cumulative weight exceeds u
    out = Y.copy()
    out[rows, sources] = 0
    out[rows, targets] = 1
    return out
