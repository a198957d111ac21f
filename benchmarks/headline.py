"""The headline benchmark (issue: benchmark system): every method with its defaults × the 11 MULAN data sets ×
3 seeds, one `mlkd bench` grid and one `mlkd report`.

    MLKD_DATA=../shared/datasets/mulan .venv/bin/python benchmarks/headline.py                # run + report + tables
    MLKD_DATA=../shared/datasets/mulan .venv/bin/python benchmarks/headline.py --datasets flags,emotions
    MLKD_DATA=../shared/datasets/mulan .venv/bin/python benchmarks/headline.py --report-only

A thin wrapper, so the tables are exactly

    mlkd bench benchmarks/results/selfkd.db --grid benchmarks/headline.toml [-d DATASETS] --jobs 1 --threads 1 \\
      && mlkd report benchmarks/results/selfkd.db --out benchmarks/reports/headline --methods ...

The database is the one benchmarks/selfkd.py fills (its cells are headline cells, same resolved configs), so
both grow it; a killed run resumes. ``--datasets`` runs a subset of the grid's data sets (small ones first
is the grid's own order); the report always covers every finished headline cell. BENCHMARKS.md gets the
average ranks, the Friedman tests and the mAP / example-F1 / macro-F1 tables, plus the grid's compute time:
the sum of every cell's fit and predict seconds (one thread each), which is the wall time of one worker
running the whole grid from scratch, and the wall time of this run.
"""

from __future__ import annotations

import argparse
import re
import time

import tomllib

from common import ROOT, reference_config_hash, replace_block
from selfkd import mlkd, sections

DB = "benchmarks/results/selfkd.db"
GRID = "benchmarks/headline.toml"
REPORT = "benchmarks/reports/headline"
SECTIONS = ["mAP ↑", "Example-F1 @tuned ↑", "Macro-F1 @tuned ↑"]


def index_section(index_md: str, title: str) -> str:
    """The body of the ``## title`` section of the report's index.md (figures left out)."""
    m = re.search(rf"^## {re.escape(title)}.*?\n(.*?)(?=^## |\Z)", index_md, flags=re.M | re.S)
    if not m:
        return ""
    lines = [line for line in m.group(1).strip().splitlines()
             if not line.startswith(("![", "### ", "Headline metrics;"))]
    return "\n".join(lines).replace("](figures/", f"]({REPORT}/figures/").strip()


def compute_time(grid: dict) -> tuple[int, int, float]:
    """(finished headline cells, cells in the grid, summed fit + predict seconds of the finished ones)."""
    from mlkd.bench.store import ResultsDB

    with ResultsDB(ROOT / DB) as db:
        rows = db.rows("noise = 'none' AND label = method")
    keep = [r for r in rows if r["dataset"] in grid["datasets"] and r["method"] in grid["methods"]
            and r["config_hash"] == reference_config_hash(r["method"])]
    total = len(grid["datasets"]) * len(grid["methods"]) * len(grid["seeds"])
    return len(keep), total, sum(r["fit_seconds"] + (r["predict_seconds"] or 0) for r in keep)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", default=None, help="run only these of the grid's data sets (comma-separated)")
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--report-only", action="store_true", help="report and tables from the finished cells")
    args = ap.parse_args()
    grid = tomllib.loads((ROOT / GRID).read_text(encoding="utf-8"))
    bench = [DB, "--grid", GRID, *(["-d", args.datasets] if args.datasets else []),
             "--jobs", str(args.jobs), "--threads", "1"]
    t0 = time.time()
    if not args.report_only:
        mlkd("bench", *bench)
    wall = time.time() - t0
    methods = ",".join(grid["methods"])
    report = [DB, "--out", REPORT, "--methods", methods, "--datasets", ",".join(grid["datasets"])]
    mlkd("report", *report)
    done, total, seconds = compute_time(grid)
    index = (ROOT / REPORT / "index.md").read_text(encoding="utf-8")
    tables = (ROOT / REPORT / "tables.md").read_text(encoding="utf-8")
    summary = re.search(r"^- results: .*$", index, flags=re.M)
    cmd = ("mlkd bench " + " ".join(bench[:3]) + " --jobs 1 --threads 1 && mlkd report " + " ".join(report))
    body = [
        f"Command (from the repository root, `MLKD_DATA` set): `{cmd}`; `python benchmarks/headline.py` runs "
        "both and rewrites this block (`--datasets` runs a subset of the grid first).  ",
        (summary.group(0)[2:] if summary else "") + ".  ",
        f"**{done} of {total} headline cells finished.** Compute: {seconds / 3600:.1f} h of cell fit + predict "
        "time on one thread each (the wall time of one worker running these cells from scratch on this 2-core "
        "machine, which ran other jobs beside it)"
        + ("" if args.report_only else f"; this run: {wall / 60:.1f} min wall") + ".  ",
        f"Full report with every metric, CD diagrams and figures: [{REPORT}/index.md]({REPORT}/index.md).",
        "",
        "**Average ranks** (1 = best; over the data sets where every method has a value; N = data sets)",
        "",
        index_section(index, "Average ranks"),
        "",
        "**Friedman test and Nemenyi critical difference**",
        "",
        index_section(index, "Friedman test"),
        "",
        *sections(tables, SECTIONS),
    ]
    replace_block("headline", "\n".join(body))
    print(f"headline: {done} of {total} cells; tables written to BENCHMARKS.md")


if __name__ == "__main__":
    main()
