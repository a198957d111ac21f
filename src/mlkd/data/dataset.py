"""In-memory containers for multi-label data."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["MultiLabelDataset", "BenchmarkData"]


FLOAT32_TOLERANCE = 1e-4  # largest float32 rounding of a column, relative to its standard deviation


def first_repeated(names) -> str | None:
    """The first name that occurs a second time in ``names`` (None when all are distinct): columns and labels
    are matched by name, so a repeated one cannot be told apart."""
    seen: set = set()
    return next((name for name in names if name in seen or seen.add(name)), None)


def features_dtype(X: np.ndarray) -> type:
    """float32, unless ``X`` is float64 and float32 would round some column by more than
    ``FLOAT32_TOLERANCE`` of its standard deviation (or overflow it): then float64, which the estimator
    standardises in float64. Integers wider than 16 bits are judged as float64 (float32 holds them exactly only
    up to 2**24: integer timestamps would collapse)."""
    if X.dtype.kind in "iu" and X.dtype.itemsize > 2 and X.size:
        # float32 holds every integer up to 2**24 exactly: only the columns beyond are judged, so that counts and
        # 0/1 columns cost no float64 copies of the whole matrix
        wide = X.max(axis=0) > 2**24
        if X.dtype.kind == "i":
            wide |= X.min(axis=0) < -(2**24)
        X = X[:, wide].astype(np.float64)
    if X.dtype != np.float64 or X.size == 0:
        return np.float32
    with np.errstate(over="ignore", invalid="ignore"):
        error = np.abs(X.astype(np.float32).astype(np.float64) - X).max(axis=0)
        spread = X.std(axis=0)
    return _rounding_dtype(error, spread)


def sparse_features_dtype(values: np.ndarray, cols: np.ndarray, n_rows: int, n_cols: int) -> type:
    """``features_dtype`` of the (n_rows, n_cols) matrix whose nonzero entries are float64 ``values`` at
    columns ``cols`` (any rows), without building it."""
    if values.size == 0 or n_rows == 0:
        return np.float32
    with np.errstate(over="ignore", invalid="ignore"):
        error = np.zeros(n_cols)
        np.maximum.at(error, cols, np.abs(values.astype(np.float32).astype(np.float64) - values))
        mean = np.bincount(cols, values, minlength=n_cols) / n_rows
        spread = np.sqrt(np.maximum(np.bincount(cols, values * values, minlength=n_cols) / n_rows - mean**2, 0.0))
    return _rounding_dtype(error, spread)


def _rounding_dtype(error: np.ndarray, spread: np.ndarray) -> type:
    return np.float64 if bool(((error > FLOAT32_TOLERANCE * spread) & (error > 0)).any()) else np.float32


@dataclass(eq=False, repr=False)
class MultiLabelDataset:
    """A multi-label data set: dense features ``X`` and a 0/1 label matrix ``Y``.

    ``X`` is coerced to float32 (n_samples, n_features) — or float64 (from float64 or integer input) where float32
    would round a column by more than 1e-4 of its standard deviation (a timestamp, a coordinate: ``features_dtype``) —
    and ``Y`` to uint8 (n_samples, n_labels) holding only 0 and 1. ``binary_features`` is a bool mask over
    the feature columns that is True where the column comes from a 0/1 attribute ({0,1}, {YES,NO}, one-hot
    of a nominal): the file's declaration, kept for the user; a fit does not read it but
    leaves every column that holds only 0 and 1 in its training rows unscaled (``preprocessing.binary_columns``,
    PROTOCOL §3), declared or not. ``images`` holds (n, 1, H, W)
    float32 images for image data sets (digits-ml) and is None otherwise.
    """

    X: np.ndarray
    Y: np.ndarray
    feature_names: list[str]
    label_names: list[str]
    name: str = ""
    binary_features: np.ndarray | None = None
    images: np.ndarray | None = field(default=None)

    def __post_init__(self) -> None:
        X = np.asarray(self.X)
        Y = np.asarray(self.Y)
        if X.ndim != 2:
            raise ValueError(f"MultiLabelDataset {self.name!r}: X must be 2-D, got shape {X.shape}")
        if Y.ndim != 2:
            raise ValueError(f"MultiLabelDataset {self.name!r}: Y must be 2-D, got shape {Y.shape}")
        if X.shape[0] != Y.shape[0]:
            raise ValueError(
                f"MultiLabelDataset {self.name!r}: X has {X.shape[0]} rows but Y has {Y.shape[0]}"
            )
        if Y.dtype != np.uint8:
            if Y.size and not np.isin(Y, (0, 1)).all():
                raise ValueError(f"MultiLabelDataset {self.name!r}: Y must contain only 0 and 1")
            Y = Y.astype(np.uint8)
        elif Y.size and Y.max(initial=0) > 1:
            raise ValueError(f"MultiLabelDataset {self.name!r}: Y must contain only 0 and 1")
        self.X = X.astype(features_dtype(X), copy=False)
        self.Y = Y
        self.feature_names = [str(n) for n in self.feature_names]
        self.label_names = [str(n) for n in self.label_names]
        if len(self.feature_names) != X.shape[1]:
            raise ValueError(
                f"MultiLabelDataset {self.name!r}: {len(self.feature_names)} feature names for "
                f"{X.shape[1]} feature columns"
            )
        if len(self.label_names) != Y.shape[1]:
            raise ValueError(
                f"MultiLabelDataset {self.name!r}: {len(self.label_names)} label names for "
                f"{Y.shape[1]} label columns"
            )
        if self.binary_features is not None:
            bf = np.asarray(self.binary_features, dtype=bool)
            if bf.shape != (X.shape[1],):
                raise ValueError(
                    f"MultiLabelDataset {self.name!r}: binary_features must have shape "
                    f"({X.shape[1]},), got {bf.shape}"
                )
            self.binary_features = bf
        if self.images is not None:
            im = np.asarray(self.images).astype(np.float32, copy=False)
            if im.ndim != 4 or im.shape[0] != X.shape[0]:
                raise ValueError(
                    f"MultiLabelDataset {self.name!r}: images must have shape (n_samples, C, H, W) "
                    f"with n_samples={X.shape[0]}, got {im.shape}"
                )
            self.images = im

    @property
    def n_samples(self) -> int:
        return int(self.X.shape[0])

    @property
    def n_features(self) -> int:
        return int(self.X.shape[1])

    @property
    def n_labels(self) -> int:
        return int(self.Y.shape[1])

    @property
    def cardinality(self) -> float:
        """Mean number of relevant labels per example (0.0 for an empty set)."""
        if self.n_samples == 0:
            return 0.0
        return float(self.Y.sum(axis=1, dtype=np.int64).mean())

    def subset(self, idx) -> MultiLabelDataset:
        """Rows ``idx`` (integer indices or a boolean mask) as a new data set (arrays are copied)."""
        idx = np.asarray(idx)
        if idx.dtype == bool:
            if idx.shape != (self.n_samples,):
                raise ValueError(f"subset: boolean mask has shape {idx.shape}, expected ({self.n_samples},)")
            idx = np.flatnonzero(idx)
        else:
            idx = idx.astype(np.intp, copy=False).reshape(-1)
        return MultiLabelDataset(
            X=self.X[idx],
            Y=self.Y[idx],
            feature_names=list(self.feature_names),
            label_names=list(self.label_names),
            name=self.name,
            binary_features=None if self.binary_features is None else self.binary_features.copy(),
            images=None if self.images is None else self.images[idx],
        )

    def columns(self, features=None, labels=None) -> MultiLabelDataset:
        """The data set with feature columns ``features`` and label columns ``labels`` (integer indices, in
        the order given; None keeps them all) as a new data set (arrays are copied)."""
        f = np.arange(self.n_features) if features is None else np.asarray(features, dtype=np.intp).reshape(-1)
        k = np.arange(self.n_labels) if labels is None else np.asarray(labels, dtype=np.intp).reshape(-1)
        return MultiLabelDataset(
            X=self.X[:, f],
            Y=self.Y[:, k],
            feature_names=[self.feature_names[i] for i in f] if self.feature_names else [],
            label_names=[self.label_names[i] for i in k] if self.label_names else [],
            name=self.name,
            binary_features=None if self.binary_features is None else self.binary_features[f],
            images=None if self.images is None or features is not None else self.images.copy(),
        )

    def copy(self) -> MultiLabelDataset:
        """A deep copy (arrays included)."""
        return self.subset(np.arange(self.n_samples))

    def __repr__(self) -> str:
        extra = "" if self.images is None else f", images={tuple(self.images.shape)}"
        return (
            f"MultiLabelDataset(name={self.name!r}, n_samples={self.n_samples}, "
            f"n_features={self.n_features}, n_labels={self.n_labels}{extra})"
        )


@dataclass(eq=False)
class BenchmarkData:
    """An official train/test split of a benchmark data set."""

    name: str
    train: MultiLabelDataset
    test: MultiLabelDataset
