"""One fit over several processes (mlkd.distributed): DDP with sharded batches matches a single process."""

import numpy as np
import pytest

from mlkd import MultiLabelClassifier
from mlkd.methods.bce import BCE

from .helpers import linear_problem

# Dropout off: the comparison is then deterministic. DDP sums the global batch mean in another order
# (per-shard means, then an all-reduce average), so weights agree to float rounding, not bit for bit.
SETTINGS = dict(method="bce", hidden=32, dropout=0.0, batch_size=32, max_epochs=8, patience=50, lr=5e-3)


# 300 rows: every batch splits evenly over 2 ranks; 301: the last batch of 13 splits 7/6; 289 at batch 31:
# every batch splits 16/15 and the last has 10 rows; 257: the last batch has one row, so one rank has none.
@pytest.mark.parametrize("n_train, batch_size", [(300, 32), (301, 32), (289, 31), (257, 32)])
def test_two_processes_match_one_process_with_the_same_global_batch(n_train, batch_size):
    X, Y = linear_problem(n=n_train + 120, seed=1)
    X_val, Y_val = X[n_train:], Y[n_train:]
    settings = {**SETTINGS, "batch_size": batch_size}
    one = MultiLabelClassifier(**settings).fit(X[:n_train], Y[:n_train], X_val, Y_val)
    two = MultiLabelClassifier(**settings, nproc=2).fit(X[:n_train], Y[:n_train], X_val, Y_val)
    assert two.best_epoch_ == one.best_epoch_
    np.testing.assert_allclose([h["total"] for h in two.history_], [h["total"] for h in one.history_], rtol=1e-5)
    np.testing.assert_allclose(two.predict_proba(X), one.predict_proba(X), atol=1e-5)
    assert two.threshold_ == one.threshold_


@pytest.mark.parametrize("nproc", [0, -1, 1.5, True, "2"])
def test_a_bad_process_count_is_refused(nproc):
    X, Y = linear_problem(n=60)
    with pytest.raises(ValueError, match="nproc"):
        MultiLabelClassifier("bce", nproc=nproc, max_epochs=1).fit(X, Y)


def test_fit_ddp_takes_a_numpy_process_count_as_the_estimator_does():
    # fit_ddp refused nproc=np.int64(2) as "invalid; expected an integer ≥ 1"
    from mlkd.distributed import fit_ddp
    from mlkd.methods import build_method
    from mlkd.trainer import TrainConfig

    X, Y = linear_problem(n=60)
    method = build_method("bce", X.shape[1], Y.shape[1], {"hidden": 8})
    assert fit_ddp(method, X, Y, config=TrainConfig(max_epochs=1), nproc=np.int64(2)).epochs_run == 1
    with pytest.raises(ValueError, match="nproc"):
        fit_ddp(method, X, Y, config=TrainConfig(max_epochs=1), nproc=np.bool_(True))


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


# labelwise with backbone='cnn' was refused as "keeps per-row state", naming labelwise as the method to use
@pytest.mark.parametrize("method, params", [("c2ae", {}), ("cskd", {}), ("skdtea", {"alignment": "cca"}),
                                            ("labelwise", {"backbone": "cnn", "image_shape": "1,4,4"})])
def test_methods_whose_loss_couples_the_rows_of_a_batch_are_refused(method, params):
    # a shard would compute their batch-level term (a Gram matrix over the batch, partners within the batch)
    # over half the rows: another objective than the single-process fit
    X, Y = linear_problem(n=60, d=16)
    with pytest.raises(ValueError, match="couples the rows of a batch"):
        MultiLabelClassifier(method, nproc=2, **params).fit(X, Y)
    MultiLabelClassifier("skdtea", nproc=1, alignment="cca", max_epochs=1).fit(X, Y)  # one process is fine


def test_an_error_in_a_rank_is_raised_as_that_error():
    X, Y = linear_problem(n=120)
    with pytest.raises(FloatingPointError, match=r"^rank \d: training of 'mpvae' diverged"):
        MultiLabelClassifier("mpvae", nproc=2, lr=9.9, max_epochs=2).fit(X, Y)


def test_under_torchrun_nproc_must_be_the_number_of_processes(monkeypatch):
    # otherwise every rank would run its own single-process fit and the ranks would race on the outputs
    X, Y = linear_problem(n=60)
    for key, value in dict(RANK="1", WORLD_SIZE="2", LOCAL_RANK="1", MASTER_ADDR="127.0.0.1",
                           MASTER_PORT="29500").items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ValueError, match="WORLD_SIZE=2 processes; expected nproc=2"):
        MultiLabelClassifier("bce", max_epochs=1).fit(X, Y)
    # one process launched: nothing is spawned under torchrun, so nproc=2 trained in that one process
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setenv("LOCAL_RANK", "0")
    with pytest.raises(ValueError, match="WORLD_SIZE=1 processes; expected nproc=1"):
        MultiLabelClassifier("bce", max_epochs=1, nproc=2).fit(X, Y)


def _children(pid: int) -> set[int]:
    from pathlib import Path

    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.add(int(stat.parent.name))
    return found


@pytest.mark.skipif(not __import__("sys").platform.startswith("linux"), reason="reads /proc")
def test_terminating_the_parent_stops_its_ranks(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    script = tmp_path / "long.py"
    script.write_text(
        "from mlkd import MultiLabelClassifier\nfrom tests.helpers import linear_problem\n"
        "if __name__ == '__main__':\n    X, Y = linear_problem(n=3000)\n"
        "    MultiLabelClassifier('bce', max_epochs=10_000, patience=10_000, nproc=2).fit(X, Y)\n"
    )
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "PYTHONPATH": root, "TMPDIR": str(tmp_path)}
    parent = subprocess.Popen([sys.executable, str(script)], env=env, cwd=root)
    try:
        deadline = time.monotonic() + 60
        while len(_children(parent.pid)) < 2 and time.monotonic() < deadline:  # the ranks are spawned
            time.sleep(0.5)
        ranks = _children(parent.pid)
        assert len(ranks) >= 2, "the ranks did not start"
        time.sleep(2)
        parent.send_signal(signal.SIGTERM)
        assert parent.wait(timeout=30) != 0
        deadline = time.monotonic() + 20
        while any(os.path.exists(f"/proc/{pid}") for pid in ranks) and time.monotonic() < deadline:
            time.sleep(0.5)
        alive = [pid for pid in ranks if os.path.exists(f"/proc/{pid}")]
        assert not alive, f"ranks {alive} outlived their parent"
        assert not list(tmp_path.glob("mlkd-ddp-*")), "the fit's temporary folder was left behind"
    finally:
        parent.kill()


class _FailsOnRankOne(BCE):
    """bce whose second rank raises: the first rank then fails too, on a closed connection."""

    def step(self, batch, ctx):
        import torch.distributed as dist

        if dist.get_rank() == 1:
            raise ValueError("the shard of rank 1 is bad")
        return super().step(batch, ctx)


def test_the_rank_that_failed_first_is_the_error_raised():
    from mlkd.distributed import fit_ddp
    from mlkd.methods import build_method
    from mlkd.trainer import TrainConfig

    X, Y = linear_problem(n=120)
    method = build_method("bce", X.shape[1], Y.shape[1], {"hidden": 8})
    method.__class__ = _FailsOnRankOne
    with pytest.raises(ValueError, match=r"^rank 1: the shard of rank 1 is bad$"):
        fit_ddp(method, X, Y, config=TrainConfig(max_epochs=2), nproc=2)


class _KilledOnRankOne(BCE):
    """bce whose second rank is killed (SIGKILL, as the system's out-of-memory killer does): it leaves no error."""

    def step(self, batch, ctx):
        import os
        import signal

        import torch.distributed as dist

        if dist.get_rank() == 1:
            os.kill(os.getpid(), signal.SIGKILL)
        return super().step(batch, ctx)


def test_a_killed_rank_is_one_line_of_mlkd_fit_not_a_traceback():
    # it was a RuntimeError, which 'mlkd fit' shows as a traceback (its one-line errors are ValueError/OSError)
    from mlkd.distributed import fit_ddp
    from mlkd.methods import build_method
    from mlkd.trainer import TrainConfig

    X, Y = linear_problem(n=120)
    method = build_method("bce", X.shape[1], Y.shape[1], {"hidden": 8})
    method.__class__ = _KilledOnRankOne
    with pytest.raises(ChildProcessError, match=r"^rank 1 of the distributed fit ended without an error of its own "
                                                r"\(process 1 terminated with signal SIGKILL\)"):
        fit_ddp(method, X, Y, config=TrainConfig(max_epochs=2), nproc=2)


def _run_script(tmp_path, body: str):
    """``body`` run as a user's script (the main module: spawned ranks import it again)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    import mlkd

    script = tmp_path / "fit.py"
    script.write_text("from mlkd import MultiLabelClassifier\nfrom tests.helpers import linear_problem\n" + body)
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(mlkd.__file__).parents[1]), str(root)])}
    return subprocess.run([sys.executable, str(script)], env=env, cwd=root, capture_output=True, text=True,
                          timeout=120)


def test_a_script_without_a_main_guard_is_told_so(tmp_path):
    # a spawned rank imports the user's script again, whose unguarded fit then fails to spawn: the caller was told
    # that rank 0 had been killed, 'for instance by the system for lack of memory', which sent users the wrong way
    done = _run_script(tmp_path, "X, Y = linear_problem(n=120)\n"
                                 "MultiLabelClassifier('bce', hidden=8, max_epochs=2, nproc=2).fit(X, Y)\n")
    last = done.stderr.strip().splitlines()[-1]
    assert done.returncode == 1 and last.startswith("ChildProcessError: rank "), done.stderr
    assert "if __name__ == \"__main__\":" in last and "memory" not in last, last


def test_a_distributed_fit_leaves_no_semaphore_for_the_resource_tracker_to_warn_of(tmp_path):
    # each rank ends with os._exit(0), skipping multiprocessing's finalizers: the lock tqdm makes in every rank
    # stayed registered, and the caller's exit printed "resource_tracker: There appear to be 2 leaked semaphore
    # objects" after every successful 'mlkd fit --nproc 2'
    done = _run_script(tmp_path, "if __name__ == '__main__':\n    X, Y = linear_problem(n=120)\n"
                                 "    MultiLabelClassifier('bce', hidden=8, max_epochs=2, nproc=2).fit(X, Y)\n"
                                 "    print('fitted')\n")
    assert done.returncode == 0 and done.stdout.strip() == "fitted", done.stderr
    assert "leaked" not in done.stderr, done.stderr


class _ExitsOnRankOne(BCE):
    """bce whose second rank ends with exit code 1 in its first step (as a library's exit(1) or a sys.exit(1)
    in a method's code would): it leaves no error of its fit's, but its fit had begun."""

    def step(self, batch, ctx):
        import os

        import torch.distributed as dist

        if dist.get_rank() == 1:
            os._exit(1)
        return super().step(batch, ctx)


def test_a_rank_exiting_with_code_1_during_its_fit_is_not_blamed_on_a_missing_main_guard():
    # exit code 1 without an error file was read as 'before its fit began' (the unguarded script's re-import),
    # which sent a user whose rank failed mid-fit to add an 'if __name__' guard the script already had
    from mlkd.distributed import fit_ddp
    from mlkd.methods import build_method
    from mlkd.trainer import TrainConfig

    X, Y = linear_problem(n=120)
    method = build_method("bce", X.shape[1], Y.shape[1], {"hidden": 8})
    method.__class__ = _ExitsOnRankOne
    with pytest.raises(ChildProcessError) as info:
        fit_ddp(method, X, Y, config=TrainConfig(max_epochs=2), nproc=2)
    message = str(info.value)
    assert message.startswith("rank 1 of the distributed fit ended without an error of its own"), message
    assert "__main__" not in message and "before its fit began" not in message, message
