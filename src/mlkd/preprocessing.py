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
            with np.errstate(over="ignore", invalid="ignore"):  # an overflow is reported below, once
                std = StandardScaler().fit(X[:, numeric])
            mean[numeric] = std.mean_
            scale[numeric] = std.scale_  # sklearn already maps zero variance to 1
        bad = np.flatnonzero(~(np.isfinite(mean) & np.isfinite(scale)))
        if len(bad):  # squares beyond float64 (|x| ≳ 1e154): the column would standardise to NaN or 0
            column = bad[0]
            raise ValueError(f"X column {column} has values too large to standardise (such as "
                             f"{np.abs(X[:, column]).max():g}); expected values whose squares fit in float64 "
                             "(|x| below about 1e150)")
        self.mean, self.scale = mean, scale
        return self

    def transform(self, X: np.ndarray, name: str = "X") -> np.ndarray:
        """``X`` standardised, as float32; a finite value whose standardised size float32 cannot hold is a
        ValueError (naming ``name``, its column and the value), never an inf or NaN input to the model."""
        X = np.asarray(X)
        with np.errstate(over="ignore"):  # an overflow is reported below
            scaled = X.astype(self.mean.dtype, copy=False) - self.mean  # in the precision the statistics have
            scaled /= self.scale  # in place: the same bits as a division into a new array, one copy fewer
            out = scaled.astype(np.float32, copy=False)
        if np.isinf(out).any():  # finite inputs (checked by the caller) that overflow float32
            rows, columns = np.nonzero(np.isinf(out) & np.isfinite(X))
            if len(rows):
                raise ValueError(f"{name} has a value too large for float32 after standardisation (column "
                                 f"{columns[0]}: {X[rows[0], columns[0]]:g}); expected values within float32's range "
                                 "(±3.4e38) once standardised with the training statistics")
        return out
