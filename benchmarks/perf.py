"""Performance of the training loop (issue #7): every figure a ratio measured within one run.

    MLKD_DATA=../shared/datasets/mulan .venv/bin/python benchmarks/perf.py
    MLKD_DATA=../shared/datasets/mulan .venv/bin/python benchmarks/perf.py --only flops,batched --repeats 5

Sections (``--only``, comma-separated; default all):

- flops       time per epoch ÷ the same matmuls (forward + backward shapes, validation forward) timed alone
- breakdown   where an epoch's time goes at batch 64, and the trainer before/after this issue's changes
- dataloader  our epoch against a plain ``DataLoader(TensorDataset)`` loop, with both loops' test mAP
- equivalence the speed changes leave the metrics alone: full fits before vs after, 3 seeds
- batched     several seeds as one vmapped model (mlkd.batched) against fitting them one after another
- memory      peak RSS of a child process running one delicious fit
- peers       scikit-learn's MLPClassifier and one-vs-rest logistic regression next to ours
- profile     the foundation grid on one data set under py-spy: share of time outside tensor work
- ddp         one delicious fit on 1 process against 2 DDP processes (mlkd.distributed)

The machine is shared (2 cores, other jobs running), so A and B are interleaved and repeated and medians
of per-pair ratios are reported with the load average. Results are kept in benchmarks/perf.json (a
section run alone replaces only its own entry) and written to BENCHMARKS.md, block "perf".
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from common import ROOT, replace_block

RESULTS = ROOT / "benchmarks" / "perf.json"
ORDER = ["flops", "breakdown", "dataloader", "equivalence", "batched", "memory", "peers", "profile", "ddp"]
FOUNDATION = ["bce", "ls", "tea", "skdtea"]


# -- shared helpers ------------------------------------------------------------------------------------------
def load() -> str:
    return "{:.1f} / {:.1f} / {:.1f}".format(*os.getloadavg())


_DATA: dict[str, tuple] = {}


def prepared(name: str):
    """(X_tr, Y_tr, X_val, Y_val, X_test, Y_test) as the estimator and the protocol make them."""
    if name not in _DATA:
        from mlkd.data import load_dataset, validation_split
        from mlkd.preprocessing import FeatureScaler

        d = load_dataset(name)
        tr, va = validation_split(d.train.Y, fraction=1 / 6, seed=0)
        scaler = FeatureScaler().fit(d.train.X[tr])
        _DATA[name] = (scaler.transform(d.train.X[tr]), d.train.Y[tr], scaler.transform(d.train.X[va]),
                       d.train.Y[va], scaler.transform(d.test.X), d.test.Y)
    return _DATA[name]


def test_map(model, X, Y) -> float:
    from mlkd.metrics import mean_average_precision
    from mlkd.trainer import predict_logits

    return mean_average_precision(Y, torch.sigmoid(predict_logits(model, X)).numpy())


@contextlib.contextmanager
def legacy_trainer():
    """The trainer before issue #7: sklearn's mAP (a Python loop over the labels) for the validation score.
    (Its optimizer, AdamW's per-parameter loop, is still the default; fused AdamW is opt-in.)"""
    import mlkd.trainer as T
    from mlkd.metrics import mean_average_precision

    saved = T.fast_mean_average_precision

    def sklearn_map(y, scores):
        return mean_average_precision(y.cpu().numpy(), scores.cpu().numpy())

    T.fast_mean_average_precision = sklearn_map
    try:
        yield
    finally:
        T.fast_mean_average_precision = saved


@contextlib.contextmanager
def fused_adamw():
    """Every Trainer of the block with the opt-in ``fused_optimizer=True`` (the estimator has no such option)."""
    import dataclasses

    import mlkd.trainer as T

    saved = T._make_optimizer
    T._make_optimizer = lambda params, cfg: saved(params, dataclasses.replace(cfg, fused_optimizer=True))
    try:
        yield
    finally:
        T._make_optimizer = saved


def median_ratio(a: list[float], b: list[float]) -> float:
    return float(np.median(np.asarray(a) / np.asarray(b)))


def ms(x: float) -> str:
    return f"{1000 * x:.0f}" if x >= 0.01 else f"{1000 * x:.1f}"


def pm(values) -> str:
    v = np.asarray(values, dtype=float)
    return f"{v.mean():.3f} ± {v.std(ddof=1) if len(v) > 1 else 0:.3f}"


# -- matmuls alone -------------------------------------------------------------------------------------------
def linear_calls(method, X_t, Y_t, rows: int) -> list[tuple[int, int, int, bool]]:
    """(rows, in, out, input needs grad) of every nn.Linear call in one training step on ``rows`` rows."""
    from mlkd.methods.base import Batch, StepContext

    calls = []

    def record(mod, inp, out):
        calls.append((inp[0].shape[0], mod.in_features, mod.out_features, inp[0].requires_grad))

    hooks = [m.register_forward_hook(record) for m in method.modules() if isinstance(m, torch.nn.Linear)]
    try:
        method.train()
        idx = torch.arange(rows)
        method.step(Batch(X_t[idx], Y_t[idx], idx), StepContext(0, 1, torch.Generator().manual_seed(0)))
    finally:
        for h in hooks:
            h.remove()
    return calls


def forward_calls(method, rows: int, n_features: int) -> list[tuple[int, int, int, bool]]:
    calls = []
    hooks = [m.register_forward_hook(lambda mod, inp, out: calls.append((inp[0].shape[0], mod.in_features,
                                                                         mod.out_features, False)))
             for m in method.modules() if isinstance(m, torch.nn.Linear)]
    try:
        method.eval()
        with torch.no_grad():
            method(torch.zeros(rows, n_features))
    finally:
        for h in hooks:
            h.remove()
    return calls


def matmul_plan(method, X_t, Y_t, bs: int, n_val: int):
    """The matmuls of one epoch: per batch, forward x·Wᵀ, backward g·W (if the input needs a gradient) and
    gᵀ·x; then the validation forward. Random operands of the same shapes."""
    n = X_t.shape[0]
    sizes = [min(bs, n - b) for b in range(0, n, bs)]
    per_size = {r: linear_calls(method, X_t, Y_t, r) for r in set(sizes)}
    ops = []
    for r in sizes:
        for rows, i, o, grad_in in per_size[r]:
            ops.append((rows, i, o, True, grad_in))
    for rows, i, o, _ in forward_calls(method, n_val, X_t.shape[1]):
        ops.append((rows, i, o, False, False))
    operands = {}
    for rows, i, o, _, _ in ops:
        key = (rows, i, o)
        if key not in operands:
            operands[key] = (torch.randn(rows, i), torch.randn(o, i), torch.randn(rows, o))
    return [(operands[(rows, i, o)], backward, grad_in) for rows, i, o, backward, grad_in in ops]


def matmul_seconds(plan) -> float:
    t0 = time.perf_counter()
    for (x, w, g), backward, grad_in in plan:
        torch.mm(x, w.T)
        if backward:
            if grad_in:
                torch.mm(g, w)
            torch.mm(g.T, x)
    return time.perf_counter() - t0


def trainer_epochs(method_name: str, data, bs: int, epochs: int, fused: bool = False, **params) -> list[float]:
    """Per-epoch seconds (validation included) of Trainer.fit, first epoch dropped (warm-up)."""
    from mlkd.methods import build_method
    from mlkd.trainer import TrainConfig, Trainer

    X, Y, Xv, Yv = data[:4]
    model = build_method(method_name, X.shape[1], Y.shape[1], params, seed=0)
    cfg = TrainConfig(max_epochs=epochs, patience=10**6, batch_size=bs, fused_optimizer=fused)
    res = Trainer(cfg).fit(model, X, Y, Xv, Yv)
    return [h["seconds"] for h in res.history[1:]]


# -- 1. flops ------------------------------------------------------------------------------------------------
def section_flops(args) -> str:
    from mlkd.methods import build_method

    lines = ["| data set (rows × features → labels) | method | batch | epoch, defaults (ms) | epoch, fused AdamW "
             "(ms) | matmuls alone (ms) | ratio, defaults | ratio, fused | ≤ 2× (defaults; fused) |", "|---" * 9 + "|"]
    for ds in args.datasets:
        data = prepared(ds)
        X_t, Y_t = torch.as_tensor(data[0]), torch.as_tensor(data[1], dtype=torch.float32)
        big = len(data[0]) > 5000
        epochs, repeats = (2, min(args.repeats, 2)) if big else (5, args.repeats)
        for method in ("skdtea", "bce"):
            for bs in (64, 512):
                plan = matmul_plan(build_method(method, X_t.shape[1], Y_t.shape[1], seed=0), X_t, Y_t, bs,
                                   len(data[2]))
                mm, ep, fused = [], [], []
                for _ in range(repeats):
                    mm.append(matmul_seconds(plan))
                    ep.append(float(np.median(trainer_epochs(method, data, bs, epochs))))
                    fused.append(float(np.median(trainer_epochs(method, data, bs, epochs, fused=True))))
                ratio, ratio_fused = median_ratio(ep, mm), median_ratio(fused, mm)
                shape = f"{ds} ({len(data[0])} × {X_t.shape[1]} → {Y_t.shape[1]})"
                lines.append(f"| {shape} | {method} | {bs} | {ms(np.median(ep))} | {ms(np.median(fused))} | "
                             f"{ms(np.median(mm))} | {ratio:.2f} | {ratio_fused:.2f} | "
                             f"{'yes' if ratio <= 2 else 'no'}; {'yes' if ratio_fused <= 2 else 'no'} |")
                print(lines[-1], flush=True)
    return "\n".join([
        "Epoch = one `Trainer.fit` epoch with the library defaults (one thread, AdamW's per-parameter update, "
        "validation pass and vectorised validation mAP included), and with the opt-in "
        "`TrainConfig(fused_optimizer=True)`; median over epochs 2…5 (delicious: epoch 2); *matmuls alone* = "
        "every `nn.Linear` product of that epoch — forward x·Wᵀ, backward g·W and gᵀ·x, the validation "
        f"forward — as bare `torch.mm` on random operands of the same shapes. {args.repeats} interleaved repeats "
        f"(delicious {min(args.repeats, 2)}); ratio = median of per-repeat ratios.", "", *lines])


# -- 2. breakdown --------------------------------------------------------------------------------------------
def _step_loop(method, X_t, Y_t, bs, optimizer, perm) -> float:
    from mlkd.methods.base import Batch, StepContext

    ctx = StepContext(0, 1, torch.Generator().manual_seed(1))
    method.train()
    t0 = time.perf_counter()
    for begin in range(0, X_t.shape[0], bs):
        idx = perm[begin : begin + bs]
        out = method.step(Batch(X_t[idx], Y_t[idx], idx), ctx)
        total = sum(out.losses.values())
        method.zero_grad(set_to_none=True)
        total.backward()
        if optimizer is not None:
            optimizer.step()
    return time.perf_counter() - t0


def _validation_seconds(method, Xv, Yv) -> float:
    from mlkd.trainer import _validation_score, predict_logits

    t0 = time.perf_counter()
    _validation_score(predict_logits(method, Xv), Yv, "mAP")
    return time.perf_counter() - t0


def section_breakdown(args) -> str:
    from mlkd.methods import build_method
    from mlkd.trainer import TrainConfig, _make_optimizer

    rows = []
    for ds in args.breakdown_datasets:
        data = prepared(ds)
        X_t, Y_t = torch.as_tensor(data[0]), torch.as_tensor(data[1], dtype=torch.float32)
        Xv, Yv = torch.as_tensor(data[2]), torch.as_tensor(data[3], dtype=torch.float32)
        big = len(data[0]) > 5000
        epochs, repeats = (2, 1) if big else (5, args.repeats)
        for method_name in ("skdtea", "bce"):
            bs = 64
            base = build_method(method_name, X_t.shape[1], Y_t.shape[1], seed=0)
            no_dropout = copy.deepcopy(base)
            for mod in list(no_dropout.modules()):
                for child_name, child in list(mod.named_children()):
                    if isinstance(child, torch.nn.Dropout):
                        setattr(mod, child_name, torch.nn.Identity())
            plan = matmul_plan(base, X_t, Y_t, bs, len(Xv))
            cfg, cfg_fused = TrainConfig(), TrainConfig(fused_optimizer=True)
            t = {k: [] for k in ("epoch", "fused", "legacy", "mm", "steps", "steps_fused_opt", "steps_no_opt",
                                 "steps_no_dropout", "val", "val_legacy")}
            perm = torch.randperm(X_t.shape[0], generator=torch.Generator().manual_seed(0))
            for _ in range(repeats):
                t["epoch"].append(float(np.median(trainer_epochs(method_name, data, bs, epochs))))
                t["fused"].append(float(np.median(trainer_epochs(method_name, data, bs, epochs, fused=True))))
                with legacy_trainer():
                    t["legacy"].append(float(np.median(trainer_epochs(method_name, data, bs, epochs))))
                    t["val_legacy"].append(_validation_seconds(copy.deepcopy(base), Xv, Yv))
                m = copy.deepcopy(base)
                t["steps_fused_opt"].append(_step_loop(m, X_t, Y_t, bs, _make_optimizer(list(m.parameters()),
                                                                                         cfg_fused), perm))
                t["mm"].append(matmul_seconds(plan))
                m = copy.deepcopy(base)
                t["steps"].append(_step_loop(m, X_t, Y_t, bs, _make_optimizer(list(m.parameters()), cfg), perm))
                t["steps_no_opt"].append(_step_loop(copy.deepcopy(base), X_t, Y_t, bs, None, perm))
                m = copy.deepcopy(no_dropout)
                t["steps_no_dropout"].append(_step_loop(m, X_t, Y_t, bs, _make_optimizer(list(m.parameters()), cfg),
                                                        perm))
                t["val"].append(_validation_seconds(m, Xv, Yv))
            med = {k: float(np.median(v)) for k, v in t.items()}
            rows.append((ds, method_name, med, median_ratio(t["legacy"], t["epoch"]),
                         median_ratio(t["legacy"], t["fused"])))
            print(ds, method_name, {k: ms(v) for k, v in med.items()}, flush=True)
    lines = ["| data set | method | epoch before → defaults → fused (ms) | speed-up (defaults; fused) | matmuls | "
             "dropout RNG | optimizer (per-parameter; fused) | validation (vectorised mAP; before: sklearn) | "
             "rest: autograd, elementwise, Python |", "|---" * 9 + "|"]
    for ds, method_name, m, speedup, speedup_fused in rows:
        dropout = max(m["steps"] - m["steps_no_dropout"], 0.0)
        opt = max(m["steps"] - m["steps_no_opt"], 0.0)
        opt_fused = max(m["steps_fused_opt"] - m["steps_no_opt"], 0.0)
        rest = max(m["steps"] - m["mm"] - dropout - opt, 0.0)
        lines.append(f"| {ds} | {method_name} | {ms(m['legacy'])} → {ms(m['epoch'])} → {ms(m['fused'])} | "
                     f"{speedup:.2f}×; {speedup_fused:.2f}× | {ms(m['mm'])} | {ms(dropout)} | {ms(opt)}; "
                     f"{ms(opt_fused)} | {ms(m['val'])}; {ms(m['val_legacy'])} | {ms(rest)} |")
    return "\n".join([
        f"Batch 64, times per epoch in ms (medians of {args.repeats} interleaved repeats; delicious: one, epoch 2 "
        "of a fit). *Before* = this trainer with sklearn's per-label "
        "`average_precision_score` for the validation score put back; *defaults* = now (vectorised validation "
        "mAP, AdamW's per-parameter update); *fused* = defaults + `TrainConfig(fused_optimizer=True)` (opt-in: "
        "same update up to float rounding). Components come from the same step loop run without one part each: "
        "*dropout RNG* = with vs without the dropout layers (`bernoulli_` on CPU is ~10 ns per element), "
        "*optimizer* = with vs without `optimizer.step()`, *rest* = the step loop minus matmuls, dropout and "
        "optimizer.", "",
        *lines])


# -- 3. DataLoader loop --------------------------------------------------------------------------------------
def dataloader_fit(method_name, data, seed, bs, max_epochs, patience=20):
    """The reference implementations' loop: DataLoader(TensorDataset) with shuffle, AdamW as constructed
    by default, ``loss.item()`` per step, sklearn's mAP on the validation set each epoch, early stopping
    with the best state restored. Returns (model, per-epoch seconds)."""
    from torch.utils.data import DataLoader, TensorDataset

    from mlkd.methods import build_method
    from mlkd.methods.base import Batch, StepContext
    from mlkd.metrics import mean_average_precision

    X, Y, Xv, Yv = data[:4]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_method(method_name, X.shape[1], Y.shape[1], seed=seed)
        loader = DataLoader(TensorDataset(torch.as_tensor(X), torch.as_tensor(Y, dtype=torch.float32)),
                            batch_size=bs, shuffle=True, generator=torch.Generator().manual_seed(seed))
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
        gen = torch.Generator().manual_seed(seed + 1)
        Xv_t = torch.as_tensor(Xv)
        best, best_state, since, seconds = -1.0, None, 0, []
        for epoch in range(max_epochs):
            t0 = time.perf_counter()
            model.train()
            ctx = StepContext(epoch, max_epochs, gen)
            running = 0.0
            for xb, yb in loader:
                out = model.step(Batch(xb, yb, torch.arange(len(xb))), ctx)
                loss = sum(out.losses.values())
                opt.zero_grad()
                loss.backward()
                opt.step()
                running += loss.item() * len(xb)
            model.eval()
            with torch.no_grad():
                score = mean_average_precision(Yv, torch.sigmoid(model(Xv_t)).numpy())
            if score > best:
                best, best_state, since = score, copy.deepcopy(model.state_dict()), 0
            else:
                since += 1
            seconds.append(time.perf_counter() - t0)
            if since >= patience:
                break
        model.load_state_dict(best_state)
    return model, seconds


def section_dataloader(args) -> str:
    from mlkd.methods import build_method
    from mlkd.trainer import TrainConfig, Trainer

    lines = ["| data set | method | batch | DataLoader loop (ms/epoch) | mlkd defaults (ms/epoch) | mlkd fused AdamW "
             "(ms/epoch) | speed-up (defaults; fused) | ≥ 3× | test mAP DataLoader loop | test mAP mlkd |",
             "|---" * 10 + "|"]
    for ds in args.dataloader_datasets:
        data = prepared(ds)
        big = len(data[0]) > 5000
        for method_name in ("bce",) if big else ("skdtea", "bce"):  # delicious: sklearn's mAP takes ~20 s an epoch
            for bs in (64, 512):
                full = bs == 64 and ds in args.dataloader_full_fits  # metrics at the default batch size
                ours, fused, ref, maps_ours, maps_ref = [], [], [], [], []
                for seed in range(args.seeds if full else 1):
                    model = build_method(method_name, data[0].shape[1], data[1].shape[1], seed=seed)
                    epochs = 200 if full else 2 if big else 4
                    res = Trainer(TrainConfig(seed=seed, batch_size=bs, max_epochs=epochs)).fit(model, *data[:4])
                    ours.append(float(np.median([h["seconds"] for h in res.history[1:]])))
                    fused.append(float(np.median(trainer_epochs(method_name, data, bs, 2 if big else 4, fused=True))))
                    ref_model, ref_seconds = dataloader_fit(method_name, data, seed, bs, epochs)
                    ref.append(float(np.median(ref_seconds[1:])))
                    if full:
                        maps_ours.append(test_map(model, data[4], data[5]))
                        maps_ref.append(test_map(ref_model, data[4], data[5]))
                ratio, ratio_fused = median_ratio(ref, ours), median_ratio(ref, fused)
                lines.append(f"| {ds} | {method_name} | {bs} | {ms(np.median(ref))} | {ms(np.median(ours))} | "
                             f"{ms(np.median(fused))} | {ratio:.2f}×; {ratio_fused:.2f}× | "
                             f"{'yes' if ratio >= 3 else 'no'}; {'yes' if ratio_fused >= 3 else 'no'} | "
                             f"{pm(maps_ref) if full else '—'} | {pm(maps_ours) if full else '—'} |")
                print(lines[-1], flush=True)
    return "\n".join([
        "Same model, same batch size, same AdamW settings, early stopping on validation mAP with patience 20. "
        "*DataLoader loop*: `DataLoader(TensorDataset(X, Y), shuffle=True)`, AdamW as constructed by default, "
        "`loss.item()` per step, sklearn mAP on the validation set each epoch — the reference implementations' "
        "way. *mlkd*: `Trainer.fit` with the defaults (index batches of in-memory tensors, vectorised validation "
        "mAP) and with the opt-in fused AdamW (a short fit of seed 0). "
        f"Rows with a test mAP are full fits to early stopping for seeds 0…{args.seeds - 1} (per-epoch medians; test "
        "mAP mean ± std over seeds: the two loops differ in batch order and float rounding, so they agree in "
        "distribution, not bit for bit); other rows time epochs 2… of a short fit of seed 0 (delicious: epoch 2 "
        "of 2, bce only).", "", *lines])


# -- 4. equivalence ------------------------------------------------------------------------------------------
def section_equivalence(args) -> str:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from common import run_cell

    lines = ["| data set | method | test mAP before | test mAP defaults | test metrics, threshold, epochs identical | "
             "test mAP fused | Δ fused − defaults | seed std | ebF1@tuned defaults; fused | fit s before → defaults "
             "→ fused |", "|---" * 10 + "|"]

    def same(r1, r2):
        keys = ("at_05", "at_tuned", "threshold", "best_epoch", "epochs_run")
        return (all(json.dumps(r1[k]) == json.dumps(r2[k]) for k in keys)  # NaN == NaN here
                and abs(r1["val_mAP"] - r2["val_mAP"]) < 1e-12)

    for ds in args.equivalence_datasets:
        for method_name in ("skdtea", "bce"):
            before, after, fused = [], [], []
            for seed in range(args.seeds):
                cell = {"dataset": ds, "method": method_name, "params": {}, "seed": seed}
                with legacy_trainer():
                    before.append(run_cell(cell))
                after.append(run_cell(cell))
                with fused_adamw():
                    fused.append(run_cell(cell))
            b, a, f = ([r["at_tuned"]["mAP"] for r in rows] for rows in (before, after, fused))
            spread = float(np.sqrt((np.var(a, ddof=1) + np.var(f, ddof=1)) / 2))
            identical = all(same(r1, r2) for r1, r2 in zip(before, after, strict=True))
            fit_s = " → ".join(f"{np.mean([r['fit_s'] for r in rows]):.1f}" for rows in (before, after, fused))
            lines.append(
                f"| {ds} | {method_name} | {pm(b)} | {pm(a)} | {'yes' if identical else 'no'} | {pm(f)} | "
                f"{np.mean(f) - np.mean(a):+.4f} | {spread:.4f} | "
                f"{pm([r['at_tuned']['example_f1'] for r in after])}; "
                f"{pm([r['at_tuned']['example_f1'] for r in fused])} | {fit_s} |")
            print(lines[-1], flush=True)
    return "\n".join([
        f"Full protocol cells (`benchmarks/common.run_cell`: estimator fit, early stopping, tuned threshold, test "
        f"once), seeds 0…{args.seeds - 1}. *Before* = sklearn validation mAP (the trainer before this issue), "
        "*defaults* = vectorised validation mAP (equal to sklearn's to 1e-12, so early stopping decides alike: "
        "every test metric, the threshold and the epochs must be identical; the validation mAP itself may differ "
        "in the last bit), *fused* = defaults + opt-in fused AdamW (the same update up to float "
        "rounding, which training amplifies into a different, equally good trajectory: Δ must stay inside "
        "the seed std).", "", *lines])


# -- 5. batched fits -----------------------------------------------------------------------------------------
def section_batched(args) -> str:
    from mlkd.batched import fit_seeds
    from mlkd.methods import build_method
    from mlkd.trainer import TrainConfig, Trainer

    seeds = list(range(args.batch_members))
    lines = ["| data set | method | hidden | fits | one after another (s) | batched (s) | fits/min sequential → "
             "batched | speed-up | test mAP sequential | test mAP batched |", "|---" * 10 + "|"]
    fit_seeds("bce", *prepared(args.batched_datasets[0])[:4], seeds=[0, 1], config=TrainConfig(max_epochs=1))  # warm
    for ds in args.batched_datasets:
        data = prepared(ds)
        for method_name, hidden in (("skdtea", 512), ("bce", 512), ("skdtea", 128)):
            params = {"hidden": hidden}
            t0 = time.perf_counter()
            seq = []
            for s in seeds:
                model = build_method(method_name, data[0].shape[1], data[1].shape[1], params, seed=s)
                Trainer(TrainConfig(seed=s)).fit(model, *data[:4])
                seq.append(test_map(model, data[4], data[5]))
            t_seq = time.perf_counter() - t0
            t0 = time.perf_counter()
            fits = fit_seeds(method_name, *data[:4], seeds=seeds, params=params)
            t_bat = time.perf_counter() - t0
            bat = [test_map(model, data[4], data[5]) for model, _ in fits]
            k = len(seeds)
            lines.append(f"| {ds} | {method_name} | {hidden} | {k} | {t_seq:.1f} | {t_bat:.1f} | "
                         f"{60 * k / t_seq:.0f} → {60 * k / t_bat:.0f} | {t_seq / t_bat:.2f}× | {pm(seq)} | "
                         f"{pm(bat)} |")
            print(lines[-1], flush=True)
    return "\n".join([
        f"{len(seeds)} seeds of one configuration (defaults; *hidden* as shown) to early stopping: `Trainer.fit` per "
        "seed one after another vs `mlkd.batched.fit_seeds` (members stacked with `torch.func.stack_module_state`, "
        "the method's own `step` under `vmap(functional_call)`, per-member early stopping, stopped members "
        "dropped from the stack). Each member has its seed's initial weights and batch order; dropout and label "
        "noise come from one vmapped stream, so per-seed numbers differ and the comparison is in distribution "
        "(mean ± std over the seeds). With no random draws (dropout 0, bce) a member equals its sequential fit "
        "to float rounding, same stopping epoch (tests/test_batched.py). The batched fit uses fused AdamW "
        "(its members cannot match sequential fits bit for bit anyway); the sequential fits use the defaults.",
        "", *lines])


# -- 6. memory -----------------------------------------------------------------------------------------------
MEMORY_CHILD = """
import resource, sys, time, warnings
warnings.simplefilter("ignore")
from mlkd import MultiLabelClassifier
from mlkd.data import load_dataset
d = load_dataset("delicious")
t0 = time.perf_counter()
clf = MultiLabelClassifier(sys.argv[1], max_epochs=int(sys.argv[2])).fit(d.train.X, d.train.Y)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, time.perf_counter() - t0, len(clf.history_))
"""


def section_memory(args) -> str:
    lines = ["| method | epochs | peak RSS (MB) | < 2 GB | fit s |", "|---|---|---|---|---|"]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    for method_name in ("skdtea", "bce"):
        out = subprocess.run([sys.executable, "-c", MEMORY_CHILD, method_name, "3"], env=env, check=True,
                             capture_output=True, text=True).stdout.split()
        rss_mb = int(out[0]) / 1024
        lines.append(f"| {method_name} | {out[2]} | {rss_mb:.0f} | {'yes' if rss_mb < 2048 else 'no'} | "
                     f"{float(out[1]):.1f} |")
        print(lines[-1], flush=True)
    return "\n".join([
        "delicious (12 920 × 500, 983 labels): a child process runs `MultiLabelClassifier(method, max_epochs=3)"
        ".fit` on the training split (data loading, scaling, validation split, fit, threshold tuning) and "
        "reports its own `resource.getrusage(RUSAGE_SELF).ru_maxrss`.", "", *lines])


# -- 7. peers ------------------------------------------------------------------------------------------------
def section_peers(args) -> str:
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.neural_network import MLPClassifier
    from threadpoolctl import threadpool_limits

    from mlkd import MultiLabelClassifier
    from mlkd.metrics import mean_average_precision

    lines = ["| data set | model | fit s | × mlkd bce | epochs | ms/epoch | test mAP |", "|---" * 7 + "|"]
    for ds in args.peer_datasets:
        data = prepared(ds)
        X = np.vstack([data[0], data[2]])  # the peers split their own validation part off
        Y = np.vstack([data[1], data[3]])
        rows = {}
        with threadpool_limits(1):  # BLAS threads as mlkd's one torch thread
            for name, make in [
                ("mlkd bce (h 512, 512)", lambda: MultiLabelClassifier("bce", random_state=0)),
                ("mlkd skdtea", lambda: MultiLabelClassifier("skdtea", random_state=0)),
                ("sklearn MLPClassifier (512, 512), early_stopping",
                 lambda: MLPClassifier((512, 512), early_stopping=True, random_state=0, max_iter=200)),
                ("sklearn OneVsRest(LogisticRegression)",
                 lambda: OneVsRestClassifier(LogisticRegression(max_iter=1000))),
            ]:
                model = make()
                t0 = time.perf_counter()
                model.fit(X, Y)
                seconds = time.perf_counter() - t0
                epochs = len(model.history_) if hasattr(model, "history_") else getattr(model, "n_iter_", None)
                rows[name] = (seconds, mean_average_precision(data[5], model.predict_proba(data[4])), epochs)
        ref = rows["mlkd bce (h 512, 512)"][0]
        for name, (seconds, score, epochs) in rows.items():
            per_epoch = f"{ms(seconds / epochs)}" if isinstance(epochs, int) else "—"
            lines.append(f"| {ds} | {name} | {seconds:.1f} | {seconds / ref:.2f} | {epochs or '—'} | {per_epoch} | "
                         f"{score:.3f} |")
            print(lines[-1], flush=True)
    return "\n".join([
        "Each model fits the whole official training split (mlkd and MLPClassifier hold out their own "
        "validation part for early stopping), seed 0, one BLAS/torch thread each, in one run; test mAP on the "
        "official test split. × mlkd bce = fit time ÷ mlkd BCE-MLP's. The stopping rules differ (sklearn: "
        "10 epochs without a gain in validation *subset accuracy*, batch 200; mlkd: 20 epochs without a gain "
        "in validation mAP, batch 64), so compare ms/epoch for speed and test mAP for quality.", "", *lines])


# -- 8. profile ----------------------------------------------------------------------------------------------
GRID_CHILD = """
import sys, warnings
warnings.simplefilter("ignore")
sys.path.insert(0, {bench!r})
import torch
torch.set_num_threads(1)
import perf
from common import run_cell
ctx = perf.legacy_trainer() if sys.argv[1] == "before" else __import__("contextlib").nullcontext()
with ctx:
    for method in {methods!r}:
        run_cell({{"dataset": sys.argv[2], "method": method, "params": {{}}, "seed": 0}})
"""

KERNEL_MARKERS = ("at::native::", "mkl_", "gemm", "dnnl", "Sleef", "at::vec::", "cpu_kernel", "_fused_adamw",
                  "bernoulli", "at::vml")


IDLE = "idle background thread (tqdm's monitor)"


def classify(stack: str) -> tuple[str, bool]:
    """(phase of the grid, whether the sample is inside a tensor kernel) for one py-spy stack."""
    kernel = any(m in stack for m in KERNEL_MARKERS)
    if "threading.py" in stack and "wait" in stack:
        return IDLE, False
    if "gc_collect" in stack:
        return "Python garbage collector", False
    if "importlib" in stack:
        return "imports, interpreter start", kernel
    if "arff" in stack:
        return "data loading (ARFF parsing)", kernel
    if "_validation_score" in stack:
        return "validation score each epoch (forward + mAP)", kernel
    if "trainer.py" in stack and "_fit " in stack:
        if kernel:
            return "training steps: tensor kernels", kernel
        return ("training steps: torch C++ dispatch / autograd" if "libtorch" in stack
                else "training steps: Python"), kernel
    if "metrics.py" in stack:
        return "test metrics, threshold tuning (sklearn)", kernel
    return "other", kernel


def section_profile(args) -> str:
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).exists():
        return "py-spy is not installed (`.venv/bin/pip install py-spy`); section skipped."
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    ds = args.profile_dataset
    script = GRID_CHILD.format(bench=str(ROOT / "benchmarks"), methods=FOUNDATION)
    shares, walls = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for variant in ("before", "after"):
            raw = Path(tmp) / f"{variant}.txt"
            t0 = time.perf_counter()
            subprocess.run([spy, "record", "--native", "--format", "raw", "--rate", "50", "-o", str(raw), "--",
                            sys.executable, "-c", script, variant, ds], env=env, check=True, capture_output=True)
            walls[variant] = time.perf_counter() - t0
            counts: Counter = Counter()
            in_kernels = 0
            for line in raw.read_text().splitlines():
                stack, _, n = line.rpartition(" ")
                if n.isdigit():
                    phase, kernel = classify(stack)
                    if phase == IDLE:  # a sleeping thread, not time the grid spends
                        continue
                    counts[phase] += int(n)
                    in_kernels += int(n) * kernel
            total = sum(counts.values())
            shares[variant] = {k: v / total for k, v in counts.items()}
            shares[variant]["kernels"] = in_kernels / total
            print(variant, walls[variant], shares[variant], flush=True)
    cats = sorted({k for s in shares.values() for k in s} - {"kernels"}, key=lambda k: -shares["after"].get(k, 0))
    lines = ["| where the samples are | before (s) | after (s) | before | after |", "|---|---|---|---|---|"]
    for k in cats:
        b, a = shares["before"].get(k, 0), shares["after"].get(k, 0)
        lines.append(f"| {k} | {b * walls['before']:.1f} | {a * walls['after']:.1f} | {100 * b:.0f} % | "
                     f"{100 * a:.0f} % |")
    b, a = 1 - shares["before"]["kernels"], 1 - shares["after"]["kernels"]
    lines.append(f"| **outside tensor kernels (all phases)** | {b * walls['before']:.1f} | {a * walls['after']:.1f} | "
                 f"**{100 * b:.0f} %** | **{100 * a:.0f} %** |")
    lines.append(f"| wall time of the grid under py-spy | {walls['before']:.1f} | {walls['after']:.1f} | | |")
    return "\n".join([
        f"The foundation grid on {ds} ({', '.join(FOUNDATION)}, seed 0, one protocol cell each: load, fit, "
        "evaluate) in a child process under `py-spy record --native` (50 Hz); each sample is classed by its "
        "native stack (phase by the Python frames, kernel = an ATen/MKL kernel frame; samples of a sleeping "
        "background thread are left out); seconds = share × wall. "
        "*Before* = sklearn's validation mAP (what this issue replaced); *after* = the defaults now.", "",
        *lines])


# -- 9. DDP --------------------------------------------------------------------------------------------------
def section_ddp(args) -> str:
    from mlkd.distributed import fit_ddp
    from mlkd.methods import build_method
    from mlkd.trainer import TrainConfig, Trainer

    data = prepared("delicious")
    lines = ["| method | global batch | processes | ms/epoch (epochs 2…) | wall incl. start (s) | best val mAP | "
             "max abs Δ weight vs 1 process (lr 1e-3) |", "|---|---|---|---|---|---|---|"]
    for method_name in ("bce",):
        params = {"dropout": 0.0}  # deterministic: 2 processes then differ from 1 only by summation order
        cfg = TrainConfig(max_epochs=args.ddp_epochs, patience=10**6, batch_size=512)
        single = build_method(method_name, data[0].shape[1], data[1].shape[1], params, seed=0)
        t0 = time.perf_counter()
        res1 = Trainer(cfg).fit(single, *data[:4])
        wall1 = time.perf_counter() - t0
        double = build_method(method_name, data[0].shape[1], data[1].shape[1], params, seed=0)
        t0 = time.perf_counter()
        res2 = fit_ddp(double, *data[:4], config=cfg, nproc=2)
        wall2 = time.perf_counter() - t0
        diff = max((a - b).abs().max().item() for a, b in zip(single.parameters(), double.parameters(), strict=True))
        for k, res, wall in ((1, res1, wall1), (2, res2, wall2)):
            lines.append(f"| {method_name} (dropout 0) | 512 | {k} | "
                         f"{ms(np.median([h['seconds'] for h in res.history[1:]]))} | {wall:.1f} | "
                         f"{res.best_score:.4f} | {'—' if k == 1 else f'{diff:.1e}'} |")
            print(lines[-1], flush=True)
    return "\n".join([
        f"delicious, {args.ddp_epochs} epochs, `Trainer.fit` in this process vs `mlkd.distributed.fit_ddp(nproc=2)` "
        "(2 spawned processes, gloo, each with one thread and half of every global batch). On this 2-core machine "
        "with other jobs running the second process has no free core, so this row shows correctness and "
        "overhead, not scaling.", "", *lines])


SECTIONS = {"flops": section_flops, "breakdown": section_breakdown, "dataloader": section_dataloader,
            "equivalence": section_equivalence, "batched": section_batched, "memory": section_memory,
            "peers": section_peers, "profile": section_profile, "ddp": section_ddp}
TITLES = {"flops": "1. Near the FLOP limit: epoch time ÷ its matmuls alone",
          "breakdown": "1b. Where an epoch's time goes (batch 64)",
          "dataloader": "2. Against the usual DataLoader loop",
          "equivalence": "Speed changes leave the metrics alone",
          "batched": "3. Many small fits at once (mlkd.batched)",
          "memory": "5. Memory: one delicious fit",
          "peers": "6. Peers in the same run",
          "profile": "4. Whole grid under a sampling profiler",
          "ddp": "7. Scale-out: DDP (mlkd.distributed)"}


def render(results: dict) -> str:
    head = [f"Command: `MLKD_DATA=../shared/datasets/mulan .venv/bin/python benchmarks/perf.py` (sections: "
            f"`--only {','.join(ORDER)}`); {platform.machine()}, {os.cpu_count()} cores shared with other jobs, "
            f"torch {torch.__version__}, one torch thread, the library defaults (AdamW's per-parameter update) and, "
            "where shown, the opt-in `TrainConfig(fused_optimizer=True)`. Every figure is a ratio of A and B "
            "measured in the same run, interleaved; the load average (1 / 5 / 15 min) is given per section."]
    for name in ORDER:
        if name not in results:
            continue
        r = results[name]
        head += ["", f"**{TITLES[name]}** — `{r['command']}`, {r['when']}, load {r['load_before']} → "
                     f"{r['load_after']}, {r['seconds']:.0f} s", "", r["markdown"]]
    return "\n".join(head)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default=",".join(ORDER), help="comma-separated sections (default: all)")
    ap.add_argument("--repeats", type=int, default=3, help="interleaved repeats of each timing (default 3)")
    ap.add_argument("--seeds", type=int, default=3, help="seeds for the metric comparisons (default 3)")
    ap.add_argument("--members", dest="batch_members", type=int, default=8, help="seeds per batched fit (8)")
    ap.add_argument("--ddp-epochs", type=int, default=4)
    ap.add_argument("--no-write", action="store_true", help="print only; leave perf.json and BENCHMARKS.md")
    args = ap.parse_args()
    args.datasets = ["yeast", "scene", "delicious"]
    args.breakdown_datasets = ["yeast", "delicious"]
    args.dataloader_datasets = ["yeast", "scene", "delicious"]
    args.dataloader_full_fits = ["yeast"]  # metrics from full fits here; the others time a few epochs
    args.equivalence_datasets = ["emotions", "yeast"]
    args.batched_datasets = ["emotions", "yeast"]
    args.peer_datasets = ["yeast", "scene"]
    args.profile_dataset = "yeast"
    wanted = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = sorted(set(wanted) - set(SECTIONS))
    if unknown:
        ap.error(f"unknown section(s) {unknown}; expected some of {ORDER}")
    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    options = {"--repeats": (args.repeats, 3), "--seeds": (args.seeds, 3), "--members": (args.batch_members, 8),
               "--ddp-epochs": (args.ddp_epochs, 4)}
    argv = " ".join(f"{k} {v}" for k, (v, default) in options.items() if v != default)
    for name in [s for s in ORDER if s in wanted]:
        print(f"== {name} (load {load()})", flush=True)
        before, t0 = load(), time.perf_counter()
        markdown = SECTIONS[name](args)
        results[name] = {"markdown": markdown, "load_before": before, "load_after": load(),
                         "seconds": time.perf_counter() - t0, "when": time.strftime("%Y-%m-%d %H:%M"),
                         "command": re.sub(r"\s+", " ", f"benchmarks/perf.py --only {name} {argv}").strip()}
        if not args.no_write:
            RESULTS.write_text(json.dumps(results, indent=1))
            replace_block("perf", render(results))
    print(render(results))


if __name__ == "__main__":
    main()
