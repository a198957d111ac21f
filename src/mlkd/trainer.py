"""The one training loop: in-memory tensors batched by a shuffled index, early stopping on validation.

The trainer knows nothing about any method: it sums the named loss terms a method returns, logs each of
them per epoch, and keeps the best state by a validation score.
"""

from __future__ import annotations

import contextlib
import copy
import ctypes
import gc
import math
import os
import platform
import sys
import threading
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from .checkpoint import LoopState, active_checkpointer
from .methods.base import TORCH_GLOBAL_STATE, Batch, Method, StepContext, fit_rng, model_defaults, seed_fit_rng, shown
from .nn import fused_mlp_training

#: Seeds a fit accepts: what torch and numpy both take, with room for the offsets later stages and ranks add.
SEED_RANGE = (0, 2**63 - 1)
#: The most CPU threads a fit asks torch for: far more than any machine's cores, and far fewer than the thousands
#: at which OpenMP fails to start them and the process dies (``--threads 100000`` was a segmentation fault).
MAX_THREADS = 1024


@dataclass
class TrainConfig:
    """Optimisation settings shared by every method."""

    max_epochs: int = 200
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-4
    optimizer: str = "adamw"  # "adam" | "adamw" | "rmsprop" (RMS-normalised momentum SGD, C2AE's official)
    momentum: float = 0.9  # used by "rmsprop" only
    lr_decay: float = 1.0  # learning rate at epoch e is lr·lr_decay**e; 1.0 keeps it constant
    patience: int = 20  # epochs without validation improvement before stopping
    monitor: str = "mAP"  # validation score for early stopping: "mAP" (higher better) or "loss" (BCE, lower)
    seed: int = 0
    device: str = "auto"  # "auto" picks CUDA when available
    # CPU threads for the fit (restored afterwards); None keeps torch's setting. One thread is the fast path
    # for mlkd's batch sizes: batch-64 matmuls are too small to split, and extra intra-op threads spin-wait
    # and slow a fit several-fold whenever anything else runs (BENCHMARKS.md, "Speed").
    num_threads: int | None = 1
    # The fast path (BENCHMARKS.md, "Performance"): both change a fit's numbers by float rounding and random
    # streams only, within seed noise. False/False is the reference path the published benchmark cells used.
    # One fused AdamW/Adam kernel for all parameters instead of ~10 elementwise passes per parameter tensor.
    fused_optimizer: bool = True
    # MLP layers as one hand-written forward/backward with a cheap dropout mask (mlkd.nn.FusedDense).
    fused_mlp: bool = True
    progress: bool = False  # tqdm bar over epochs

    def validate(self) -> None:
        def integer(v) -> bool:
            return isinstance(v, (int, np.integer)) and not isinstance(v, bool)

        def real(v) -> bool:
            return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)

        checks = [
            # the bound of the epoch-count method parameters (ramp_epochs, teacher_max_epochs): one beyond
            # sys.maxsize was an OverflowError traceback (the epoch loop's len())
            ("max_epochs", integer(self.max_epochs) and 1 <= self.max_epochs <= 1 << 30,
             "an integer ≥ 1 (and at most 2**30)"),
            ("batch_size", integer(self.batch_size) and self.batch_size >= 1, "an integer ≥ 1"),
            ("lr", real(self.lr) and 0 < self.lr < 10, "a float in (0, 10)"),
            ("weight_decay", real(self.weight_decay) and 0 <= self.weight_decay < 10, "a float in [0, 10)"),
            ("optimizer", self.optimizer in ("adam", "adamw", "rmsprop"), "'adam', 'adamw' or 'rmsprop'"),
            ("momentum", real(self.momentum) and 0 <= self.momentum < 1, "a float in [0, 1)"),
            ("lr_decay", real(self.lr_decay) and 0 < self.lr_decay <= 1, "a float in (0, 1]"),
            ("patience", integer(self.patience) and self.patience >= 1, "an integer ≥ 1"),
            ("monitor", self.monitor in ("mAP", "loss"), "'mAP' or 'loss'"),
            ("seed", integer(self.seed) and SEED_RANGE[0] <= self.seed < SEED_RANGE[1],
             "an integer in [0, 2**63 - 1)"),
            ("num_threads", self.num_threads is None or (integer(self.num_threads)
                                                         and 1 <= self.num_threads <= MAX_THREADS),
             f"None or an integer in [1, {MAX_THREADS}]"),
            ("fused_optimizer", isinstance(self.fused_optimizer, (bool, np.bool_)), "True or False"),
            ("fused_mlp", isinstance(self.fused_mlp, (bool, np.bool_)), "True or False"),
            ("progress", isinstance(self.progress, (bool, np.bool_)), "True or False"),
        ]
        for name, ok, expected in checks:
            if not ok:
                raise ValueError(f"training parameter {name!r}={shown(getattr(self, name))} is invalid; expected "
                                 f"{expected}")
        # the device's spelling only (a grid may run where the GPU is); Trainer checks that the device exists
        if (problem := device_problem(self.device, available=False)) is not None:
            raise ValueError(problem)
        # numpy scalars (a grid's values) as the Python values they equal: torch.Generator.manual_seed refuses an
        # np.int64 seed, and the config is written to JSON (checkpoints, benchmark cells)
        for name, value in list(vars(self).items()):
            if isinstance(value, (np.integer, np.floating, np.bool_)):
                setattr(self, name, value.item())


#: The training settings of the reference path: torch's per-parameter AdamW and ``nn.Dropout`` under autograd.
#: The published benchmark cells were fitted with it, and ``--reference-kernels`` / these settings reproduce
#: them bit for bit; the defaults (the fast path) give the same metrics up to seed noise.
REFERENCE_KERNELS = {"fused_optimizer": False, "fused_mlp": False}


#: Training settings added after results and checkpoints were written, at the value that reproduces those:
#: identities (benchmark cell keys, checkpoint fingerprints) leave a setting out at that value, so the cells
#: and checkpoints written before it existed keep theirs.
ADDED_SETTINGS = {"fused_mlp": False}


def identity_settings(train: dict) -> dict:
    """``train`` without the ``ADDED_SETTINGS`` that are at their earlier behaviour's value."""
    return {k: v for k, v in train.items() if not (k in ADDED_SETTINGS and v == ADDED_SETTINGS[k])}


@dataclass
class TrainResult:
    history: list[dict] = field(default_factory=list)  # one row per epoch: every loss term, total, val score, s
    best_epoch: int = -1
    best_score: float = float("nan")
    epochs_run: int = 0
    seconds: float = 0.0
    stopped_early: bool = False


#: glibc's mallopt parameters (malloc.h) and the values a fit sets: tensors up to 256 MB come from the heap and
#: up to 512 MB of freed heap is kept for reuse, instead of mmap'ing and zeroing fresh pages for every large
#: temporary (a 64 MB gradient or AdamW intermediate each step). BENCHMARKS.md, "Performance" (5b): the headline's
#: delicious distill cells spent 42 % of their CPU time in the kernel faulting pages in before this.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
ALLOCATOR_SETTINGS = {"mmap_threshold": 256 << 20, "trim_threshold": 512 << 20}
_allocator_tuned = False


def keep_freed_memory_for_reuse() -> bool:
    """Raise glibc malloc's mmap and trim thresholds (``ALLOCATOR_SETTINGS``) for this process, once; True if set.

    Called by every fit. Process-wide and kept afterwards (glibc has no way to read the old values back);
    it changes no computed number, only where large buffers come from. A no-op off Linux/glibc and when the
    environment sets ``MLKD_MALLOPT=0``.
    """
    global _allocator_tuned
    if _allocator_tuned:
        return True
    if os.environ.get("MLKD_MALLOPT", "1") == "0" or platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        _allocator_tuned = bool(libc.mallopt(_M_MMAP_THRESHOLD, ALLOCATOR_SETTINGS["mmap_threshold"])
                                and libc.mallopt(_M_TRIM_THRESHOLD, ALLOCATOR_SETTINGS["trim_threshold"]))
    except (OSError, AttributeError):
        _allocator_tuned = False
    return _allocator_tuned


@contextlib.contextmanager
def paused_garbage_collection():
    """Automatic garbage collection off inside the block (restored after; the caller collects the young
    generations at each epoch end). A full collection walks every object of the process — ~200 000 once torch
    and scikit-learn are imported, 0.1–0.3 s — and struck about once in ten epochs of a small fit (yeast: 0.33 s
    in 12 epochs of 0.1 s).
    A training step leaves no reference cycles (tests/test_trainer.py), so nothing piles up meanwhile."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _dynamo_disabled_functions() -> tuple:
    """The bookkeeping methods torch.optim marks with ``torch._disable_dynamo`` (``add_param_group``, run by the
    constructor; ``state_dict`` and ``load_state_dict``, run by checkpoints; ``zero_grad``), unwrapped. The
    marking wrapper imports ``torch._dynamo`` on its first call unless the function already carries its
    ``__dynamo_disable`` twin. Only methods that carry that very wrapper (same code object) are returned."""
    marked = torch._disable_dynamo(lambda: None).__code__
    opt = torch.optim.Optimizer
    methods = (opt.add_param_group, opt.state_dict, opt.load_state_dict, opt.zero_grad)
    return tuple(m.__wrapped__ for m in methods if getattr(m, "__code__", None) is marked)


@contextlib.contextmanager
def optimizers_without_compiler_import():
    """Inside the block torch.optim does not import ``torch._dynamo`` (1.2–1.5 s, once per process, more than a
    whole small fit takes to train).

    torch.optim marks its bookkeeping functions "not for torch.compile" with a wrapper that imports the
    compiler on first use to build the marked twin. Outside a torch.compile trace the twin just calls the
    function, so here each wrapped function is its own twin, which is what runs. mlkd never traces an
    optimizer, and afterwards the functions are as they were: a later call imports the compiler as torch
    always does. Nothing is changed when ``torch._dynamo`` is already imported, or for a function another
    block is already covering."""
    if "torch._dynamo" in sys.modules:
        yield
        return
    covered = []
    for fn in _dynamo_disabled_functions():
        if "__dynamo_disable" not in vars(fn):
            setattr(fn, "__dynamo_disable", fn)  # the attribute torch's wrapper looks up (_compile.py)
            covered.append(fn)
    try:
        yield
    finally:
        for fn in covered:
            vars(fn).pop("__dynamo_disable", None)


def device_problem(device, available: bool = True) -> str | None:
    """Why ``device`` cannot be trained on — not 'auto', 'cpu', 'cuda[:N]' or a torch.device of those, or
    (``available``) a CUDA device this machine does not have — or None when it can."""
    if isinstance(device, torch.device):  # device=torch.device("cpu") means "cpu"
        device = str(device)
    if device == "auto":
        return None
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        dev = None
    if dev is None or dev.type not in ("cpu", "cuda"):
        return f"device={device!r} is invalid; expected 'auto', 'cpu' or 'cuda[:index]'"
    if available and dev.type == "cuda" and (not torch.cuda.is_available()
                                             or (dev.index or 0) >= torch.cuda.device_count()):
        have = f"{torch.cuda.device_count()} CUDA device(s)" if torch.cuda.is_available() else "no CUDA"
        return (f"device={device!r} is not available (this machine has {have}); expected 'auto', 'cpu' or an "
                "available CUDA device")
    return None


def check_device(device, available: bool = True):
    """'auto', 'cpu' or an available CUDA device, returned as given (a torch.device as its string); anything else
    is a ValueError before any work. With ``available=False`` only the spelling is checked (a grid may run where
    the GPU is: a Ray cluster)."""
    problem = device_problem(device, available)
    if problem:
        raise ValueError(problem)
    return str(device) if isinstance(device, torch.device) else device


def resolve_device(device) -> torch.device:
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


#: How early stopping compares validation scores; part of every benchmark cell's key, so changing the rule
#: reruns cells instead of mixing numbers made under two rules. ``monitor="mAP"``'s rule; ``early_stopping_rule``
#: gives each monitor's.
EARLY_STOPPING_RULE = "lexicographic(mAP@3dp, -BCE@3dp)"


def early_stopping_rule(monitor: str) -> str:
    """The early-stopping rule of ``monitor`` as cell keys record it. ``"loss"`` compares the BCE at 3 decimals
    only since 2026-12-03 (a raw tie-break had followed it): a rule of its own, so that its cells and
    checkpoints from before are not taken for its cells now; ``"mAP"``'s is unchanged."""
    return EARLY_STOPPING_RULE if monitor == "mAP" else "-BCE@3dp"


def _validation_score(logits: torch.Tensor, y: torch.Tensor, monitor: str) -> tuple[float, ...]:
    """Higher is better, compared lexicographically (``_improves``): (validation mAP, −BCE, raw mAP) or (−BCE,)
    followed by the raw −BCE, which is reported, not compared.

    Both keys are compared at 3 decimals: smaller moves are below seed noise. The BCE tie-break matters on
    easy data, where mAP saturates within an epoch or two and would stop training long before the
    probabilities are fitted; rounding it stops a fit on separable data (genbase) whose BCE would otherwise
    creep down for hundreds of epochs without changing any prediction.
    """
    neg_bce = -float(torch.nn.functional.binary_cross_entropy_with_logits(logits, y))
    if monitor == "loss":
        return (round(neg_bce, 3), neg_bce)
    score = fast_mean_average_precision(y, torch.sigmoid(logits))
    return (-math.inf if np.isnan(score) else round(float(score), 3), round(neg_bce, 3), float(score))


def _improves(score: tuple[float, ...], best: tuple[float, ...], monitor: str) -> bool:
    """Whether a validation score beats the best so far. ``monitor="loss"`` compares the rounded BCE only (its
    raw last entry is for the history): a raw tie-break would let every creep of the BCE reset the patience,
    which is what the rounding is there to stop. ``"mAP"`` compares the whole tuple, raw mAP last, as every
    published cell was early-stopped."""
    keys = slice(None, -1) if monitor == "loss" else slice(None)
    return score[keys] > best[keys]


def fast_mean_average_precision(y: torch.Tensor, scores: torch.Tensor) -> float:
    """``mlkd.metrics.mean_average_precision`` (sklearn's average precision, ties grouped as sklearn's
    thresholds do, over the labels with a positive) in a few vectorised numpy ops: sklearn's per-label loop
    took 20 s per epoch on delicious' 983 labels, this 0.1 s. Equal to sklearn within 1e-12 for float32
    scores (tests/test_batched.py).

    y, scores : tensors of shape (n_samples, n_labels), 0/1 and float32; NaN if no label has a positive.
    """
    hits = y.detach().cpu().numpy().T > 0  # (labels, samples)
    keep = hits.any(axis=1)
    if not keep.any():
        return float("nan")
    values = np.ascontiguousarray(scores.detach().cpu().numpy().T[keep], dtype=np.float32) + np.float32(0.0)
    bits = values.view(np.int32)  # + 0.0 above: −0.0 becomes +0.0, a tie as in sklearn
    bits = bits ^ ((bits >> 31) & 0x7FFFFFFF)  # integers in the floats' order, negative floats included
    # One sort of (score, hit) keys, descending: no argsort and no gathers.
    key = np.sort((bits.astype(np.int64) << 1) | hits[keep], axis=1)[:, ::-1]
    hits, ranked = (key & 1).astype(bool), key >> 1
    true_pos = hits.cumsum(axis=1, dtype=np.float64)
    n = key.shape[1]
    # A positive counts the precision at the end of its tie group (sklearn's distinct thresholds).
    group_end = np.ones(key.shape, dtype=bool)
    group_end[:, :-1] = ranked[:, :-1] != ranked[:, 1:]
    end = np.minimum.accumulate(np.where(group_end, np.arange(n), n - 1)[:, ::-1], axis=1)[:, ::-1]
    precision = np.take_along_axis(true_pos, end, axis=1) / (end + 1)
    return float((np.where(hits, precision, 0.0).sum(axis=1) / true_pos[:, -1]).mean())


@contextlib.contextmanager
def fit_threads(cfg: TrainConfig):
    """A fit's turn on torch's process-wide state (fits from several threads take turns: the RNG and the thread
    count are per process) and ``cfg.num_threads`` CPU threads, the caller's count restored afterwards. Every
    number a fit computes is computed inside: float rounding depends on the thread count (the estimator tunes
    its threshold in one too)."""
    with TORCH_GLOBAL_STATE:
        threads = torch.get_num_threads()
        try:
            if cfg.num_threads is not None:
                torch.set_num_threads(cfg.num_threads)
            yield
        finally:
            torch.set_num_threads(threads)


@contextlib.contextmanager
def fit_setting(cfg: TrainConfig, device: torch.device, seed: int):
    """The process state one fit runs in (``Trainer.fit``, ``mlkd.batched.fit_seeds``), restored afterwards:
    ``fit_threads``, ``model_defaults`` (float32, autograd on), torch's RNG forked and seeded with ``seed``, the MLP
    kernels of ``cfg.fused_mlp``, automatic garbage collection paused, torch.optim without its compiler import."""
    with (fit_threads(cfg), model_defaults(), fit_rng(device), fused_mlp_training(cfg.fused_mlp),
          paused_garbage_collection(), optimizers_without_compiler_import()):
        seed_fit_rng(seed, device)
        yield


class Trainer:
    #: Set by ``mlkd.distributed`` on a DDP rank: steps on this rank's shard of each batch, averages epoch sums.
    data_parallel = None

    def __init__(self, config: TrainConfig | None = None) -> None:
        self.config = config or TrainConfig()
        self.config.validate()
        self.device = resolve_device(check_device(self.config.device))  # one this machine has

    def fit(self, method: Method, X, Y, X_val=None, Y_val=None, checkpoint=None) -> TrainResult:
        """Train ``method`` in place on (X, Y); with validation data, stop early and restore the best state.

        X : array of shape (n_samples, n_features), float; Y : array of shape (n_samples, n_labels), 0/1.
        Same seed, same data and same device → bit-identical weights on CPU. ``checkpoint``: a
        ``mlkd.checkpoint.Checkpointer`` (default: the one a ``checkpointing`` block made active) that saves the
        loop's whole state every N epochs and resumes from it to the same weights, bit for bit.
        """
        cfg = self.config
        keep_freed_memory_for_reuse()
        checkpoint = checkpoint if checkpoint is not None else active_checkpointer()
        stage = None if checkpoint is None else checkpoint.stage(method, cfg, self.device, X, Y, X_val, Y_val)
        with fit_setting(cfg, self.device, cfg.seed):
            return self._fit(method, X, Y, X_val, Y_val, stage)

    def _fit(self, method: Method, X, Y, X_val, Y_val, stage=None) -> TrainResult:
        cfg, dev = self.config, self.device
        method.to(dev)
        if stage is not None and (finished := stage.load_finished(method)) is not None:
            return finished  # finished before an interruption: its final weights, not trained again
        X_t, Y_t, Xv, Yv = device_tensors(X, Y, X_val, Y_val, dev)
        has_val = Xv is not None
        params = [p for p in method.parameters() if p.requires_grad]
        optimizer = _make_optimizer(params, cfg)
        shuffle_gen = torch.Generator(device="cpu").manual_seed(cfg.seed)
        method_gen = torch.Generator(device=dev).manual_seed(cfg.seed + 1)
        n = X_t.shape[0]
        bs = min(cfg.batch_size, n)
        result = TrainResult()
        best_state, best, since_best = None, (-math.inf,), 0
        start = time.perf_counter()
        loop = None if stage is None else stage.restore(method, optimizer, (shuffle_gen, method_gen))
        if loop is not None:  # resume: result so far, early-stopping state; weights, optimizer and RNGs restored
            result, best_state, best, since_best = loop.result, loop.best_state, loop.best, loop.since_best
            start -= loop.seconds
        first = len(result.history)  # 0, or the epochs a resumed checkpoint already ran
        step = method.step if self.data_parallel is None else self.data_parallel.wrap(method)
        # CS-KD's pair batches: each row and a partner training row
        partners = method.partner_sampler(Y_t) if method.pair_batches else None
        optimizer_step = FusedAdamStep(optimizer)  # after restore: it keeps the state's tensors
        bar = tqdm(range(first, cfg.max_epochs), desc=f"fit {method.name}", disable=not cfg.progress, leave=False)
        for epoch in bar:
            t0 = time.perf_counter()
            ctx = StepContext(epoch=epoch, max_epochs=cfg.max_epochs, generator=method_gen)
            _apply_lr_schedule(optimizer, cfg, epoch)
            method.train()
            perm = torch.randperm(n, generator=shuffle_gen).to(dev)
            sums: dict[str, torch.Tensor] = {}
            for begin in range(0, n, bs):
                idx = perm[begin : begin + bs]
                rows = idx if partners is None else torch.cat([idx, partners.draw(idx, method_gen)])
                # index_select: the rows X_t[idx] gives, in half the time of advanced indexing
                batch = Batch(X_t.index_select(0, rows), Y_t.index_select(0, rows), rows)
                out, total = training_step(step, batch, ctx, params, optimizer_step)
                w = idx.shape[0]
                for name, value in out.losses.items():
                    sums[name] = sums.get(name, 0.0) + value.detach() * w
                sums["total"] = sums.get("total", 0.0) + total.detach() * w
            method.on_epoch_end(ctx)
            gc.collect(1)  # the young generations only: whatever an epoch left in cycles, without walking the process
            if self.data_parallel is not None:
                sums = self.data_parallel.reduce(sums)
            row = {"epoch": epoch, **{k: float(v) / n for k, v in sums.items()}}
            if not math.isfinite(row["total"]):
                raise FloatingPointError(
                    f"training of {method.name!r} diverged at epoch {epoch} (loss={row['total']}"
                    f"{non_finite_terms(row)}); expected finite losses: lower 'lr' or check the inputs' scale"
                )
            if has_val:
                val_logits = predict_logits(method, Xv)  # in eval mode, without autograd
                check_finite_predictions(val_logits, f"training of {method.name!r}", epoch, "validation")
                score = _validation_score(val_logits, Yv, cfg.monitor)
                row["val_score"] = score[-1]
                if _improves(score, best, cfg.monitor):
                    best, since_best, result.best_epoch = score, 0, epoch
                    best_state = copy.deepcopy(method.state_dict())
                else:
                    since_best += 1
            row["seconds"] = time.perf_counter() - t0
            result.history.append(row)
            bar.set_postfix(loss=f"{row['total']:.4f}", val=f"{row.get('val_score', float('nan')):.4f}")
            if has_val and since_best >= cfg.patience:
                result.stopped_early = True
                break
            if stage is not None:
                stage.save(epoch, method, optimizer, (shuffle_gen, method_gen),
                           LoopState(result, best_state, best, since_best, time.perf_counter() - start))
        bar.close()
        if best_state is not None:
            method.load_state_dict(best_state)
            result.best_score = best[-1]
        else:
            result.best_epoch = len(result.history) - 1
            if result.history:  # no validation checked the last update: the model kept is the one it made
                check_finite_predictions(predict_logits(method, X_t), f"training of {method.name!r}",
                                         result.best_epoch, "training")
        method.eval()
        result.epochs_run = len(result.history)
        result.seconds = time.perf_counter() - start
        if stage is not None:
            stage.finish(method, result)
        return result


def non_finite_terms(row: dict) -> str:
    """``"; in 'distillation'"``: the loss terms of an epoch's ``row`` that are not finite, for a divergence error
    (the term points at its own setting, a temperature say, where lowering 'lr' would not help)."""
    bad = [k for k, v in row.items() if k not in ("epoch", "total") and not math.isfinite(v)]
    return f"; in {', '.join(map(repr, bad))}" if bad else ""


def check_finite_predictions(logits: torch.Tensor, what: str, epoch: int, rows: str) -> None:
    """FloatingPointError unless ``logits`` (the model's predictions for the ``rows`` rows after ``epoch``) hold no
    NaN: a step can blow the weights up after the epoch's losses were computed, so the losses alone do not show
    it, and a NaN prediction's validation score is meaningless (its sorted bits can even beat the best)."""
    if torch.isnan(logits).any():
        raise predictions_diverged(what, epoch, rows)


def predictions_diverged(what: str, epoch: int, rows: str) -> FloatingPointError:
    """The error of ``check_finite_predictions``."""
    return FloatingPointError(
        f"{what} diverged at epoch {epoch} (its predictions for the {rows} rows are NaN); expected finite "
        "predictions: lower 'lr' or check the inputs' scale"
    )


def training_step(step, batch: Batch, ctx: StepContext, params, optimizer_step):
    """One step of ``Trainer.fit``: the method's losses, their sum back-propagated into ``params``' fresh
    gradients, the optimizer's update (none when ``optimizer_step`` is None: the benchmarks time the steps
    without it). Returns (the method's StepOutput, the summed loss)."""
    out = step(batch, ctx)
    if not out.losses:
        raise ValueError("the method's step returned no loss terms; expected a dict of at least one loss tensor")
    first, *others = out.losses.values()
    total = sum(others, first)  # not sum(values): 0 + loss would be one more op and autograd node a step
    for param in params:  # optimizer.zero_grad(set_to_none=True) without its ~0.1 ms of bookkeeping
        param.grad = None
    total.backward()
    if optimizer_step is not None:
        optimizer_step()
    return out, total


def _apply_lr_schedule(optimizer: torch.optim.Optimizer, cfg: TrainConfig, epoch: int) -> None:
    """The learning rate of ``epoch``: lr·lr_decay**epoch (nothing to do when lr_decay is 1)."""
    if cfg.lr_decay != 1.0:
        for group in optimizer.param_groups:
            group["lr"] = cfg.lr * cfg.lr_decay**epoch


def _make_optimizer(params, cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "rmsprop":
        # alpha=0.9: C2AE's running RMS r ← sqrt(0.9·r² + 0.1·g²); weight_decay is coupled L2 there.
        return torch.optim.RMSprop(params, lr=cfg.lr, alpha=0.9, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    opt_cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    # fused: one kernel for all parameters instead of ~10 ops each; the same update up to float rounding.
    return opt_cls(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=cfg.fused_optimizer)


class FusedAdamStep:
    """``optimizer.step()`` for a fused Adam/AdamW with one parameter group, minus ~0.2 ms of Python a step.

    torch's step rebuilds six tensor lists, looks up every parameter's state and regroups the lists by device
    and dtype on every call: a tenth of a small model's training step. This makes the same two calls torch's
    ``_fused_adam`` makes — step counts + 1, then the fused kernel — on lists built once, with the group's
    current hyperparameters, so the update is bit for bit ``optimizer.step()``'s. On the first call it creates
    the state with the optimizer's own ``_init_group`` (zero moments and step counts, as torch's first step
    does), not through ``optimizer.step()``, whose wrapper imports ``torch._dynamo``: 1.2–1.5 s once per
    process, more than a small fit's training. Anything outside that case (another optimizer, not fused,
    AMSGrad, several groups or devices, a parameter without a gradient this step) calls ``optimizer.step()``
    itself. Like the fused kernel call itself, this skips the optimizer's step hooks, which mlkd does not use.
    """

    def __init__(self, optimizer: torch.optim.Optimizer) -> None:
        self.optimizer = optimizer
        self._lists: tuple | None = None
        group = optimizer.param_groups[0]
        self._eligible = (
            isinstance(optimizer, torch.optim.Adam) and len(optimizer.param_groups) == 1 and bool(group.get("fused"))
            and not group["amsgrad"] and not group["differentiable"] and not group["capturable"]
            and getattr(optimizer, "grad_scale", None) is None and getattr(optimizer, "found_inf", None) is None
            and len({(p.device, p.dtype) for p in group["params"]}) == 1
            and not any(torch.is_complex(p) for p in group["params"])
        )

    def __call__(self) -> None:
        if not self._eligible:
            self.optimizer.step()
            return
        group = self.optimizer.param_groups[0]
        params = group["params"]
        grads = [p.grad for p in params]
        if any(g is None or g.is_sparse for g in grads):
            self.optimizer.step()
            self._lists = self._lists or self._state_lists()
            return
        if self._lists is None:
            try:
                _create_adam_state(self.optimizer, group)
            except (AttributeError, TypeError):  # a torch whose Adam has another private API: its own step
                self.optimizer.step()
                self._lists = self._state_lists()
                return
            self._lists = self._state_lists()
        exp_avgs, exp_avg_sqs, steps = self._lists
        beta1, beta2 = group["betas"]
        torch._foreach_add_(steps, 1)
        kernel = torch._fused_adamw_ if group["decoupled_weight_decay"] else torch._fused_adam_
        kernel(params, grads, exp_avgs, exp_avg_sqs, [], steps, amsgrad=False, lr=group["lr"], beta1=beta1,
               beta2=beta2, weight_decay=group["weight_decay"], eps=group["eps"], maximize=group["maximize"],
               grad_scale=None, found_inf=None)

    def _state_lists(self) -> tuple | None:
        """(exp_avgs, exp_avg_sqs, steps) of the group's parameters; None while some have no state yet."""
        state, params = self.optimizer.state, self.optimizer.param_groups[0]["params"]
        if not all(p in state and "exp_avg" in state[p] for p in params):
            return None
        return ([state[p]["exp_avg"] for p in params], [state[p]["exp_avg_sq"] for p in params],
                [state[p]["step"] for p in params])


def _create_adam_state(optimizer: torch.optim.Adam, group: dict) -> None:
    """The state torch's first Adam step creates for ``group``'s parameters (zero moments, zero step counts on
    the parameters' device); parameters that already have state (after a restore) keep it."""
    with torch.no_grad():
        optimizer._init_group(group, [], [], [], [], [], [])


def device_tensors(X, Y, X_val, Y_val, dev):
    """Training (and validation, or None) arrays as float32 tensors on ``dev``, kept there for the whole fit."""
    def put(a):
        return torch.as_tensor(np.asarray(a, dtype=np.float32), device=dev)

    has_val = X_val is not None and Y_val is not None and len(X_val) > 0
    return put(X), put(Y), (put(X_val) if has_val else None), (put(Y_val) if has_val else None)


#: Rows ``predict_logits`` runs through a model at once, to bound its activations' memory.
PREDICT_ROWS = 8192
#: Activation memory (bytes) one chunk of ``predict_logits`` may take in a model whose modules say what a row
#: costs (``activation_bytes_per_row``: the CNN backbones, whose 8192 rows of 32×32 images through the default
#: teacher held ~7 GB); such a model predicts in fewer rows at once.
PREDICT_BYTES = 512 * 2**20


def predict_chunk_rows(method: torch.nn.Module) -> int:
    """Rows ``predict_logits`` runs at once: PREDICT_ROWS, or fewer (at least 1) where a module's activations for
    them would take more than PREDICT_BYTES."""
    per_row = max((getattr(m, "activation_bytes_per_row", 0) for m in method.modules()), default=0)
    return PREDICT_ROWS if per_row <= 0 else max(1, min(PREDICT_ROWS, PREDICT_BYTES // per_row))


#: The models ``predict_logits`` is predicting with, each with its count of predictions under way and the
#: train/eval modes its modules had before the first of them.
_predicting: dict[int, list] = {}
_predicting_lock = threading.Lock()


@contextlib.contextmanager
def eval_mode(method: nn.Module):
    """``method`` in eval mode inside the block; afterwards each module has the mode it had before (a model its user
    put in train mode stays there). Blocks over one model in several threads at once share one switch: the
    modes come back when the last of them ends, never under another's forward pass."""
    with _predicting_lock:
        entry = _predicting.get(id(method))
        if entry is None:
            entry = _predicting[id(method)] = [0, [(module, module.training) for module in method.modules()]]
            method.eval()
        entry[0] += 1
    try:
        yield method
    finally:
        with _predicting_lock:
            entry[0] -= 1
            if entry[0] == 0:
                del _predicting[id(method)]
                for module, training in entry[1]:
                    module.training = training


@torch.no_grad()
def predict_logits(method: Method, X, batch_size: int | None = None) -> torch.Tensor:
    """Prediction logits in eval mode (``eval_mode``: the model's modes are given back), batched to bound memory
    (``predict_chunk_rows`` rows at once unless ``batch_size`` is given); returns a tensor on the method's device."""
    with eval_mode(method):
        batch_size = predict_chunk_rows(method) if batch_size is None else batch_size
        dev = next(method.parameters()).device
        X_t = X if isinstance(X, torch.Tensor) else torch.as_tensor(np.asarray(X, dtype=np.float32))
        X_t = X_t.to(dev)
        return torch.cat([method(X_t[i : i + batch_size]) for i in range(0, X_t.shape[0], batch_size)])


def config_dict(config: TrainConfig) -> dict:
    return asdict(config)
