"""One fit over several processes (mlkd.distributed): DDP with sharded batches matches a single process."""

import numpy as np
import pytest

from mlkd import MultiLabelClassifier

from .helpers import linear_problem

# Dropout off: the comparison is then deterministic. DDP sums the global batch mean in another order
# (per-shard means, then an all-reduce average), so weights agree to float rounding, not bit for bit.
SETTINGS = dict(method="bce", hidden=32, dropout=0.0, batch_size=32, max_epochs=8, patience=50, lr=5e-3)


def test_two_processes_match_one_process_with_the_same_global_batch():
    X, Y = linear_problem(n=420, seed=1)
    X_val, Y_val = X[300:], Y[300:]
    one = MultiLabelClassifier(**SETTINGS).fit(X[:300], Y[:300], X_val, Y_val)
    two = MultiLabelClassifier(**SETTINGS, nproc=2).fit(X[:300], Y[:300], X_val, Y_val)
    assert two.best_epoch_ == one.best_epoch_
    np.testing.assert_allclose([h["total"] for h in two.history_], [h["total"] for h in one.history_], rtol=1e-5)
    np.testing.assert_allclose(two.predict_proba(X), one.predict_proba(X), atol=1e-5)
    assert two.threshold_ == one.threshold_


@pytest.mark.parametrize("nproc", [0, -1, 1.5, True, "2"])
def test_a_bad_process_count_is_refused(nproc):
    X, Y = linear_problem(n=60)
    with pytest.raises(ValueError, match="nproc"):
        MultiLabelClassifier("bce", nproc=nproc, max_epochs=1).fit(X, Y)


def test_multi_stage_methods_and_checkpointing_are_refused_before_any_work(tmp_path):
    X, Y = linear_problem(n=60)
    with pytest.raises(ValueError, match="several stages"):
        MultiLabelClassifier("kdtea", nproc=2).fit(X, Y)
    with pytest.raises(ValueError, match="does not checkpoint"):
        MultiLabelClassifier("bce", nproc=2, checkpoint_dir=tmp_path / "ckpt").fit(X, Y)


def test_cli_fit_takes_nproc():
    from mlkd.cli import build_parser

    args = build_parser().parse_args(["fit", "emotions", "-m", "bce", "--nproc", "3"])
    assert args.nproc == 3
    assert build_parser().parse_args(["fit", "emotions", "-m", "bce"]).nproc == 1
