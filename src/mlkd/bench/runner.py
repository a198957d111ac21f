"""One cell under PROTOCOL.md: fixed seeded validation split, fit, test touched once, every metric twice."""

from __future__ import annotations

import os
import platform
import sqlite3
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, fields
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from .grid import PROTOCOL, Cell, parse_noise, saved_model_ids
from .store import fit_threads_text

#: How many validation rows / labels the soft-target heat map keeps (the row stays small).
EXAMPLE_ROWS = 8
EXAMPLE_LABELS = 20


class CellDone(Exception):
    """A queued cell's key was in its results database when its turn came: another run finished it meanwhile."""


@dataclass(frozen=True, eq=False)
class QueuedCell(Cell):
    """A cell as ``run_grid`` hands it to an executor: with the results database it goes to, so the worker that
    takes it skips it (``CellDone``) when another run (a second ``mlkd bench`` on the same database) finished
    it meanwhile. Its key is the wrapped cell's; it is not equal to that Cell (``run_grid`` maps results back
    by identity)."""

    results_db: str | None = None

    @classmethod
    def of(cls, cell: Cell, results_db) -> QueuedCell:
        return cls(**{f.name: getattr(cell, f.name) for f in fields(Cell)}, results_db=str(results_db))


def finished_elsewhere(cell: Cell) -> bool:
    """Whether a ``QueuedCell``'s key is in its results database now (read only; False if it cannot be read,
    e.g. on a Ray node without the file: the cell is then fitted, and a duplicate row is ignored)."""
    path = getattr(cell, "results_db", None)
    if not path:
        return False
    try:
        conn = sqlite3.connect(f"{Path(path).resolve().as_uri()}?mode=ro", uri=True, timeout=30)
        try:
            return conn.execute("SELECT 1 FROM results WHERE key = ?", (cell.key,)).fetchone() is not None
        finally:
            conn.close()
    except (sqlite3.Error, OSError, ValueError):
        return False


def _skip_if_finished(cell: Cell) -> None:
    if finished_elsewhere(cell):
        raise CellDone(f"cell {cell.key} ({cell.dataset} {cell.label} seed {cell.seed}) is already in "
                       f"{cell.results_db}: another run finished it")


def run_cell(cell: Cell, threads: int | None = None) -> dict:
    """Fit ``cell`` and evaluate it on the test split once; returns a results row (see ``store.COLUMNS``).

    ``threads`` sets ``torch.set_num_threads`` first (None leaves it alone). A cell that continues a killed
    run's checkpoint runs on the thread count that checkpoint was trained on instead (and the count is set back
    afterwards), so its numbers are an uninterrupted fit's on that count, bit for bit; the row's ``threads`` is
    the count the cell ran on and ``fit_threads`` every count its training ran on (see ``store.fit_threads_text``).
    A ``QueuedCell`` that another run finished meanwhile raises ``CellDone`` instead of being fitted again.
    """
    import torch

    from .. import __version__
    from ..data import load_dataset, validation_split
    from ..estimator import MultiLabelClassifier
    from ..metrics import evaluate
    from ..noise import add_train_val_noise
    from ..trainer import resolve_device

    _skip_if_finished(cell)
    if threads is not None:
        torch.set_num_threads(int(threads))
    check_saved_models(cell)
    data = load_dataset(cell.dataset, data_dir=cell.data_dir)
    X, Y = data.train.X, data.train.Y
    # The split is fixed: seeds change initialisation and batch order only (PROTOCOL.md §2, §6).
    # The fraction and seed the cell's key records (grid.PROTOCOL), so the key names the split the numbers used.
    tr, va = validation_split(Y, fraction=PROTOCOL["validation_fraction"], seed=PROTOCOL["split_seed"])
    # num_threads=None: the fit keeps the thread count the executor set for this worker (or a checkpoint's, below)
    # Label noise hits the training and validation labels (seeded by the cell's seed); test labels stay clean.
    noise_kind, noise_rate = parse_noise(cell.noise)
    # the validation labels the fit is given (one draw with the training labels'): the heat map's targets use them
    noisy_val = None if noise_kind is None else add_train_val_noise(Y[tr], Y[va], noise_kind, noise_rate, cell.seed)[1]
    # With a checkpoint folder the fit saves its state as it goes and picks up a killed run's state:
    # bit-identical numbers (mlkd.checkpoint); fit_seconds adds the training time the checkpoint had spent.
    checkpoints = {} if cell.checkpoint_dir is None else {
        "checkpoint_dir": cell_checkpoint_dir(cell), "checkpoint_seconds": cell.checkpoint_seconds, "resume": True}
    clf = MultiLabelClassifier(cell.method, random_state=cell.seed, threshold=PROTOCOL["threshold"],
                               num_threads=None, label_noise_kind=noise_kind, label_noise_rate=noise_rate,
                               **checkpoints, **cell.train, **cell.params)
    worker_threads = torch.get_num_threads()
    try:  # the whole cell (fit, test predictions, examples) on one count: the worker's, or a checkpoint's
        with warnings.catch_warnings(), cell_lock(cell):
            _skip_if_finished(cell)  # a run fitting the same cell held the lock until it finished
            fit_threads = _continue_on_recorded_threads(cell)
            warnings.simplefilter("ignore")  # constant-label warnings of small sets repeat for every cell
            start = time.perf_counter()
            clf.fit(X[tr], Y[tr], X[va], Y[va])
            fit_seconds = time.perf_counter() - start + clf.resumed_seconds_
        start = time.perf_counter()
        scores = clf.predict_proba(data.test.X)  # the test split, touched once
        predict_seconds = time.perf_counter() - start
        row = {
            "key": cell.key,
            "dataset": cell.dataset,
            "method": cell.method,
            "label": cell.label,
            "config": cell.config,
            "config_hash": cell.config_hash,
            "seed": cell.seed,
            "noise": cell.noise,
            "threshold": float(np.mean(clf.threshold_)),
            "val_score": clf.history_[clf.best_epoch_].get("val_score"),
            "epochs_run": len(clf.history_),
            "best_epoch": int(clf.best_epoch_),
            "fit_seconds": fit_seconds,
            "predict_seconds": predict_seconds,
            "n_train": len(tr),
            "n_val": len(va),
            "n_test": data.test.n_samples,
            "threads": torch.get_num_threads(),
            "fit_threads": fit_threads,
            "device": str(resolve_device(clf.device)),
            "mlkd_version": __version__,
            "torch_version": torch.__version__,
            "python_version": platform.python_version(),
            "machine": machine_description(),
            "history": clf.history_,
            "examples": soft_target_examples(clf, X[va], Y[va], data.train.label_names, Y_val_noisy=noisy_val),
        }
    finally:
        torch.set_num_threads(worker_threads)
    for suffix, threshold in (("05", 0.5), ("tuned", clf.threshold_)):
        row.update({f"{k}_{suffix}": v for k, v in evaluate(data.test.Y, scores, threshold).items()})
    row["timestamp"] = datetime.now(timezone.utc).isoformat(timespec="microseconds")
    return row


def _continue_on_recorded_threads(cell: Cell) -> str:
    """Set the thread count for ``cell``'s fit and return its ``fit_threads``: a checkpoint trained on one
    count is continued on that count (else a changed --jobs or --threads would give numbers matching no
    uninterrupted fit); one already trained on several, or on an unrecorded count, continues on the worker's
    count, and the row says so. Called under the cell's lock: no other worker writes its checkpoint meanwhile."""
    import torch

    from ..checkpoint import recorded_threads

    counts, unknown = recorded_threads(cell_checkpoint_dir(cell)) if cell.checkpoint_dir else (set(), False)
    if len(counts) == 1 and not unknown:
        torch.set_num_threads(next(iter(counts)))
    return fit_threads_text(counts | {torch.get_num_threads()}, unknown)


def check_saved_models(cell: Cell) -> None:
    """Refuse to fit ``cell`` with a saved model (a teacher) other than the one its key names: its folder was
    fitted into again after the grid was built, so the row would carry the old model's key."""
    if not cell.saved_models:
        return
    now = saved_model_ids(cell.method, cell.params, cell.label)
    changed = [k for k, v in cell.saved_models.items() if now.get(k) != v]
    if changed:
        name = changed[0]
        raise ValueError(f"{name} {cell.params[name]} of method {cell.label!r} holds another model (save id "
                         f"{now.get(name)}) than when the grid was built ({cell.saved_models[name]}); expected it "
                         "unchanged while the grid runs: rerun mlkd bench to run the new model's cells")


def cpu_model() -> str:
    """The processor's model name ("AMD EPYC", "Intel(R) Xeon(R) ..."), or "" where it cannot be read.

    Rows record it because CPU matmul kernels are chosen per processor (MKL dispatch), so cells fitted on
    different CPUs agree within seed noise, not bit for bit (BENCHMARKS.md, "Reproducibility").
    """
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor().strip()


def machine_description() -> str:
    """``host architecture [CPU model,] N cpu`` for a results row's ``machine`` column."""
    model = cpu_model()
    return f"{platform.node()} {platform.machine()} {model + ', ' if model else ''}{os.cpu_count()} cpu"


def cell_checkpoint_dir(cell: Cell) -> Path:
    """Where ``cell`` keeps its training state: ``<checkpoint_dir>/<cell key>/``."""
    return Path(cell.checkpoint_dir) / cell.key


@contextmanager
def cell_lock(cell: Cell):
    """Hold ``cell``'s checkpoint folder alone while fitting (no-op without checkpoints or fcntl).

    Two bench runs over overlapping grids (or a Ray task retried while the first still runs) may fit the
    same cell at once; the second waits here instead of writing the same checkpoint files beside the
    first, then finds the stages it finished. (Process-pool workers of a killed run die with it on Linux.)
    """
    if cell.checkpoint_dir is None:
        yield
        return
    try:
        import fcntl
    except ImportError:  # not POSIX: no orphan detection
        yield
        return
    folder = cell_checkpoint_dir(cell)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # released when the file closes or this process dies
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def has_checkpoint(cell: Cell) -> bool:
    """Whether a killed run left ``cell`` training state to resume from (a manifest alone, written when the
    fit starts, holds none: that cell starts over)."""
    if cell.checkpoint_dir is None:
        return False
    folder = cell_checkpoint_dir(cell)
    return (folder / "checkpoint.json").exists() and any(folder.glob("stage*.safetensors"))


def soft_target_examples(clf, X_val: np.ndarray, Y_val: np.ndarray, label_names=None,
                         Y_val_noisy: np.ndarray | None = None) -> dict | None:
    """The labels vs the soft targets a method trains on, for a few validation rows (None if it makes none).

    Runs the trained model's ``step`` once in eval mode (SKDTEA: no label corruption, no dropout) on the
    first ``EXAMPLE_ROWS`` validation rows with a positive label; keeps the ``EXAMPLE_LABELS`` labels that
    are positive there or have the highest teacher probabilities. ``y`` holds the clean labels ``Y_val``.
    A label-noise fit passes ``Y_val_noisy``, the labels it was given: the step makes the soft targets from
    them, as training did from its noisy labels, and they are kept as ``y_noisy`` beside the clean ``y``
    (rows written before this have no ``y_noisy``: their soft targets were made from the clean labels).
    """
    import torch

    from ..methods import Batch, StepContext

    rows = np.flatnonzero(Y_val.any(axis=1))[:EXAMPLE_ROWS]
    if rows.size == 0:
        return None
    given = Y_val if Y_val_noisy is None else np.asarray(Y_val_noisy)
    model = clf.model_
    device = next(model.parameters()).device
    x = torch.as_tensor(clf.scaler_.transform(X_val[rows]), dtype=torch.float32, device=device)
    y = torch.as_tensor(given[rows], dtype=torch.float32, device=device)
    index = torch.as_tensor(rows, device=device)
    if model.pair_batches:  # a step on pair batches: each row its own (empty) partner
        x, y, index = torch.cat([x, x]), torch.cat([y, y]), torch.cat([index, index])
    ctx = StepContext(epoch=max(clf.best_epoch_, 0), max_epochs=clf.max_epochs,
                      generator=torch.Generator(device=device).manual_seed(0))
    model.eval()
    try:
        # a distilled model's targets come from its teacher stage, detached after training
        with model.taught_by(_final_stage_teacher(clf)), torch.no_grad():
            out = model.step(Batch(x, y, index), ctx)
    except Exception as exc:  # a diagnostic only: never lose a cell's numbers over it
        warnings.warn(f"no soft-target examples for {clf.method!r}: {exc}", stacklevel=2)
        return None
    if "soft_targets" not in out.extras:
        return None
    arrays = {"soft_targets": out.extras["soft_targets"], "probabilities": torch.sigmoid(out.logits)}
    if "teacher_probs" in out.extras:
        arrays["teacher_probs"] = out.extras["teacher_probs"]
    arrays = {k: v.float().cpu().numpy() for k, v in arrays.items()}
    truth = Y_val[rows].astype(bool) | given[rows].astype(bool)  # a label positive in either is shown
    strength = arrays.get("teacher_probs", arrays["soft_targets"]).max(axis=0)
    order = np.lexsort((-strength, ~truth.any(axis=0)))  # labels positive here first, then strongest teacher
    labels = np.sort(order[:EXAMPLE_LABELS])
    names = list(label_names) if label_names is not None else [f"label_{j}" for j in range(Y_val.shape[1])]
    out_dict = {"rows": rows.tolist(), "labels": labels.tolist(), "label_names": [str(names[j]) for j in labels],
                "y": Y_val[rows][:, labels].astype(int).tolist()}
    if Y_val_noisy is not None:
        out_dict["y_noisy"] = given[rows][:, labels].astype(int).tolist()
    out_dict.update({k: np.round(v[:, labels], 4).tolist() for k, v in arrays.items()})
    return out_dict


def _final_stage_teacher(clf):
    """The trained teacher of a multi-stage method's last stage (kept in ``stage_models_``), else None."""
    stages = type(clf.model_).stages(clf.model_.config)
    name = stages[-1].teacher if stages else None
    return getattr(clf, "stage_models_", {}).get(name) if name else None
