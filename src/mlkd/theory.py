"""What multi-round self-distillation does to a linear model: repeated shrinkage along the Gram eigenvectors.

Setting (METHODS.md §5): fixed features X (n × d), one label column y at a time, a linear model
f(x) = xᵀw fitted by L2-penalised least squares,

    w = argmin (1/n)·‖Xw − y‖² + λ·‖w‖²  =  (XᵀX + nλI)⁻¹Xᵀy,   so   f = Xw = S·y,   S = G(G + nλI)⁻¹,

with G = XXᵀ = Σ_j μ_j u_j u_jᵀ the Gram matrix (kernel ridge regression with the linear kernel). Round 0
fits the labels; round t + 1 fits round t's training outputs, the same estimator on new targets, so

    f_t = S^{t+1}·y = Σ_j (μ_j / (μ_j + nλ))^{t+1} ⟨u_j, y⟩ u_j.

Exponent convention: round t (t = 0 the teacher trained on labels, t ≥ 1 after t distillation rounds) has
exponent t + 1 relative to the labels, and exponent t relative to the teacher's outputs f_0 — METHODS.md's
"after t rounds … (μ_j/(μ_j + nλ))^t" counts from the teacher. Components of y outside X's column space
(μ_j = 0) are removed by round 0 already. This is exact for the squared loss; for BCE on σ-outputs it is the
linearised picture (Jeong & Chung's "label averaging among correlated instances"). No intercept: append a
constant column to X for one (it is then penalised like every weight).
"""

from __future__ import annotations

import numpy as np


def gram_spectrum(X) -> tuple[np.ndarray, np.ndarray]:
    """(μ, U): the non-zero eigenvalues of G = XXᵀ (descending) and their eigenvectors, shape (n, rank).

    From the thin SVD of X (X = U·diag(s)·Vᵀ, μ = s²), which never forms the n × n Gram matrix.
    """
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2:
        raise ValueError(f"X must be 2-D (n_samples, n_features); got shape {X.shape}")
    if not np.isfinite(X).all():
        raise ValueError("X contains NaN or infinity; expected finite features")
    U, s, _ = np.linalg.svd(X, full_matrices=False)
    rank = int(np.sum(s > s[:1].max(initial=0.0) * max(X.shape) * np.finfo(np.float64).eps))
    return s[:rank] ** 2, U[:, :rank]


def shrinkage_factors(X, lam: float) -> np.ndarray:
    """μ_j / (μ_j + nλ) for each non-zero Gram eigenvalue: the per-round multiplier of the label signal along u_j."""
    _check_lam(lam)
    mu, _ = gram_spectrum(X)
    return mu / (mu + np.asarray(X).shape[0] * lam)


def _check_lam(lam) -> None:
    number = not isinstance(lam, (bool, np.bool_)) and np.ndim(lam) == 0 and np.asarray(lam).dtype.kind in "iuf"
    if not (number and np.isfinite(lam) and lam >= 0):
        raise ValueError(f"lam={lam!r} is invalid; expected a finite number ≥ 0")


def predict_self_distillation(X, Y, lam: float, rounds: int) -> np.ndarray:
    """Predicted training outputs of rounds 0 … ``rounds`` of self-distillation with L2-penalised least squares.

    X : array-like of shape (n_samples, n_features); Y : array-like of shape (n_samples, n_labels) or
    (n_samples,), the round-0 targets (0/1 labels or any reals). lam : λ ≥ 0 in (1/n)·‖Xw − y‖² + λ·‖w‖².
    rounds : number of distillation rounds R ≥ 0.
    Returns F of shape (R + 1, n_samples, n_labels) (or (R + 1, n_samples) for a 1-D Y) with
    F[t] = (G(G + nλI)⁻¹)^{t+1}·Y, the outputs on the training rows of the model of round t.
    """
    X = np.asarray(X, dtype=np.float64)
    Y = np.asarray(Y, dtype=np.float64)
    if X.ndim != 2:
        raise ValueError(f"X must be 2-D (n_samples, n_features); got shape {X.shape}")
    if Y.ndim not in (1, 2) or Y.shape[0] != X.shape[0]:
        raise ValueError(f"Y must have shape (n_samples,) or (n_samples, n_labels) with n_samples={X.shape[0]}; "
                         f"got {Y.shape}")
    if not np.isfinite(Y).all():
        raise ValueError("Y contains NaN or infinity; expected finite targets")
    _check_lam(lam)
    if int(rounds) != rounds or rounds < 0:
        raise ValueError(f"rounds={rounds!r} is invalid; expected an integer ≥ 0")
    mu, U = gram_spectrum(X)
    factors = mu / (mu + X.shape[0] * lam)
    coefficients = U.T @ Y  # ⟨u_j, y⟩ per label
    powers = factors[None, :] ** np.arange(1, int(rounds) + 2)[:, None]  # (R + 1, rank): exponent t + 1
    if Y.ndim == 1:
        return (powers * coefficients[None, :]) @ U.T
    return np.einsum("nj,tj,jl->tnl", U, powers, coefficients)
