"""Two readings of METHODS.md side by side: the library's default against the other one, paired by cell.

    MLKD_DATA=../shared/datasets/mulan .venv/bin/python benchmarks/spec_readings.py             # run + table
    MLKD_DATA=../shared/datasets/mulan .venv/bin/python benchmarks/spec_readings.py --report-only

- ``kd_reduction``: the five methods with a binKL term (TF-KD self and reg, CS-KD, BAN, RAS-KD+) averaged it
  over labels until 2026-12-03, 1/L of the term METHODS.md specifies (binKL_T = Σ_k KL). Their cells from then
  are kept in ``benchmarks/results/selfkd.db`` under the label ``NAME:kd_reduction=mean`` (CS-KD's as
  ``cskd:kd_reduction=mean,t2_scaling=true``, next item); the defaults (``kd_reduction="sum"``) are new cells.
- ``t2_scaling``: CS-KD multiplied its binKL_T term by T² (= 16 at T = 4), as the official code's KDLoss does
  and METHODS.md does not write; its earlier cells are kept under ``cskd:t2_scaling=true`` (and
  ``cskd:kd_reduction=mean,t2_scaling=true``, the label-averaged ones); the default (no T²) is new cells.
- ``partners``: CS-KD draws each row's partner within its batch (the default, every published cell);
  ``cskd:partners=train`` is METHODS.md's "batch of pairs that share a positive label c": a partner training
  row for every row, as the official code's PairBatchSampler (2026-12-04).
- ``student_loss``: KD-TEA's student trains its whole TEA loss + β·MSE (the default, our reading of "a small
  TEA student"); ``kdtea:student_loss=bce`` is METHODS.md's formula taken literally, BCE(s, y) + β·MSE.
- PS-KD's T_total: α_t = α_T·t/T_total with T_total = ``max_epochs`` (200, the default), which early stopping
  seldom reaches; ``pskd:ramp_epochs=30`` completes the ramp within the epochs a run usually has.

Every cell is a ``mlkd bench`` cell of that database on the reference path (like all of its cells), so

    mlkd bench benchmarks/results/selfkd.db -d DATASETS -m SPEC ... --seeds 0-2 \\
      --param fused_optimizer=false --param fused_mlp=false --jobs 2 --threads 1

fits what is missing (a rerun resumes); then the paired comparison, per method and data set, goes into
BENCHMARKS.md: test mAP and example-F1 at the tuned threshold, reading − other reading, with the seed spread
and a Wilcoxon signed-rank test over the data sets' mean differences (a set's seeds share its data and
split: they are not independent replicates).
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
#: (a reading's label, the other reading's label), the first the library's default unless it names a parameter
#: itself: each label is also the ``mlkd bench -m`` spec of its cells. CS-KD's kd_reduction pair holds its
#: earlier T² factor on both sides, so that each pair differs in one setting.
PAIRS = [*((m, f"{m}:kd_reduction=mean") for m in ("tfkd_self", "tfkd_reg")),
         ("cskd:t2_scaling=true", "cskd:kd_reduction=mean,t2_scaling=true"),
         *((m, f"{m}:kd_reduction=mean") for m in ("ban", "raskd_plus")),
         ("cskd", "cskd:t2_scaling=true"), ("cskd", "cskd:partners=train"), ("kdtea", "kdtea:student_loss=bce"),
         ("pskd", "pskd:ramp_epochs=30")]
#: every reading's label once, in order: the ``-m`` specs of the bench run and the cells the tables read
LABELS = list(dict.fromkeys(label for pair in PAIRS for label in pair))
DB = "benchmarks/results/selfkd.db"
METRICS = [("mAP_tuned", "mAP"), ("example_f1_tuned", "ebF1@tuned")]


def bench_args(datasets: list[str], jobs: int) -> list[str]:
    return [DB, "-d", ",".join(datasets), *(a for m in LABELS for a in ("-m", m)), "--seeds", "0-2",
            *REFERENCE_PARAMS, "--jobs", str(jobs), "--threads", "1"]


def load(datasets: list[str]) -> dict:
    """{(label, data set, seed): row} of both readings' cells and plain BCE's."""
    con = sqlite3.connect(f"file:{ROOT / DB}?mode=ro", uri=True)
    con.row_factory = sqlite3.Row
    labels = ["bce", *LABELS]
    rows = con.execute(f"SELECT * FROM results WHERE noise = 'none' AND label IN ({','.join('?' * len(labels))})",
                       labels).fetchall()
    con.close()
    return {(r["label"], r["dataset"], r["seed"]): dict(r) for r in rows if r["dataset"] in datasets}


def table(cells: dict, datasets: list[str]) -> list[str]:
    def values(label, dataset, column):
        return [cells[(label, dataset, s)][column] for s in range(3) if (label, dataset, s) in cells]

    head = "| reading | other reading | metric | " + " | ".join(datasets) + " | sets reading better / worse beyond " \
           "seed std | mean Δ | Wilcoxon p (data sets) |"
    lines = [head, "|---" * (len(datasets) + 6) + "|"]
    for method, earlier in PAIRS:
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
                # one difference per data set (its seeds share data, split and difficulty: they are not
                # independent replicates), the unit of Demšar's comparisons that PROTOCOL §7 follows
                diffs.append(delta)
            p = wilcoxon(diffs).pvalue if any(diffs) else float("nan")
            mean = f"{np.mean(diffs):+.4f}" if diffs else "–"
            lines.append(f"| {method} | {earlier.partition(':')[2]} | {name} | " + " | ".join(row)
                         + f" | {better} / {worse} | {mean} | {p:.3f} ({len(diffs)}) |")
    # the level both settings reach, next to plain BCE-MLP
    lines += ["", "Mean test mAP over the data sets both readings have (BCE-MLP on the same sets):", "",
              "| reading | other reading | sets | reading | other reading | bce |", "|---|---|---|---|---|---|"]
    for method, earlier in PAIRS:
        sets = [d for d in datasets if len(values(method, d, "mAP_tuned")) == 3
                and len(values(earlier, d, "mAP_tuned")) == 3]
        if not sets:
            continue
        means = [np.mean([np.mean(values(label, d, "mAP_tuned")) for d in sets]) for label in (method, earlier, "bce")]
        lines.append(f"| {method} | {earlier.partition(':')[2]} | {len(sets)} | {means[0]:.4f} | {means[1]:.4f} | "
                     f"{means[2]:.4f} |")
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
    lines = [f"Command: `mlkd bench {' '.join(bench)}`, then `python benchmarks/spec_readings.py --report-only` "
             f"(table written {time.strftime('%Y-%m-%d %H:%M')}). Cells: test metrics at the validation-tuned "
             "threshold, seeds 0–2, the reference path; *reading* is the library's default unless it names a "
             "parameter; Δ = reading − other reading, mean over seeds "
             "(kd_reduction: sum over labels, METHODS.md, − mean over labels, the cells published before "
             "2026-12-03; t2_scaling: CS-KD's term as METHODS.md writes it − × T² = 16, the official code and the "
             "cells published before it; partners: CS-KD's partner within the batch − METHODS.md's pair batches; "
             "student_loss: KD-TEA's whole TEA loss − METHODS.md's literal BCE + "
             "β·MSE; ramp_epochs: PS-KD's α ramp over max_epochs = 200 − over 30 epochs); * = beyond "
             "the pooled seed std; – = a reading lacks seeds there.", "", *table(cells, datasets)]
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        replace_block("spec_readings", text)


if __name__ == "__main__":
    main()
