"""Feature scaling fitted on the training part only (PROTOCOL.md §3)."""

from __future__ import annotations

import numpy as np
from sklearn.preprocessing import StandardScaler


def binary_columns(X: np.ndarray) -> np.ndarray:
    """Bool mask of columns whose values are all 0 or 1 (left unscaled)."""
    return np.all((X == 0) | (X == 1), axis=0)


class FeatureScaler:
    """Standardise numeric columns with training statistics; leave 0/1 columns as they are.

    Stored as two vectors (``mean``, ``scale``) so a saved model needs no pickled object. They have the
    training rows' precision: float32 rows give float32 statistics; float64 rows are standardised in float64
    before the result is cast to float32, so a feature with a large offset (a timestamp, a coordinate) keeps
    the differences that float32 would round away.
    """

    def __init__(self, mean: np.ndarray | None = None, scale: np.ndarray | None = None) -> None:
        self.mean, self.scale = mean, scale

    def fit(self, X: np.ndarray, binary: np.ndarray | None = None) -> FeatureScaler:
        binary = binary_columns(X) if binary is None else np.asarray(binary, dtype=bool)
        dtype = np.float64 if X.dtype == np.float64 else np.float32
        mean = np.zeros(X.shape[1], dtype=dtype)
        scale = np.ones(X.shape[1], dtype=dtype)
        numeric = ~binary
        if numeric.any():
            std = StandardScaler().fit(X[:, numeric])
            mean[numeric] = std.mean_
            scale[numeric] = std.scale_  # sklearn already maps zero variance to 1
        self.mean, self.scale = mean, scale
        return self

    def transform(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X).astype(self.mean.dtype, copy=False)  # rows in the precision the statistics have
        return ((X - self.mean) / self.scale).astype(np.float32, copy=False)
