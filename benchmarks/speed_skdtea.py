"""Speed of the flagship: an SKDTEA fit on yeast to early stop (target: under 10 s on this machine).

    MLKD_DATA=../shared/datasets/mulan .venv/bin/python benchmarks/speed_skdtea.py

Fits with the library defaults (validation hold-out made by the estimator, early stopping, tuned threshold)
for 3 seeds and reports wall time, epochs and time per epoch, with one thread (the default) and with one
thread per core. Writes the table to BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
import warnings

import numpy as np
import torch

from common import REFERENCE_KERNELS, fmt, mean_std, replace_block
from mlkd import MultiLabelClassifier
from mlkd.data import load_dataset


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="yeast")
    ap.add_argument("--methods", default="skdtea,bce")
    ap.add_argument("--seeds", default="0,1,2")
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    data = load_dataset(args.dataset)
    rows = []
    for threads in (1, os.cpu_count()):
        for method in args.methods.split(","):
            fits, epochs, per_epoch = [], [], []
            for seed in map(int, args.seeds.split(",")):
                clf = MultiLabelClassifier(method, random_state=seed, num_threads=threads, **REFERENCE_KERNELS)
                t0 = time.perf_counter()
                clf.fit(data.train.X, data.train.Y)
                fits.append(time.perf_counter() - t0)
                epochs.append(len(clf.history_))
                per_epoch.append(np.median([h["seconds"] for h in clf.history_]))
            row = (method, threads, mean_std(fits), np.mean(epochs), mean_std(np.array(per_epoch) * 1000))
            print(f"{method:8s} threads={threads} fit {fmt(*row[2], digits=2, n=len(fits))} s epochs {row[3]:.0f} "
                  f"{row[4][0]:.0f} ms/epoch", flush=True)
            rows.append(row)
    load = os.getloadavg()[0]
    table = ["| method | num_threads | fit to early stop (s) | epochs run | time per epoch (ms) |",
             "|---|---|---|---|---|"]
    n_seeds = len(args.seeds.split(","))
    for method, threads, fit, ep, pe in rows:
        table.append(f"| {method} | {threads} | {fmt(*fit, digits=2, n=n_seeds)} | {ep:.0f} | "
                     f"{fmt(*pe, digits=0, n=n_seeds)} |")
    n_tr = data.train.n_samples
    replace_block("speed_skdtea", "\n".join([
        f"Command: `MLKD_DATA=../shared/datasets/mulan .venv/bin/python benchmarks/speed_skdtea.py` "
        f"({platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}; 1-min load average "
        f"{load:.1f} at the end of the run: other jobs shared the cores).  ",
        f"{args.dataset}: {n_tr} training rows, 1/6 held out for validation; defaults (hidden 512, batch 64, "
        f"AdamW 1e-3, patience 20); time per epoch includes the validation pass. Seeds {args.seeds}, mean ± std.",
        "", *table]))


if __name__ == "__main__":
    main()
