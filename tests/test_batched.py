"""Many small fits at once (mlkd.batched) and the vectorised validation mAP the trainer stops on."""

import numpy as np
import pytest
import torch

from mlkd.batched import fit_seeds
from mlkd.methods import REGISTRY, build_method
from mlkd.methods.bce import BCE
from mlkd.metrics import mean_average_precision
from mlkd.trainer import TrainConfig, Trainer, _validation_score, fast_mean_average_precision, predict_logits

from .helpers import linear_problem


def test_torch_map_equals_sklearn_map_with_ties_and_empty_labels():
    rng = np.random.default_rng(0)
    worst = 0.0
    for trial in range(150):
        n, L = int(rng.integers(1, 120)), int(rng.integers(1, 12))
        Y = (rng.random((n, L)) < rng.random() * 0.6).astype(np.uint8)
        scores = rng.random((n, L)).astype(np.float32)
        if trial % 3 == 0:
            scores = np.round(scores, 1)  # many ties
        elif trial % 3 == 1:
            scores = (1 / (1 + np.exp(-rng.normal(scale=30, size=(n, L))))).astype(np.float32)  # saturated at 0/1
        if trial % 5 == 0:
            scores = np.round(rng.normal(size=(n, L)), 1).astype(np.float32) * 1e3  # logits: negative, ±0.0, ties
        expected = mean_average_precision(Y, scores)
        got = fast_mean_average_precision(torch.as_tensor(Y).float(), torch.as_tensor(scores))
        if np.isnan(expected):
            assert np.isnan(got)
        else:
            worst = max(worst, abs(got - expected))
    assert worst < 1e-12


def _problem():
    X, Y = linear_problem(n=300, seed=2)
    return X[:200], Y[:200], X[200:], Y[200:]


def test_each_member_matches_its_sequential_fit_when_the_method_draws_no_random_numbers():
    X, Y, Xv, Yv = _problem()
    params = {"hidden": 32, "dropout": 0.0}
    cfg = dict(max_epochs=60, patience=3, lr=2e-2, batch_size=16)  # overfits fast: members stop at different epochs
    fits = fit_seeds("bce", X, Y, Xv, Yv, seeds=[0, 1, 2], params=params, config=TrainConfig(**cfg))
    for seed, (model, result) in zip([0, 1, 2], fits, strict=True):
        alone = build_method("bce", X.shape[1], Y.shape[1], params, seed=seed)
        expected = Trainer(TrainConfig(**cfg, seed=seed)).fit(alone, X, Y, Xv, Yv)
        assert result.stopped_early and result.epochs_run == expected.epochs_run
        assert result.best_epoch == expected.best_epoch
        assert result.best_score == pytest.approx(expected.best_score, abs=1e-6)
        # same init, batch order and update; only the float summation order of bmm vs mm differs
        assert torch.allclose(predict_logits(model, X), predict_logits(alone, X), atol=1e-3)


def test_members_stop_on_their_own_and_end_at_their_best_validation_state():
    X, Y, Xv, Yv = _problem()
    fits = fit_seeds("skdtea", X, Y, Xv, Yv, seeds=[3, 4, 5, 6], params={"hidden": 32},
                     config=TrainConfig(max_epochs=40, patience=4, lr=1e-2, batch_size=32))
    for model, result in fits:
        assert result.stopped_early and result.epochs_run == result.best_epoch + 1 + 4
        restored = mean_average_precision(Yv, torch.sigmoid(predict_logits(model, Xv)).numpy())
        # The best score was computed on vmapped (bmm) logits, the restored member's on mm: the last-bit
        # difference can swap one near-tied pair of validation scores on some CPUs (8.7e-6 of mAP on an
        # AMD EPYC), while the states after the best epoch are >= 2e-3 away: 1e-4 tells them apart.
        assert restored == pytest.approx(result.best_score, abs=1e-4)
        later = [row["val_score"] for row in result.history[result.best_epoch + 1:]]
        assert all(abs(restored - result.best_score) < abs(restored - v) for v in later)
        assert restored > Yv.mean() + 0.2  # far above chance (the label prevalence)
    assert len({result.epochs_run for _, result in fits}) > 1 or len(fits) == 1


def test_without_validation_every_member_runs_max_epochs():
    X, Y, _, _ = _problem()
    fits = fit_seeds("bce", X, Y, seeds=[0, 1], params={"hidden": 8}, config=TrainConfig(max_epochs=3))
    assert [r.epochs_run for _, r in fits] == [3, 3]


class _BlowsUpOnItsStep(BCE):
    """BCE plus a finite term whose gradient is NaN (√ at 0 times 0): its step leaves NaN weights behind."""

    name = "blows_up"

    def step(self, batch, ctx):
        out = super().step(batch, ctx)
        out.losses["bce"] = out.losses["bce"] + torch.sqrt(out.logits.sum() * 0.0)
        return out


@pytest.mark.parametrize("validation", [True, False])
def test_a_member_whose_last_update_leaves_nan_predictions_is_reported_not_kept(validation, monkeypatch):
    monkeypatch.setitem(REGISTRY, _BlowsUpOnItsStep.name, _BlowsUpOnItsStep)
    X, Y, Xv, Yv = _problem()
    val = (Xv, Yv) if validation else ()
    rows = "validation" if validation else "training"
    with pytest.raises(FloatingPointError, match=rf"\(seed 0\) diverged at epoch 0 .*{rows} rows are NaN"):
        fit_seeds("blows_up", X, Y, *val, seeds=[0, 1], params={"hidden": 8},
                  config=TrainConfig(max_epochs=1, batch_size=len(X)))  # one step: its losses are finite


class _CountsPredictionRows(BCE):
    """BCE that records how many rows each prediction (an eval-mode forward) holds."""

    name = "counts_prediction_rows"
    rows: list = []

    def forward(self, x):
        if not self.training:
            type(self).rows.append(x.shape[0])
        return super().forward(x)


def test_the_final_check_without_validation_predicts_in_bounded_chunks(monkeypatch):
    # all training rows through all members at once held K × n × labels (× embed_dim for label embeddings):
    # on delicious, gigabytes more than the fit needed, at its very end; predict_logits bounds a pass at 8192 rows
    monkeypatch.setitem(REGISTRY, _CountsPredictionRows.name, _CountsPredictionRows)
    monkeypatch.setattr(_CountsPredictionRows, "rows", [])
    X, Y = linear_problem(n=9000, seed=2)
    fits = fit_seeds("counts_prediction_rows", X, Y, seeds=[0, 1], params={"hidden": 4},
                     config=TrainConfig(max_epochs=1, batch_size=len(X)))
    assert len(fits) == 2 and sum(_CountsPredictionRows.rows) == len(X)
    assert 2 * max(_CountsPredictionRows.rows) <= 8192


def test_the_validation_pass_predicts_in_bounded_chunks(monkeypatch):
    # each epoch's validation forward held every member's activations for all validation rows at once; it is
    # now bounded as predict_logits bounds a pass (8192 rows over all members) and scores the same rows
    monkeypatch.setitem(REGISTRY, _CountsPredictionRows.name, _CountsPredictionRows)
    monkeypatch.setattr(_CountsPredictionRows, "rows", [])
    X, Y = linear_problem(n=200, seed=2)
    Xv, Yv = linear_problem(n=9000, seed=3)
    fits = fit_seeds("counts_prediction_rows", X, Y, Xv, Yv, seeds=[0, 1], params={"hidden": 4},
                     config=TrainConfig(max_epochs=1, batch_size=len(X)))
    assert sum(_CountsPredictionRows.rows) == len(Xv) and 2 * max(_CountsPredictionRows.rows) <= 8192
    for model, result in fits:  # the chunks' scores are the whole validation set's, member by member
        logits = predict_logits(model, torch.as_tensor(Xv))
        expected = _validation_score(logits, torch.as_tensor(Yv, dtype=torch.float32), "mAP")[-1]
        assert result.best_score == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("method, reason", [("kdtea", "several stages"), ("pskd", "buffers")])
def test_methods_with_stages_or_per_row_state_are_refused(method, reason):
    X, Y, Xv, Yv = _problem()
    with pytest.raises(ValueError, match=reason):
        fit_seeds(method, X, Y, Xv, Yv, seeds=[0, 1])


# a float or a numeric string was truncated to another seed (0.5 and 1.7 trained seeds 0 and 1), a bool was a
# seed, and -1 or 2**63 trained where Trainer.fit refuses the seed
@pytest.mark.parametrize("seeds", [[1, 1], [], [0.5, 1.7], [1.0], ["0", "1"], "01", [True, False], [-1], [2**63]])
def test_bad_seeds_are_refused(seeds):
    X, Y, Xv, Yv = _problem()
    with pytest.raises(ValueError, match="distinct integers"):
        fit_seeds("bce", X, Y, Xv, Yv, seeds=seeds, config=TrainConfig(max_epochs=1))


def test_seeds_may_be_numpy_integers():
    X, Y, _, _ = _problem()
    fits = fit_seeds("bce", X, Y, seeds=np.arange(2), params={"hidden": 8}, config=TrainConfig(max_epochs=1))
    assert len(fits) == 2
