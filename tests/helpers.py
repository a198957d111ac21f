"""Small synthetic multi-label problems for fast tests."""

import numpy as np


def linear_problem(n=300, d=12, L=5, seed=0, noise=0.3):
    """Labels from thresholded random linear functions of Gaussian features: learnable, with label overlap."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)).astype(np.float32)
    W = rng.normal(size=(d, L))
    Y = (X @ W + noise * rng.normal(size=(n, L)) > 0.6).astype(np.uint8)
    Y[np.arange(0, n, 7), 0] = 1  # no empty label column even for tiny n
    return X, Y


TINY = dict(hidden=32, max_epochs=8, patience=5)
