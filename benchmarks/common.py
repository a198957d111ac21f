"""Shared pieces of the benchmark scripts: one protocol cell, a resumable JSONL store, Markdown output."""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import re
import time
import warnings
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np

from mlkd.trainer import REFERENCE_KERNELS

#: ``mlkd bench`` arguments for the reference path (``REFERENCE_KERNELS``), the training settings every
#: published cell was fitted with: its scripts pin them so a rerun reproduces the tables bit for bit and a
#: finished cell keeps its key, while the library's default is the fast path (same metrics up to seed noise).
REFERENCE_PARAMS = [arg for k, v in REFERENCE_KERNELS.items() for arg in ("--param", f"{k}={str(v).lower()}")]

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS_MD = ROOT / "BENCHMARKS.md"


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)  # N workers on N cores: no oversubscription
    warnings.simplefilter("ignore")


#: Training fields added after cells were cached, at values that reproduce the earlier behaviour exactly.
NEUTRAL_TRAIN_DEFAULTS = {"fused_optimizer": False, "fused_mlp": False}


def reference_config_hash(method: str) -> str:
    """The ``mlkd bench`` config hash of ``method`` with its defaults on the reference path: the headline's cells."""
    from mlkd.bench.grid import config_hash
    from mlkd.bench.grid import resolved_config as bench_config

    return config_hash(bench_config(method, {}, REFERENCE_KERNELS))


def resolved_config(cell: dict) -> dict:
    """Everything that determines a cell's numbers: method defaults merged with its params, training defaults."""
    from dataclasses import asdict

    from mlkd.methods import config_fields
    from mlkd.trainer import EARLY_STOPPING_RULE, TrainConfig

    train = asdict(TrainConfig(**REFERENCE_KERNELS))  # the tables' cells: the reference path (see run_cell)
    for execution_only in ("num_threads", "device", "progress"):  # how a fit runs, not what it computes
        train.pop(execution_only)
    for added_later, neutral in NEUTRAL_TRAIN_DEFAULTS.items():  # keep earlier cells' keys valid
        if train.get(added_later) == neutral:
            train.pop(added_later)
    train["early_stopping"] = EARLY_STOPPING_RULE
    return {"method": {**config_fields(cell["method"]), **cell["params"]}, "train": train}


def cell_key(cell: dict) -> str:
    blob = json.dumps({"dataset": cell["dataset"], "name": cell["method"], "seed": cell["seed"],
                       **resolved_config(cell)}, sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:16]


def run_cell(cell: dict) -> dict:
    """Fit one (dataset, method, params, seed) under PROTOCOL.md and evaluate the test split once."""
    import torch

    import mlkd
    from mlkd import MultiLabelClassifier
    from mlkd.data import load_dataset, validation_split
    from mlkd.metrics import evaluate

    data = load_dataset(cell["dataset"])
    tr, va = validation_split(data.train.Y, fraction=1 / 6, seed=0)  # fixed split; seeds vary init + order
    X, Y = data.train.X, data.train.Y
    # The reference path (per-parameter AdamW, nn.Dropout): the kernels these tables' cells were fitted with, so
    # a rerun reproduces them bit for bit; the default fast path agrees up to seed noise (BENCHMARKS.md).
    clf = MultiLabelClassifier(cell["method"], random_state=cell["seed"], **{**REFERENCE_KERNELS, **cell["params"]})
    t0 = time.perf_counter()
    clf.fit(X[tr], Y[tr], X[va], Y[va])
    fit_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    scores = clf.predict_proba(data.test.X)
    predict_s = time.perf_counter() - t0
    return {
        **cell,
        "key": cell_key(cell),
        "config": resolved_config(cell),
        "at_05": evaluate(data.test.Y, scores, 0.5),
        "at_tuned": evaluate(data.test.Y, scores, clf.threshold_),
        "threshold": float(np.mean(clf.threshold_)),
        "val_mAP": clf.history_[clf.best_epoch_]["val_score"],
        "best_epoch": clf.best_epoch_,
        "epochs_run": len(clf.history_),
        "fit_s": fit_s,
        "sec_per_epoch": fit_s / len(clf.history_),
        "predict_s": predict_s,
        "mlkd": mlkd.__version__,
        "torch": torch.__version__,
        "machine": f"{platform.machine()} {os.cpu_count()} cpu",
    }


def load_results(path: Path) -> dict[str, dict]:
    if not path.exists():
        return {}
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {r["key"]: r for r in rows}


def run_grid(cells: list[dict], path: Path, jobs: int, run=None, key=None, desc: str = "cells") -> dict[str, dict]:
    """Run the cells not yet in ``path``; each finished cell is appended at once (a killed run resumes).

    ``run`` (default ``run_cell``) turns a cell into a row holding ``"key"``; ``key`` (default ``cell_key``)
    names a cell. Both must be importable top-level functions (they run in worker processes).
    """
    from tqdm import tqdm

    run, key = run or run_cell, key or cell_key
    done = load_results(path)
    todo = list({key(c): c for c in cells if key(c) not in done}.values())  # same config runs once
    print(f"{len(cells)} {desc}, {len(cells) - len(todo)} already done, {len(todo)} to run", flush=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    with ProcessPoolExecutor(max_workers=jobs, initializer=_init_worker) as pool, open(path, "a") as out:
        futures = [pool.submit(run, c) for c in todo]
        for fut in tqdm(as_completed(futures), total=len(futures), desc=desc):
            row = fut.result()
            out.write(json.dumps(row) + "\n")
            out.flush()
            done[row["key"]] = row
    return done


def mean_std(values) -> tuple[float, float]:
    """Mean and sample std (ddof = 1) of the finite values (a seed's undefined metric, NaN, is left out): the
    std is NaN with fewer than two of them, and both are NaN with none."""
    a = np.asarray(values, dtype=float)
    a = a[np.isfinite(a)]
    if a.size == 0:
        return math.nan, math.nan
    return float(a.mean()), float(a.std(ddof=1)) if a.size > 1 else math.nan


def fmt(m: float, s: float, digits: int = 3, bold: bool = False, n: int = 2) -> str:
    """``mean ± std`` over ``n`` seeds; the mean alone where there is no spread to show: one seed, or one
    finite value of ``n`` (then marked ``(1 of n)``, never a std of 0); ``–`` with no finite value."""
    if not math.isfinite(m):
        return "–"
    if n > 1 and math.isfinite(s):
        text = f"{m:.{digits}f} ± {s:.{digits}f}"
    else:
        text = f"{m:.{digits}f}" + (f" (1 of {n})" if n > 1 else "")
    return f"**{text}**" if bold else text


def best_mean(means, higher_is_better: bool) -> float:
    """The best of ``means`` in the metric's direction, NaN ones left out (NaN when none is finite); Python's
    max/min would depend on where a NaN stands."""
    a = np.asarray(list(means), dtype=float)
    if not np.isfinite(a).any():
        return math.nan
    return float(np.nanmax(a) if higher_is_better else np.nanmin(a))


def require_cuda(ap) -> None:
    """``--run`` of a GPU benchmark: an argparse error unless torch sees a CUDA GPU here."""
    import torch

    if not torch.cuda.is_available():
        ap.error("--run needs a CUDA GPU; this machine has none (run without --run to rebuild the report)")


def replace_block(name: str, body: str, path: Path = BENCHMARKS_MD) -> None:
    """Rewrite the block between ``<!-- name:start -->`` and ``<!-- name:end -->`` (appended if absent)."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    block = f"{start}\n{body.rstrip()}\n{end}"
    if start in text and end in text:
        text = re.sub(re.escape(start) + ".*?" + re.escape(end), lambda _: block, text, flags=re.S)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text)


METRIC_COLS = {
    "ranking": [("mAP", "mAP ↑", True), ("ranking_loss", "RL ↓", False), ("coverage", "coverage ↓", False),
                ("one_error", "one-error ↓", False), ("lrap", "LRAP ↑", True)],
    "threshold": [("example_f1", "ebF1 ↑", True), ("micro_f1", "miF1 ↑", True), ("macro_f1", "maF1 ↑", True),
                  ("hamming_loss", "HL ↓", False), ("subset_accuracy", "subset acc ↑", True)],
}


def grouped(results, cells):
    """(dataset, label) → finished rows; cells not run yet are simply absent (tables say how many seeds)."""
    out: dict[tuple, list[dict]] = {}
    for c in cells:
        out.setdefault((c["dataset"], c["label"]), [])
        if cell_key(c) in results:
            out[(c["dataset"], c["label"])].append(results[cell_key(c)])
    return out


def metric_table(groups, datasets, labels, key, cols, extra=()):
    header = ["dataset", "method", *[c[1] for c in cols], *[e[0] for e in extra]]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for ds in datasets:
        present = [lab for lab in labels if groups.get((ds, lab))]
        stats = {lab: {m: mean_std([r[key][m] for r in groups[(ds, lab)]]) for m, _, _ in cols} for lab in present}
        best = {m: best_mean((stats[lab][m][0] for lab in present), hib) for m, _, hib in cols} if present else {}
        for lab in labels:
            rows = groups.get((ds, lab), [])
            if not rows:
                lines.append(f"| {ds} | {lab} | " + " | ".join(["not run"] * (len(cols) + len(extra))) + " |")
                continue
            cells = [fmt(*stats[lab][m], bold=len(present) > 1 and np.isclose(stats[lab][m][0], best[m]),
                         n=len(rows)) for m, _, _ in cols]
            cells += [e[1](rows) for e in extra]
            seeds = "" if len(rows) >= 3 else f" ({len(rows)} seed{'s' * (len(rows) > 1)})"
            lines.append(f"| {ds} | {lab}{seeds} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def delta_table(groups, datasets, base, other, metrics):
    """other − base per metric (mean over seeds) and whether the gap exceeds the pooled seed std."""
    lines = ["| dataset | " + " | ".join(f"{name}" for _, name, _ in metrics) + " |", "|---|" + "---|" * len(metrics)]
    for ds in datasets:
        row = []
        for key, _, hib in metrics:
            sect, m = key
            b = [r[sect][m] for r in groups.get((ds, base), [])]
            o = [r[sect][m] for r in groups.get((ds, other), [])]
            if not b or not o:
                row.append("not run")
                continue
            d = np.mean(o) - np.mean(b)
            spread = np.sqrt((np.var(o, ddof=1) + np.var(b, ddof=1)) / 2) if min(len(o), len(b)) > 1 else 0.0
            better = d > 0 if hib else d < 0
            if min(len(o), len(b)) < 2:
                tag = "1 seed, no spread"
            else:
                tag = ("win" if better else "loss") if abs(d) > spread else "tie"
            row.append(f"{d:+.4f} ({tag})")
        lines.append(f"| {ds} | " + " | ".join(row) + " |")
    return "\n".join(lines)
