"""The trainer: determinism, early stopping with best-state restore, per-term logging, clear failures."""

import copy
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mlkd.methods import Method, MethodConfig, StepOutput, build_method
from mlkd.metrics import mean_average_precision
from mlkd.trainer import EARLY_STOPPING_RULE, TrainConfig, Trainer, _improves, _validation_score, predict_logits

from .helpers import linear_problem


def _fit(seed, epochs=6, name="skdtea"):
    X, Y = linear_problem(n=200, seed=1)
    m = build_method(name, X.shape[1], Y.shape[1], {"hidden": 32}, seed=seed)
    res = Trainer(TrainConfig(max_epochs=epochs, seed=seed, batch_size=32)).fit(m, X[:150], Y[:150], X[150:], Y[150:])
    return m, res, predict_logits(m, X)


def test_same_seed_gives_bit_identical_predictions():
    _, r1, p1 = _fit(seed=7)
    _, r2, p2 = _fit(seed=7)
    assert torch.equal(p1, p2)
    assert [h["total"] for h in r1.history] == [h["total"] for h in r2.history]
    _, _, p3 = _fit(seed=8)
    assert not torch.equal(p1, p3)


def test_trainer_leaves_the_global_rng_untouched():
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    _fit(seed=1, epochs=2)
    assert torch.equal(before, torch.random.get_rng_state())


def test_every_loss_term_is_logged_per_epoch_and_total_is_their_sum():
    _, res, _ = _fit(seed=0, epochs=3)
    assert len(res.history) == 3
    for row in res.history:
        assert {"student", "reconstruction", "total", "val_score", "seconds"} <= set(row)
        assert row["total"] == pytest.approx(row["student"] + row["reconstruction"], rel=1e-5)


def test_early_stopping_restores_the_best_validation_state():
    X, Y = linear_problem(n=200, seed=2)
    m = build_method("bce", X.shape[1], Y.shape[1], {"hidden": 64, "dropout": 0.0}, seed=0)
    cfg = TrainConfig(max_epochs=200, patience=3, seed=0, lr=2e-2, batch_size=16)  # overfits fast
    res = Trainer(cfg).fit(m, X[:100], Y[:100], X[100:], Y[100:])
    assert res.stopped_early and res.epochs_run == res.best_epoch + 1 + cfg.patience
    val_scores = [h["val_score"] for h in res.history]
    assert res.best_score == max(val_scores) == val_scores[res.best_epoch]
    restored = mean_average_precision(Y[100:], torch.sigmoid(predict_logits(m, X[100:])).numpy())
    assert restored == pytest.approx(res.best_score, abs=1e-6)


def test_without_validation_it_trains_for_max_epochs():
    X, Y = linear_problem(n=60)
    m = build_method("bce", X.shape[1], Y.shape[1], {"hidden": 8}, seed=0)
    res = Trainer(TrainConfig(max_epochs=4)).fit(m, X, Y)
    assert res.epochs_run == 4 and not res.stopped_early


class _Diverging(Method):
    name = "diverging"
    Config = MethodConfig

    def __init__(self, n_features, n_labels, config):
        super().__init__(n_features, n_labels, config)
        self.lin = torch.nn.Linear(n_features, n_labels)

    def forward(self, x):
        return self.lin(x)

    def step(self, batch, ctx):
        z = self.lin(batch.x)
        return StepOutput({"bad": F.binary_cross_entropy_with_logits(z, batch.y) * float("nan")}, z)


def test_divergence_is_reported_with_a_clear_error():
    X, Y = linear_problem(n=40)
    with pytest.raises(FloatingPointError, match="diverged at epoch 0.*lower 'lr'"):
        Trainer(TrainConfig(max_epochs=3)).fit(_Diverging(X.shape[1], Y.shape[1], MethodConfig()), X, Y)


class _DivergingTerm(_Diverging):
    name = "diverging_term"

    def step(self, batch, ctx):
        z = self.lin(batch.x)
        bce = F.binary_cross_entropy_with_logits(z, batch.y)
        return StepOutput({"bce": bce, "distillation": bce * float("inf")}, z)


def test_a_divergence_error_names_the_terms_that_are_not_finite():
    # a term's own setting (an absurdly small temperature) can be the cause, which lowering 'lr' does not cure
    X, Y = linear_problem(n=40)
    with pytest.raises(FloatingPointError, match=r"\(loss=inf; in 'distillation'\); expected finite losses"):
        Trainer(TrainConfig(max_epochs=1)).fit(_DivergingTerm(X.shape[1], Y.shape[1], MethodConfig()), X, Y)


class _BlowsUpOnItsStep(_Diverging):
    """A finite loss whose gradient is NaN (√ at 0 times 0): the step it makes leaves NaN weights behind."""

    name = "blows_up"

    def step(self, batch, ctx):
        z = self.lin(batch.x)
        return StepOutput({"bce": F.binary_cross_entropy_with_logits(z, batch.y) + torch.sqrt(z.sum() * 0.0)}, z)


@pytest.mark.parametrize("validation", [True, False])
def test_a_last_update_that_leaves_nan_predictions_is_reported_not_kept(validation):
    # the epoch's losses are finite (they come before the update), so only the predictions show the divergence;
    # a NaN model's validation score is meaningless and was kept as the best (or, without validation, as the last)
    X, Y = linear_problem(n=40)
    val = (X[30:], Y[30:]) if validation else ()
    rows = "validation" if validation else "training"
    m = _BlowsUpOnItsStep(X.shape[1], Y.shape[1], MethodConfig())
    with pytest.raises(FloatingPointError, match=f"diverged at epoch 0 .*{rows} rows are NaN.*lower 'lr'"):
        Trainer(TrainConfig(max_epochs=1, batch_size=64)).fit(m, X[:30], Y[:30], *val)


class _Lossless(_Diverging):
    name = "lossless"

    def step(self, batch, ctx):
        return StepOutput({}, self.lin(batch.x))


def test_a_step_without_loss_terms_is_a_clear_error():
    X, Y = linear_problem(n=40)
    with pytest.raises(ValueError, match="returned no loss terms; expected a dict of at least one"):
        Trainer(TrainConfig(max_epochs=1)).fit(_Lossless(X.shape[1], Y.shape[1], MethodConfig()), X, Y)


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [("batch_size", 0, "batch_size"), ("lr", -1.0, "lr"), ("optimizer", "sgd", "optimizer"), ("monitor", "f1", "mon"),
     # wrong types are named too, instead of failing later inside the loop (or passing: patience 1.5)
     ("max_epochs", 2.5, r"'max_epochs'=2.5 is invalid; expected an integer ≥ 1"), ("patience", 1.5, "patience"),
     ("lr", "1e-3", r"'lr'='1e-3' is invalid; expected a float"), ("batch_size", True, "batch_size"),
     ("seed", 2**64, r"expected an integer in \[0, 2\*\*63 - 1\)"), ("seed", 1.0, "seed"),
     ("device", 0, "device"), ("num_threads", 2.0, "num_threads")],
)
def test_invalid_training_settings_are_rejected(field, value, match):
    with pytest.raises(ValueError, match=match):
        Trainer(TrainConfig(**{field: value}))


def test_numpy_scalars_and_integer_rates_are_valid_training_settings():
    cfg = TrainConfig(max_epochs=np.int64(3), lr=1, weight_decay=np.float32(0.0), seed=np.int32(5), patience=2,
                      device=torch.device("cpu"))
    cfg.validate()
    assert Trainer(cfg).device == torch.device("cpu")


def test_each_monitor_has_its_own_early_stopping_rule_in_cell_keys():
    from mlkd.bench.grid import resolved_config
    from mlkd.trainer import EARLY_STOPPING_RULE, early_stopping_rule

    assert resolved_config("bce")["early_stopping"] == EARLY_STOPPING_RULE  # the published cells' rule, unchanged
    # monitor="loss" compares the rounded BCE only: its cells from before are not taken for cells of the rule now
    assert resolved_config("bce", train={"monitor": "loss"})["early_stopping"] == early_stopping_rule("loss") != \
        EARLY_STOPPING_RULE


def test_batches_come_from_a_shuffled_index_covering_every_row_each_epoch():
    seen = []

    class Spy(_Diverging):
        def step(self, batch, ctx):
            seen.append(batch.index.clone())
            z = self.lin(batch.x)
            return StepOutput({"bce": F.binary_cross_entropy_with_logits(z, batch.y)}, z)

    X, Y = linear_problem(n=50)
    Trainer(TrainConfig(max_epochs=2, batch_size=16)).fit(Spy(X.shape[1], Y.shape[1], MethodConfig()), X, Y)
    epoch1, epoch2 = torch.cat(seen[:4]), torch.cat(seen[4:])
    assert sorted(epoch1.tolist()) == list(range(50)) == sorted(epoch2.tolist())
    assert not torch.equal(epoch1, epoch2) and not torch.equal(epoch1, torch.arange(50))
    assert np.all([len(s) for s in seen[:3]] == np.array([16, 16, 16]))


def test_fit_uses_the_configured_thread_count_and_restores_the_callers():
    seen = []

    class Spy(_Diverging):
        def step(self, batch, ctx):
            seen.append(torch.get_num_threads())
            z = self.lin(batch.x)
            return StepOutput({"bce": F.binary_cross_entropy_with_logits(z, batch.y)}, z)

    X, Y = linear_problem(n=20)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        Trainer(TrainConfig(max_epochs=1, num_threads=1)).fit(Spy(X.shape[1], Y.shape[1], MethodConfig()), X, Y)
        assert set(seen) == {1} and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_separable_data_stops_early_instead_of_polishing_the_loss():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 6)).astype(np.float32)
    Y = (X[:, :3] > 0).astype(np.uint8)  # each label is one feature's sign: separable, mAP reaches 1.0
    m = build_method("bce", 6, 3, {"hidden": 32, "dropout": 0.0}, seed=0)
    res = Trainer(TrainConfig(max_epochs=300, patience=5, seed=0)).fit(m, X[:150], Y[:150], X[150:], Y[150:])
    assert res.best_score > 0.99
    assert res.stopped_early and res.epochs_run < 150  # BCE moves below 1e-3 per epoch long before 300


def test_monitoring_the_loss_counts_only_moves_of_the_rounded_bce_as_improvements():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 6)).astype(np.float32)
    Y = (X[:, :3] > 0).astype(np.uint8)
    m = build_method("bce", 6, 3, {"hidden": 32, "dropout": 0.0}, seed=0)
    res = Trainer(TrainConfig(max_epochs=300, patience=5, seed=0, monitor="loss")).fit(m, X[:150], Y[:150],
                                                                                       X[150:], Y[150:])
    # replay the rule: the best epoch is the first to reach the best BCE at 3 decimals; patience counts from it
    keys = [round(h["val_score"], 3) for h in res.history]
    assert res.best_epoch == keys.index(max(keys)) and res.best_score == res.history[res.best_epoch]["val_score"]
    assert res.stopped_early and res.epochs_run == res.best_epoch + 1 + 5
    # epoch by epoch: only a strictly higher rounded key resets the patience; a tie counts as no improvement
    best, since, best_epoch, ties, stop = -np.inf, 0, -1, 0, None
    for epoch, key in enumerate(keys):
        if key > best:
            best, since, best_epoch = key, 0, epoch
        else:
            ties += key == best
            since += 1
        if since >= 5:
            stop = epoch
            break
    assert ties > 0  # this run does tie its best rounded BCE, so the rule is exercised, not vacuous
    assert stop == res.epochs_run - 1 and best_epoch == res.best_epoch


def test_early_stopping_compares_the_validation_map_at_3_decimals_then_the_rounded_bce():
    # EARLY_STOPPING_RULE, in every cell key, says mAP@3dp: two epochs whose mAPs differ only in the 4th
    # decimal tie on mAP, and the (rounded) BCE decides
    y = (torch.arange(400) % 2).float().unsqueeze(1)
    a = (2 * y - 1) + 1.2 * torch.randn(400, 1, generator=torch.Generator().manual_seed(0))
    order = torch.argsort(a[:, 0], descending=True).tolist()
    # swap one positive ranked just above a negative: a slightly lower mAP ...
    i, j = next((i, j) for i, j in zip(order[5:], order[6:], strict=False) if y[i, 0] == 1 and y[j, 0] == 0)
    b = a.clone()
    b[i, 0], b[j, 0] = a[j, 0], a[i, 0]
    b = 1.2 * b  # ... with more confident, lower-BCE probabilities
    map_a, map_b = (mean_average_precision(y.numpy(), torch.sigmoid(z).numpy()) for z in (a, b))
    assert map_a > map_b and round(map_a, 4) != round(map_b, 4) and round(map_a, 3) == round(map_b, 3)
    score_a, score_b = _validation_score(a, y, "mAP"), _validation_score(b, y, "mAP")
    assert score_a[0] == round(map_a, 3) and score_b[0] == round(map_b, 3)
    assert score_a[-1] == pytest.approx(map_a, abs=1e-12)  # the raw mAP, reported, last
    assert score_b[1] > score_a[1]  # b's rounded -BCE is higher
    assert _improves(score_b, score_a, "mAP") and not _improves(score_a, score_b, "mAP")
    assert EARLY_STOPPING_RULE == "lexicographic(mAP@3dp, -BCE@3dp)"


FAULT_CHILD = """
import resource, sys, torch
from mlkd.trainer import keep_freed_memory_for_reuse
print(keep_freed_memory_for_reuse(), end=" ")
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    t = torch.ones(16 << 20)  # 64 MB, allocated and freed like a large gradient every step
    del t
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_a_fit_reuses_freed_large_buffers_instead_of_faulting_fresh_pages_every_step():
    import os
    import subprocess

    def faults(opt_out: bool) -> tuple[str, int]:
        env = {**os.environ, "MLKD_MALLOPT": "0" if opt_out else "1"}
        tuned, n = subprocess.run([sys.executable, "-c", FAULT_CHILD], env=env, check=True, capture_output=True,
                                  text=True).stdout.split()
        return tuned, int(n)

    (tuned, reused), (untuned, fresh) = faults(opt_out=False), faults(opt_out=True)
    assert tuned == "True" and untuned == "False"
    pages = (64 << 20) // 4096
    assert fresh > 8 * pages  # glibc's default: every 64 MB buffer is new pages, zeroed by the kernel
    assert reused < 3 * pages  # tuned: the first buffers' pages are used again


@pytest.mark.parametrize("name", ["bce", "skdtea", "raskd"])
@pytest.mark.parametrize("fast", [True, False])
def test_training_leaves_no_reference_cycles_and_restores_automatic_garbage_collection(name, fast):
    """Automatic collection is paused during a fit; that is safe only if a step leaves no garbage cycles."""
    import gc

    from mlkd.trainer import REFERENCE_KERNELS

    settings = {} if fast else REFERENCE_KERNELS
    X, Y = linear_problem(n=200, seed=1)
    # imports done (the reference path's first optimizer.step() imports torch._dynamo): their one-off garbage
    # is not the fit's
    warm = build_method(name, X.shape[1], Y.shape[1], {"hidden": 32}, seed=0)
    Trainer(TrainConfig(max_epochs=1, batch_size=32, **settings)).fit(warm, X[:150], Y[:150], X[150:], Y[150:])
    gc.collect()
    m = build_method(name, X.shape[1], Y.shape[1], {"hidden": 32}, seed=0)
    found = []  # what every collection during the fit (the trainer's per-epoch ones included) freed

    def record(phase, info):
        if phase == "stop":
            found.append(info["collected"])

    assert gc.isenabled()
    gc.callbacks.append(record)
    try:
        Trainer(TrainConfig(max_epochs=3, batch_size=32, **settings)).fit(m, X[:150], Y[:150], X[150:], Y[150:])
        assert gc.isenabled()
        gc.collect()
    finally:
        gc.callbacks.remove(record)
    assert len(found) >= 4 and sum(found) == 0
    gc.disable()
    try:
        Trainer(TrainConfig(max_epochs=1, **settings)).fit(m, X[:150], Y[:150], X[150:], Y[150:])
        assert not gc.isenabled()  # a caller's own choice is kept
    finally:
        gc.enable()


@pytest.mark.parametrize("kind", ["adamw", "adam"])
@pytest.mark.parametrize("no_grad_at", [0, 4])
def test_the_lean_fused_step_updates_exactly_as_the_optimizers_own_step(kind, no_grad_at):
    """FusedAdamStep skips torch's per-step list building (and creates the state itself on the first step);
    weights and optimizer state must stay bit for bit those of optimizer.step(), through a learning-rate change
    and a step where a parameter has no gradient (the very first one, or a later one)."""
    from mlkd.trainer import FusedAdamStep, _make_optimizer

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.ReLU(), torch.nn.Linear(7, 3))
    twin = copy.deepcopy(model)
    cfg = TrainConfig(optimizer=kind, lr=0.01, weight_decay=0.1)
    opt, twin_opt = _make_optimizer(list(model.parameters()), cfg), _make_optimizer(list(twin.parameters()), cfg)
    lean = FusedAdamStep(twin_opt)
    x, y = torch.randn(16, 5), torch.randn(16, 3)
    for i in range(6):
        if i == 3:
            for o in (opt, twin_opt):
                o.param_groups[0]["lr"] = 0.003
        for m, step in ((model, opt.step), (twin, lean)):
            m.zero_grad(set_to_none=True)
            ((m(x) - y) ** 2).mean().backward()
            if i == no_grad_at:
                m[2].bias.grad = None  # a parameter without a gradient this step: left alone, as torch does
            step()
    for a, b in zip(model.parameters(), twin.parameters(), strict=True):
        assert torch.equal(a, b)
        sa, sb = opt.state[a], twin_opt.state[b]
        assert list(sa) == list(sb)
        assert all(torch.equal(sa[k], sb[k]) and (sa[k].dtype, sa[k].device) == (sb[k].dtype, sb[k].device)
                   for k in sa)
    assert lean._lists is not None  # the lean path ran (and took the state's own tensors)
    assert float(twin_opt.state[twin[2].bias]["step"]) == 5 and float(twin_opt.state[twin[0].weight]["step"]) == 6


_NO_COMPILER_IMPORT = """
import sys
import numpy as np
import torch
from mlkd import MultiLabelClassifier
from mlkd.trainer import _dynamo_disabled_functions

rng = np.random.default_rng(0)
X = rng.normal(size=(80, 5))
Y = (X[:, :3] + rng.normal(scale=0.5, size=(80, 3)) > 0).astype(float)
for method in ("bce", "skdtea"):
    clf = MultiLabelClassifier(method, hidden=8, max_epochs=3, checkpoint_dir=sys.argv[1] + method,
                               checkpoint_every=1).fit(X, Y)
    clf.predict(X)
assert "torch._dynamo" not in sys.modules, "a fit imported torch._dynamo"
functions = _dynamo_disabled_functions()
assert len(functions) == 4, [f.__qualname__ for f in functions]
assert not any("__dynamo_disable" in vars(f) for f in functions), "torch.optim was left changed"
p = torch.nn.Parameter(torch.zeros(2))
opt = torch.optim.AdamW([p])
p.grad = torch.ones(2)
opt.step()
assert "torch._dynamo" in sys.modules, "outside a fit torch.optim should behave as torch made it"
"""


def test_a_fit_does_not_import_torchs_compiler_and_leaves_torch_optim_as_it_was(tmp_path):
    """torch.optim imports torch._dynamo (1.2-1.5 s a process) on its first optimizer; a default fit, its
    checkpoints included, trains without it, and afterwards torch.optim is untouched."""
    import subprocess

    done = subprocess.run([sys.executable, "-c", _NO_COMPILER_IMPORT, str(tmp_path / "ckpt-")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]


def test_the_lean_fused_step_defers_to_the_optimizer_outside_its_case():
    from mlkd.trainer import FusedAdamStep, _make_optimizer

    for cfg in (TrainConfig(fused_optimizer=False), TrainConfig(optimizer="rmsprop")):
        start = torch.randn(4)
        ours, theirs = torch.nn.Parameter(start.clone()), torch.nn.Parameter(start.clone())
        step, own_opt = FusedAdamStep(_make_optimizer([ours], cfg)), _make_optimizer([theirs], cfg)
        for _ in range(2):
            ours.grad, theirs.grad = torch.ones(4), torch.ones(4)
            step()
            own_opt.step()
        assert not step._eligible and step._lists is None
        assert not torch.equal(ours, start) and torch.equal(ours, theirs)  # it updated, as the optimizer does


def test_the_lean_fused_step_falls_back_to_the_optimizers_step_on_another_private_api(monkeypatch):
    """FusedAdamStep creates the first step's state with torch's private Adam._init_group; where that is missing
    or has another signature (another torch), it takes the optimizer's own first step and goes on lean."""
    import mlkd.trainer
    from mlkd.trainer import FusedAdamStep, _make_optimizer

    def another_api(optimizer, group):
        raise TypeError("_init_group() takes 3 positional arguments but 8 were given")

    monkeypatch.setattr(mlkd.trainer, "_create_adam_state", another_api)
    start = torch.randn(4)
    ours, theirs = torch.nn.Parameter(start.clone()), torch.nn.Parameter(start.clone())
    step, own_opt = FusedAdamStep(_make_optimizer([ours], TrainConfig())), _make_optimizer([theirs], TrainConfig())
    for i in range(3):
        ours.grad, theirs.grad = torch.full((4,), 0.5 + i), torch.full((4,), 0.5 + i)
        step()
        own_opt.step()
        assert torch.equal(ours, theirs)
    assert step._lists is not None  # lean after the first step


def test_fits_started_from_several_threads_give_each_seeds_model_bit_for_bit():
    # torch's RNG, thread count and fused-MLP switch are per process: fits from threads (joblib's threading
    # backend, a thread pool) must take turns, or their dropout masks and initial weights interleave
    import threading

    from mlkd import MultiLabelClassifier

    X, Y = linear_problem(n=200, d=8, L=4, seed=0)
    kw = dict(hidden=32, max_epochs=4, batch_size=16, patience=50)
    alone = {s: MultiLabelClassifier("bce", random_state=s, **kw).fit(X, Y).predict_proba(X) for s in (0, 1)}
    got, errors = {}, []

    def job(i, seed):
        try:
            got[i] = MultiLabelClassifier("bce", random_state=seed, **kw).fit(X, Y).predict_proba(X)
        except Exception as e:  # surfaced below: an exception in a thread would otherwise pass silently
            errors.append(e)

    threads = [threading.Thread(target=job, args=(i, i % 2)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for i in range(4):
        np.testing.assert_array_equal(got[i], alone[i % 2])


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="fork")
def test_a_process_forked_while_another_thread_fits_can_build_and_fit_models():
    # the lock that makes threads' fits take turns is released in a forked child (its holder is not there)
    import os
    import signal
    import threading
    import time

    from mlkd.methods.base import TORCH_GLOBAL_STATE

    release = threading.Event()

    def hold():
        with TORCH_GLOBAL_STATE:  # what a fit in another thread does for its whole duration
            release.wait(30)

    holder = threading.Thread(target=hold)
    holder.start()
    time.sleep(0.2)
    try:
        pid = os.fork()
        if pid == 0:  # the child: a seeded build takes the lock
            signal.alarm(10)
            try:
                build_method("bce", 4, 2, {"hidden": 4}, seed=0)
            finally:
                os._exit(0)
        _, status = os.waitpid(pid, 0)
    finally:
        release.set()
        holder.join()
    assert os.waitstatus_to_exitcode(status) == 0  # −14 (SIGALRM): it waited for a lock nobody will release
