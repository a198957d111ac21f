"""The TEA family on all 11 MULAN datasets: bce, tea, c2ae, mpvae, kdtea, skdtea (issue: TEA family).

    MLKD_DATA=../shared/datasets/mulan .venv/bin/python benchmarks/tea_family.py            # run + tables
    MLKD_DATA=../shared/datasets/mulan .venv/bin/python benchmarks/tea_family.py --report-only

A thin wrapper around the benchmark system: the cells are the headline grid's (each method with its
defaults), run by ``mlkd bench`` into benchmarks/results/selfkd.db, the database the self-distillation and
headline grids share, so no cell is fitted twice and a killed run resumes. Small datasets run first, then
every large dataset with seed 0, then the large datasets' other seeds, so a partial run still covers every
dataset. The tables (written to BENCHMARKS.md, saying how many seeds each cell has) are built from the
database's rows. Cells that earlier versions of this script cached in benchmarks/results/tea_family.jsonl
were copied into the database with benchmarks/import_cells.py.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from common import (
    METRIC_COLS,
    REFERENCE_PARAMS,
    ROOT,
    cell_key,
    delta_table,
    grouped,
    metric_table,
    reference_config_hash,
    replace_block,
)
from selfkd import DB, mlkd

SMALL = ["flags", "emotions", "genbase", "medical", "scene", "yeast", "enron"]
LARGE = ["corel5k", "bibtex", "tmc2007", "delicious"]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", default=",".join(SMALL + LARGE))
    ap.add_argument("--methods", default="bce,tea,c2ae,mpvae,kdtea,skdtea")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--report-only", action="store_true", help="write tables from finished cells, run nothing")
    args = ap.parse_args()
    datasets, methods = args.datasets.split(","), args.methods.split(",")
    seeds = [int(s) for s in args.seeds.split(",")]

    def cells_for(ds_list, seed_list):
        return [dict(dataset=d, method=m, params={}, seed=s, label=m) for d in ds_list for s in seed_list
                for m in methods]

    small = [d for d in datasets if d not in LARGE]
    large = [d for d in datasets if d in LARGE]
    cells = cells_for(small, seeds) + cells_for(large, seeds[:1]) + cells_for(large, seeds[1:])
    t0 = time.time()
    if not args.report_only:
        ms = [a for m in methods for a in ("-m", m)]
        for ds_list, seed_list in ((small, seeds), (large, seeds[:1]), (large, seeds[1:])):
            if ds_list and seed_list:
                mlkd("bench", DB, "-d", ",".join(ds_list), *ms, "--seeds", ",".join(map(str, seed_list)),
                     *REFERENCE_PARAMS, "--jobs", str(args.jobs), "--threads", "1")
    results = db_results(cells)
    wall = time.time() - t0
    this_run = "" if args.report_only else f", wall {wall / 60:.1f} min this run"
    g = grouped(results, cells)
    done = sum(len(v) for v in g.values())
    fit_total = sum(r["fit_s"] for v in g.values() for r in v)
    fit_col = ("fit s", lambda rs: f"{np.mean([r['fit_s'] for r in rs]):.1f}")
    thr_col = ("threshold", lambda rs: f"{np.mean([r['threshold'] for r in rs]):.2f}")
    cmd = ("MLKD_DATA=../shared/datasets/mulan .venv/bin/python benchmarks/tea_family.py "
           f"--datasets {args.datasets} --methods {args.methods} --seeds {args.seeds} --jobs {args.jobs}")
    imported = sum(1 for v in results.values() if "(imported from" in v.get("machine", ""))
    dm = [(("at_tuned", "mAP"), "mAP", True), (("at_tuned", "ranking_loss"), "RL", False),
          (("at_tuned", "example_f1"), "ebF1@tuned", True), (("at_tuned", "macro_f1"), "maF1@tuned", True),
          (("at_tuned", "micro_f1"), "miF1@tuned", True), (("at_tuned", "hamming_loss"), "HL@tuned", False)]
    body = [
        f"Command: `{cmd}` (add `--report-only` to rebuild the tables from the cached cells).  ",
        f"{done} of {len(cells)} cells finished; total fit time {fit_total / 60:.1f} min on this machine "
        f"(2 cores, {args.jobs} workers × 1 thread){this_run}. Cells are rows of `{DB}` (`mlkd bench`; "
        f"{imported} of them fitted by this script's earlier jsonl version and copied in by "
        "`benchmarks/import_cells.py`). "
        "Protocol as in the foundation table (fixed 1/6 validation split of train, test once, defaults of every "
        "method). A method row marked *(1 seed)* or *(2 seeds)* has fewer than the 3 seeds asked for: the grid "
        "ran out of time there, and its ± is not a seed spread. *not run*: no seed finished.",
        "",
        "**Ranking metrics (threshold-free)**",
        "",
        metric_table(g, datasets, methods, "at_tuned", METRIC_COLS["ranking"], [fit_col]),
        "",
        "**Threshold metrics at 0.5**",
        "",
        metric_table(g, datasets, methods, "at_05", METRIC_COLS["threshold"]),
        "",
        "**Threshold metrics at the validation-tuned threshold**",
        "",
        metric_table(g, datasets, methods, "at_tuned", METRIC_COLS["threshold"], [thr_col]),
    ]
    for other in ("tea", "c2ae", "mpvae", "kdtea"):
        if other in methods and "skdtea" in methods:
            body += ["", f"**SKDTEA − {other.upper()}** (mean difference; win/loss only beyond the pooled seed std)",
                     "", delta_table(g, datasets, other, "skdtea", dm)]
    ranks = average_ranks(g, datasets, methods, [("mAP", True), ("ranking_loss", False), ("example_f1", True),
                                                 ("macro_f1", True)])
    if ranks:
        body += ["", "**Average rank across datasets** (1 = best; datasets where every method has ≥ 1 seed; "
                 "tuned threshold for the F1s)", "", ranks]
    replace_block("tea_family", "\n".join(body))
    print(f"{done}/{len(cells)} cells; tables written to BENCHMARKS.md")


def db_results(cells: list[dict]) -> dict[str, dict]:
    """The database's rows of ``cells`` (default configs, no label noise), keyed and shaped as the table
    helpers of common.py expect (``at_05`` / ``at_tuned`` metric dicts, ``fit_s``)."""
    from mlkd.bench.store import ResultsDB
    from mlkd.metrics import METRICS

    wanted = {(c["dataset"], c["method"], c["seed"]): c for c in cells}
    out = {}
    with ResultsDB(ROOT / DB) as db:
        for r in db.rows("noise = 'none' AND label = method"):
            cell = wanted.get((r["dataset"], r["method"], r["seed"]))
            if cell is None or r["config_hash"] != reference_config_hash(r["method"]):
                continue  # another config under the same label (e.g. a fast-path cell) is not this table's
            out[cell_key(cell)] = {
                **cell, "at_05": {m: r[f"{m}_05"] for m in METRICS}, "at_tuned": {m: r[f"{m}_tuned"] for m in METRICS},
                "threshold": r["threshold"], "val_mAP": r["val_score"], "best_epoch": r["best_epoch"],
                "epochs_run": r["epochs_run"], "fit_s": r["fit_seconds"], "machine": r["machine"]}
    return out


def average_ranks(g, datasets, methods, metrics) -> str:
    """Average ranks as ``mlkd report`` ranks: means of the sorted seed values, ties (up to float rounding) shared."""
    from mlkd.bench.stats import average_ranks as mean_ranks
    from mlkd.bench.stats import rank_matrix

    full = [d for d in datasets if all(g.get((d, m)) for m in methods)]
    if len(full) < 2:
        return ""
    lines = [f"| metric ({len(full)} datasets) | " + " | ".join(methods) + " |", "|---|" + "---|" * len(methods)]
    for metric, hib in metrics:
        table = np.array([[np.sort([r["at_tuned"][metric] for r in g[(d, m)]]).mean() for m in methods] for d in full])
        r = mean_ranks(rank_matrix(table, higher_is_better=hib))
        lines.append(f"| {metric} | " + " | ".join(f"{x:.2f}" for x in r) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
