"""Small synthetic multi-label problems and method-step inputs for fast tests."""

import numpy as np
import torch

from mlkd.methods import Batch, StepContext


def linear_problem(n=300, d=12, L=5, seed=0, noise=0.3):
    """Labels from thresholded random linear functions of Gaussian features: learnable, with label overlap."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)).astype(np.float32)
    W = rng.normal(size=(d, L))
    Y = (X @ W + noise * rng.normal(size=(n, L)) > 0.6).astype(np.uint8)
    Y[np.arange(0, n, 7), 0] = 1  # no empty label column even for tiny n
    return X, Y


TINY = dict(hidden=32, max_epochs=8, patience=5)


def batch_of(n=16, d=6, L=4, seed=0, positive_rate=0.4, mixed_first_row=False):
    """A random training batch; ``mixed_first_row`` guarantees one row with both positives and negatives."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    y = (torch.rand(n, L, generator=g) < positive_rate).float()
    if mixed_first_row:
        y[0] = torch.tensor([1.0, 0.0] * L)[:L]
    return Batch(x, y, torch.arange(n))


def ctx(epoch=0, max_epochs=10, seed=0):
    return StepContext(epoch=epoch, max_epochs=max_epochs, generator=torch.Generator().manual_seed(seed))
