"""The TEA family on all 11 MULAN datasets: bce, tea, c2ae, mpvae, kdtea, skdtea (issue: TEA family).

    MLKD_DATA=../shared/datasets/mulan .venv/bin/python benchmarks/tea_family.py            # run + tables
    MLKD_DATA=../shared/datasets/mulan .venv/bin/python benchmarks/tea_family.py --report-only

Cells run small datasets first, then every large dataset with seed 0, then the large datasets' other seeds,
so a partial run still covers every dataset. Finished cells are appended to
benchmarks/results/tea_family.jsonl at once; rerunning skips them. Tables go to BENCHMARKS.md and say how
many seeds each cell has.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from common import METRIC_COLS, ROOT, delta_table, grouped, load_results, metric_table, replace_block
from common import run_grid as _run_grid

SMALL = ["flags", "emotions", "genbase", "medical", "scene", "yeast", "enron"]
LARGE = ["corel5k", "bibtex", "tmc2007", "delicious"]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", default=",".join(SMALL + LARGE))
    ap.add_argument("--methods", default="bce,tea,c2ae,mpvae,kdtea,skdtea")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--report-only", action="store_true", help="write tables from finished cells, run nothing")
    ap.add_argument("--results", default=str(ROOT / "benchmarks/results/tea_family.jsonl"))
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
    path = Path(args.results)
    results = load_results(path) if args.report_only else _run_grid(cells, path, args.jobs)
    wall = time.time() - t0
    this_run = "" if args.report_only else f", wall {wall / 60:.1f} min this run"
    g = grouped(results, cells)
    done = sum(len(v) for v in g.values())
    fit_total = sum(r["fit_s"] for v in g.values() for r in v)
    fit_col = ("fit s", lambda rs: f"{np.mean([r['fit_s'] for r in rs]):.1f}")
    thr_col = ("threshold", lambda rs: f"{np.mean([r['threshold'] for r in rs]):.2f}")
    cmd = ("MLKD_DATA=../shared/datasets/mulan .venv/bin/python benchmarks/tea_family.py "
           f"--datasets {args.datasets} --methods {args.methods} --seeds {args.seeds} --jobs {args.jobs}")
    dm = [(("at_tuned", "mAP"), "mAP", True), (("at_tuned", "ranking_loss"), "RL", False),
          (("at_tuned", "example_f1"), "ebF1@tuned", True), (("at_tuned", "macro_f1"), "maF1@tuned", True),
          (("at_tuned", "micro_f1"), "miF1@tuned", True), (("at_tuned", "hamming_loss"), "HL@tuned", False)]
    body = [
        f"Command: `{cmd}` (add `--report-only` to rebuild the tables from the cached cells).  ",
        f"{done} of {len(cells)} cells finished; total fit time {fit_total / 60:.1f} min on this machine "
        f"(2 cores, {args.jobs} workers × 1 thread){this_run}. "
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


def average_ranks(g, datasets, methods, metrics) -> str:
    from scipy.stats import rankdata

    full = [d for d in datasets if all(g.get((d, m)) for m in methods)]
    if len(full) < 2:
        return ""
    lines = [f"| metric ({len(full)} datasets) | " + " | ".join(methods) + " |", "|---|" + "---|" * len(methods)]
    for metric, hib in metrics:
        table = np.array([[np.mean([r["at_tuned"][metric] for r in g[(d, m)]]) for m in methods] for d in full])
        r = np.mean([rankdata(-row if hib else row) for row in table], axis=0)
        lines.append(f"| {metric} | " + " | ".join(f"{x:.2f}" for x in r) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
