"""The theory tool's predicted self-distillation rounds agree with actually trained L2-penalised linear models.

For the squared loss the prediction is exact, so the only differences are float round-off (closed-form
training: 1e-9) and optimiser convergence (L-BFGS in float64: 1e-6).
"""

import numpy as np
import pytest
import torch

from mlkd.theory import gram_spectrum, predict_self_distillation, shrinkage_factors


def problem(n=40, d=8, L=3, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    Y = (X @ rng.normal(size=(d, L)) + rng.normal(size=(n, L)) > 0).astype(np.float64)
    return X, Y


def ridge_closed_form(X, targets, lam):
    """argmin_w (1/n)‖Xw − t‖² + λ‖w‖², solved in feature space (the tool works in sample space)."""
    n, d = X.shape
    return np.linalg.solve(X.T @ X + n * lam * np.eye(d), X.T @ targets)


def ridge_by_lbfgs(X, targets, lam):
    X_t, t = torch.as_tensor(X), torch.as_tensor(targets)
    w = torch.zeros(X.shape[1], targets.shape[1], dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w], max_iter=100, tolerance_grad=1e-11, tolerance_change=0.0,
                            line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = ((X_t @ w - t) ** 2).sum(0).mean() / X.shape[0] + lam * (w**2).sum(0).mean()
        loss.backward()
        return loss

    opt.step(closure)
    closure()
    assert float(w.grad.abs().max()) < 1e-9  # converged: the gradient vanishes
    return w.detach().numpy()


@pytest.mark.parametrize(("n", "d"), [(40, 8), (12, 30)])  # full column rank, and more features than rows
@pytest.mark.parametrize("lam", [0.01, 0.3])
def test_prediction_matches_closed_form_rounds(n, d, lam):
    X, Y = problem(n, d)
    predicted = predict_self_distillation(X, Y, lam, rounds=4)
    assert predicted.shape == (5, n, 3)
    targets = Y
    for t in range(5):  # round 0 fits the labels, round t + 1 fits round t's training outputs
        outputs = X @ ridge_closed_form(X, targets, lam)
        np.testing.assert_allclose(predicted[t], outputs, rtol=0, atol=1e-9)
        targets = outputs


def test_prediction_matches_models_trained_by_gradient_descent():
    X, Y = problem(30, 6, seed=1)
    lam = 0.05
    predicted = predict_self_distillation(X, Y, lam, rounds=3)
    targets = Y
    for t in range(4):
        outputs = X @ ridge_by_lbfgs(X, targets, lam)
        np.testing.assert_allclose(predicted[t], outputs, rtol=0, atol=1e-6)
        targets = outputs


def test_each_round_shrinks_the_label_signal_along_the_gram_eigenvectors():
    X, Y = problem(25, 5, seed=2)
    lam, n = 0.1, 25
    mu, U = gram_spectrum(X)
    assert np.allclose(np.sort(mu)[::-1], np.linalg.eigvalsh(X @ X.T)[::-1][: len(mu)])
    factors = shrinkage_factors(X, lam)
    assert np.allclose(factors, mu / (mu + n * lam)) and np.all((factors > 0) & (factors < 1))
    predicted = predict_self_distillation(X, Y[:, 0], lam, rounds=3)
    signal = U.T @ Y[:, 0]
    for t in range(4):
        assert np.allclose(U.T @ predicted[t], factors ** (t + 1) * signal)  # exponent t + 1 from the labels
        if t:  # … and t from the teacher's (round-0) outputs
            assert np.allclose(U.T @ predicted[t], factors**t * (U.T @ predicted[0]))
    norms = np.linalg.norm(predicted, axis=1)
    assert np.all(np.diff(norms) < 0)


def test_zero_penalty_is_projection_every_round():
    X, Y = problem(20, 4, seed=3)
    predicted = predict_self_distillation(X, Y, 0.0, rounds=2)
    projection = X @ np.linalg.lstsq(X, Y, rcond=None)[0]
    assert np.allclose(predicted, projection[None])


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((np.ones(3), np.ones(3), 0.1, 1), "X must be 2-D"),
        ((np.ones((3, 2)), np.ones((4, 1)), 0.1, 1), "Y must have shape"),
        ((np.ones((3, 2)), np.ones((3, 1)), -1.0, 1), "lam=-1.0 is invalid"),
        ((np.ones((3, 2)), np.ones((3, 1)), 0.1, -2), "rounds=-2 is invalid"),
        ((np.array([[np.nan, 1.0], [1.0, 2.0]]), np.ones((2, 1)), 0.1, 1), "X contains NaN or infinity"),
        ((np.ones((2, 2)), np.array([[np.inf], [0.0]]), 0.1, 1), "Y contains NaN or infinity"),
        ((np.ones((3, 2)), np.ones((3, 1)), "0.1", 1), "lam='0.1' is invalid"),
    ],
)
def test_bad_arguments_are_value_errors(args, match):
    with pytest.raises(ValueError, match=match):
        predict_self_distillation(*args)


def test_shrinkage_factors_check_their_penalty_and_features():
    assert np.allclose(shrinkage_factors(np.eye(3), np.array(0.1)), shrinkage_factors(np.eye(3), 0.1))  # 0-d array
    with pytest.raises(ValueError, match=r"lam=-1.0 is invalid; expected a finite number ≥ 0"):
        shrinkage_factors(np.eye(3), -1.0)
    with pytest.raises(ValueError, match="X contains NaN"):
        shrinkage_factors(np.array([[np.nan, 1.0]]), 0.1)
