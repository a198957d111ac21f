"""Iteratively stratified hold-out and k-fold splits for multi-label data (Sechidis et al., 2011).

Thin wrappers around ``iterstrat`` (the ``iterative-stratification`` package) that accept any 0/1
label matrix (labels without positives, a single label column), return sorted index arrays and are
deterministic for a given seed.
"""

from __future__ import annotations

import numpy as np

__all__ = ["validation_split", "kfold_splits"]


def _as_label_matrix(Y) -> np.ndarray:
    Y = np.asarray(Y)
    if Y.ndim == 1:
        Y = Y.reshape(-1, 1)
    if Y.ndim != 2:
        raise ValueError(f"Y must be a 2-D 0/1 label matrix (n_samples, n_labels), got shape {Y.shape}")
    if Y.size and not np.isin(Y, (0, 1)).all():
        raise ValueError("Y must contain only 0 and 1")
    Y = Y.astype(np.int8, copy=False)
    if Y.shape[1] < 2:
        # iterstrat only accepts 'multilabel-indicator' targets (>= 2 columns): add the complement so
        # that a single label (or none) is still stratified.
        extra = 1 - Y if Y.shape[1] == 1 else np.zeros((Y.shape[0], 2), dtype=np.int8)
        Y = np.hstack([Y, extra])
    return Y


def validation_split(Y, fraction: float = 1 / 6, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Split rows into (train_idx, val_idx), iteratively stratified on the labels.

    ``val_idx`` holds about ``fraction`` of the rows (at least one); both arrays are sorted int64
    and together cover every row exactly once. Deterministic for a given ``seed``.
    """
    Y = _as_label_matrix(Y)
    n = Y.shape[0]
    if n < 2:
        raise ValueError(f"validation_split needs at least 2 samples, got {n}")
    if not 0.0 < float(fraction) < 1.0:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    n_val = min(max(int(np.ceil(fraction * n)), 1), n - 1)
    from iterstrat.ml_stratifiers import MultilabelStratifiedShuffleSplit  # loads scikit-learn: on first use

    splitter = MultilabelStratifiedShuffleSplit(n_splits=1, test_size=n_val, random_state=seed)
    train, val = next(splitter.split(np.zeros((n, 1)), Y))
    train = np.sort(np.asarray(train, dtype=np.int64))
    val = np.sort(np.asarray(val, dtype=np.int64))
    # Iterative stratification only approximates the requested sizes; never return an empty side.
    if val.size == 0 or train.size == 0:
        rng = np.random.default_rng(seed)
        perm = rng.permutation(n)
        val = np.sort(perm[:n_val]).astype(np.int64)
        train = np.sort(perm[n_val:]).astype(np.int64)
    return train, val


def kfold_splits(Y, n_splits: int = 5, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """Iteratively stratified k-fold: a list of ``n_splits`` (train_idx, test_idx) pairs.

    The test folds partition the rows; index arrays are sorted int64. Deterministic for ``seed``.
    """
    Y = _as_label_matrix(Y)
    n = Y.shape[0]
    if isinstance(n_splits, bool) or int(n_splits) != n_splits or n_splits < 2:
        raise ValueError(f"n_splits must be an integer >= 2, got {n_splits!r}")
    n_splits = int(n_splits)
    if n_splits > n:
        raise ValueError(f"n_splits={n_splits} is more than the number of samples ({n})")
    from iterstrat.ml_stratifiers import MultilabelStratifiedKFold

    kf = MultilabelStratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    return [
        (np.sort(np.asarray(tr, dtype=np.int64)), np.sort(np.asarray(te, dtype=np.int64)))
        for tr, te in kf.split(np.zeros((n, 1)), Y)
    ]
