"""binKL_T summed over labels (METHODS.md, the default since 2026-12-03) against averaged over them (before).

    MLKD_DATA=../shared/datasets/mulan .venv/bin/python benchmarks/kd_reduction.py             # run + table
    MLKD_DATA=../shared/datasets/mulan .venv/bin/python benchmarks/kd_reduction.py --report-only

The five methods with a binKL term (TF-KD self and reg, CS-KD, BAN, RAS-KD+) averaged it over labels until
2026-12-03, 1/L of the term METHODS.md specifies. Their cells from then are kept in
``benchmarks/results/selfkd.db`` under the label ``NAME:kd_reduction=mean``; the cells of the defaults
(``kd_reduction="sum"``) are fitted by

    mlkd bench benchmarks/results/selfkd.db -d DATASETS -m tfkd_self -m tfkd_reg -m cskd -m ban -m raskd_plus \\
      --seeds 0-2 --param fused_optimizer=false --param fused_mlp=false --jobs 2 --threads 1

(the reference path, like every cell of that database). This script runs that (a rerun resumes) and writes
the paired comparison, per method and data set, into BENCHMARKS.md: test mAP and example-F1 at the tuned
threshold, sum − mean, with the seed spread and a Wilcoxon signed-rank test over the (data set, seed) pairs.
"""

from __future__ import annotations

import argparse
import sqlite3
import subprocess
import sys
import time

import numpy as np
from scipy.stats import wilcoxon

from common import REFERENCE_PARAMS, ROOT, replace_block

DATASETS = ["flags", "emotions", "scene", "yeast", "genbase", "medical", "enron", "corel5k", "bibtex", "tmc2007",
            "delicious"]
METHODS = ["tfkd_self", "tfkd_reg", "cskd", "ban", "raskd_plus"]
DB = "benchmarks/results/selfkd.db"
METRICS = [("mAP_tuned", "mAP"), ("example_f1_tuned", "ebF1@tuned")]


def bench_args(datasets: list[str], jobs: int) -> list[str]:
    return [DB, "-d", ",".join(datasets), *(a for m in METHODS for a in ("-m", m)), "--seeds", "0-2",
            *REFERENCE_PARAMS, "--jobs", str(jobs), "--threads", "1"]


def load(datasets: list[str]) -> dict:
    """{(label, data set, seed): row} of the two settings' cells and plain BCE's."""
    con = sqlite3.connect(f"file:{ROOT / DB}?mode=ro", uri=True)
    con.row_factory = sqlite3.Row
    labels = ["bce", *METHODS, *(f"{m}:kd_reduction=mean" for m in METHODS)]
    rows = con.execute(f"SELECT * FROM results WHERE noise = 'none' AND label IN ({','.join('?' * len(labels))})",
                       labels).fetchall()
    con.close()
    return {(r["label"], r["dataset"], r["seed"]): dict(r) for r in rows if r["dataset"] in datasets}


def table(cells: dict, datasets: list[str]) -> list[str]:
    def values(label, dataset, column):
        return [cells[(label, dataset, s)][column] for s in range(3) if (label, dataset, s) in cells]

    head = "| method | metric | " + " | ".join(datasets) + " | sets sum better / worse beyond seed std | mean Δ | " \
           "Wilcoxon p (pairs) |"
    lines = [head, "|---" * (len(datasets) + 5) + "|"]
    for method in METHODS:
        earlier = f"{method}:kd_reduction=mean"
        for column, name in METRICS:
            row, better, worse, diffs = [], 0, 0, []
            for d in datasets:
                new, old = values(method, d, column), values(earlier, d, column)
                if len(new) < 3 or len(old) < 3:
                    row.append("–")
                    continue
                delta = np.mean(new) - np.mean(old)
                spread = np.sqrt((np.var(new, ddof=1) + np.var(old, ddof=1)) / 2)
                better += delta > spread
                worse += delta < -spread
                row.append(f"{delta:+.3f}" + ("*" if abs(delta) > spread else ""))
                diffs += [cells[(method, d, s)][column] - cells[(earlier, d, s)][column] for s in range(3)]
            p = wilcoxon(diffs).pvalue if any(diffs) else float("nan")
            mean = f"{np.mean(diffs):+.4f}" if diffs else "–"
            lines.append(f"| {method} | {name} | " + " | ".join(row)
                         + f" | {better} / {worse} | {mean} | {p:.3f} ({len(diffs)}) |")
    # the level both settings reach, next to plain BCE-MLP
    lines += ["", "Mean test mAP over the data sets both settings have (BCE-MLP on the same sets):", "",
              "| method | sets | kd_reduction=sum | kd_reduction=mean | bce |", "|---|---|---|---|---|"]
    for method in METHODS:
        sets = [d for d in datasets if len(values(method, d, "mAP_tuned")) == 3
                and len(values(f"{method}:kd_reduction=mean", d, "mAP_tuned")) == 3]
        if not sets:
            continue
        means = [np.mean([np.mean(values(label, d, "mAP_tuned")) for d in sets])
                 for label in (method, f"{method}:kd_reduction=mean", "bce")]
        lines.append(f"| {method} | {len(sets)} | {means[0]:.4f} | {means[1]:.4f} | {means[2]:.4f} |")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", default=",".join(DATASETS))
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--report-only", action="store_true", help="the table from the finished cells")
    ap.add_argument("--no-write", action="store_true", help="print the table, leave BENCHMARKS.md as it is")
    args = ap.parse_args()
    datasets = [d.strip() for d in args.datasets.split(",") if d.strip()]
    bench = bench_args(datasets, args.jobs)
    if not args.report_only:
        subprocess.run([sys.executable, "-m", "mlkd", "bench", *bench], cwd=ROOT, check=True)
    cells = load(datasets)
    lines = [f"Command: `mlkd bench {' '.join(bench)}`, then `python benchmarks/kd_reduction.py --report-only` "
             f"(table written {time.strftime('%Y-%m-%d %H:%M')}). Cells: test metrics at the validation-tuned "
             "threshold, seeds 0–2, the reference path; Δ = kd_reduction=sum (METHODS.md, the default) − "
             "kd_reduction=mean (the cells published before 2026-12-03), mean over seeds; * = beyond the pooled "
             "seed std; – = a setting lacks seeds there.", "", *table(cells, datasets)]
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        replace_block("kd_reduction", text)


if __name__ == "__main__":
    main()
