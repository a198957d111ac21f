"""RAS-KD's extra cost: training time per epoch relative to a plain BCE-MLP (issue: self-distillation family).

    MLKD_DATA=../shared/datasets/mulan .venv/bin/python benchmarks/raskd_cost.py

Same network, data, batch size (64) and one torch thread for every variant. Each variant trains for
``--epochs`` epochs (no early stop) and the median epoch time of its history is kept (an epoch's time
includes the validation pass, as in any fit); the variants are interleaved ``--repeats`` times so a
busy machine slows them alike, and the ratio to ``bce`` is taken within each repeat, then the median.
The max-over-positives targets build a B×L×L tensor, so the label count drives the cost: delicious
(983 labels) is the worst case.
"""

from __future__ import annotations

import argparse
import json
import os
import warnings

import numpy as np

from common import REFERENCE_KERNELS, ROOT, replace_block

RESULTS = ROOT / "benchmarks/results/raskd_cost.json"

VARIANTS = [("bce", "bce", {}), ("raskd (head, max)", "raskd", {}), ("raskd (head, mean)", "raskd", {"reduce": "mean"}),
            ("raskd (ema, max)", "raskd", {"representatives": "ema"}), ("raskd_plus (RAS-KD+)", "raskd_plus", {})]


def epoch_seconds(X, Y, Xv, Yv, method, params, epochs) -> float:
    from mlkd import MultiLabelClassifier

    clf = MultiLabelClassifier(method, random_state=0, max_epochs=epochs, patience=epochs, **REFERENCE_KERNELS,
                               **params)
    clf.fit(X, Y, Xv, Yv)
    return float(np.median([h["seconds"] for h in clf.history_]))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", default="yeast,scene,delicious")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    import torch

    from mlkd.data import load_dataset, validation_split

    torch.set_num_threads(1)
    store = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    for d in args.datasets.split(","):
        data = load_dataset(d)
        tr, va = validation_split(data.train.Y, fraction=1 / 6, seed=0)
        X, Y = data.train.X, data.train.Y
        times = {name: [] for name, _, _ in VARIANTS}
        for _ in range(args.repeats):
            for name, method, params in VARIANTS:
                times[name].append(epoch_seconds(X[tr], Y[tr], X[va], Y[va], method, params, args.epochs))
        base = np.array(times["bce"])
        rows = []
        for name, _, _ in VARIANTS:
            t = np.array(times[name])
            row = {"variant": name, "s_per_epoch": float(np.median(t)), "ratio": float(np.median(t / base))}
            rows.append(row)
            print(f"{d:10s} {name:22s} {row['s_per_epoch']:7.3f} s/epoch  × bce {row['ratio']:.2f}", flush=True)
        store[d] = {"labels": int(Y.shape[1]), "epochs": args.epochs, "repeats": args.repeats, "rows": rows,
                    "load": " / ".join(f"{x:.1f}" for x in os.getloadavg())}
        RESULTS.write_text(json.dumps(store, indent=1))  # each data set kept as soon as it is measured
    lines = ["| dataset | labels | variant | s/epoch (median) | × bce (median over repeats) | epochs × repeats "
             "| load |", "|---|---|---|---|---|---|---|"]
    for d, r in store.items():
        lines += [f"| {d} | {r['labels']} | {row['variant']} | {row['s_per_epoch']:.3f} | {row['ratio']:.2f} | "
                  f"{r['epochs']} × {r['repeats']} | {r['load']} |" for row in r["rows"]]
    replace_block("raskd_cost", "\n".join([
        "Command: `MLKD_DATA=../shared/datasets/mulan .venv/bin/python benchmarks/raskd_cost.py --datasets D "
        "--epochs E --repeats R` (one run per data set or several; each data set's figures are kept in "
        "benchmarks/results/raskd_cost.json). One thread, batch 64, E epochs per fit, the variants interleaved "
        "R times, ratios taken within a repeat; load = the 1/5/15-min load average when the data set finished "
        "(the machine was shared with other benchmark jobs).", "", *lines]))


if __name__ == "__main__":
    main()
