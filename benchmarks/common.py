"""Shared pieces of the benchmark scripts: one protocol cell, a resumable JSONL store, Markdown output."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import time
import warnings
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS_MD = ROOT / "BENCHMARKS.md"


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)  # N workers on N cores: no oversubscription
    warnings.simplefilter("ignore")


def resolved_config(cell: dict) -> dict:
    """Everything that determines a cell's numbers: method defaults merged with its params, training defaults."""
    from dataclasses import asdict

    from mlkd.methods import config_fields
    from mlkd.trainer import TrainConfig

    return {"method": {**config_fields(cell["method"]), **cell["params"]}, "train": asdict(TrainConfig())}


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
    clf = MultiLabelClassifier(cell["method"], random_state=cell["seed"], **cell["params"])
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


def run_grid(cells: list[dict], path: Path, jobs: int) -> dict[str, dict]:
    """Run the cells not yet in ``path``; each finished cell is appended at once (a killed run resumes)."""
    from tqdm import tqdm

    done = load_results(path)
    todo = list({cell_key(c): c for c in cells if cell_key(c) not in done}.values())  # same config runs once
    print(f"{len(cells)} cells, {len(cells) - len(todo)} already done, {len(todo)} to run", flush=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    with ProcessPoolExecutor(max_workers=jobs, initializer=_init_worker) as pool, open(path, "a") as out:
        futures = [pool.submit(run_cell, c) for c in todo]
        for fut in tqdm(as_completed(futures), total=len(futures), desc="cells"):
            row = fut.result()
            out.write(json.dumps(row) + "\n")
            out.flush()
            done[row["key"]] = row
    return done


def mean_std(values) -> tuple[float, float]:
    a = np.asarray(values, dtype=float)
    return float(np.nanmean(a)), float(np.nanstd(a, ddof=1)) if len(a) > 1 else 0.0


def fmt(m: float, s: float, digits: int = 3, bold: bool = False) -> str:
    text = f"{m:.{digits}f} ± {s:.{digits}f}"
    return f"**{text}**" if bold else text


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
