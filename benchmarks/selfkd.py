"""The self-distillation family next to bce and skdtea on the MULAN benchmarks (issue: self-distillation family).

    MLKD_DATA=../shared/datasets/mulan .venv/bin/python benchmarks/selfkd.py                # run + report + tables
    MLKD_DATA=../shared/datasets/mulan .venv/bin/python benchmarks/selfkd.py --report-only

A thin wrapper around the benchmark system, so the table is exactly

    mlkd bench benchmarks/results/selfkd.db -d DATASETS -m bce -m skdtea -m ls ... --seeds 0-2 --jobs 1 \\
      && mlkd report benchmarks/results/selfkd.db --out benchmarks/reports/selfkd --methods ... --datasets ...

(every cell written to the SQLite database as it finishes; a rerun resumes; the report keeps this grid's
methods and data sets, so the database can also hold the headline grid, benchmarks/headline.toml). The
report's Markdown tables (mAP, ranking loss, example-F1 at 0.5 and at the tuned threshold, macro-F1, average
ranks) are copied into BENCHMARKS.md; the report folder has every metric, the Friedman/Nemenyi test and the
figures.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from common import REFERENCE_PARAMS, ROOT, replace_block

DATASETS = "flags,emotions,scene,yeast,genbase,medical,enron,corel5k,bibtex,tmc2007,delicious"
METHODS = "bce,skdtea,ls,tfkd_self,tfkd_reg,pskd,cskd,ban,raskd,raskd_plus,multiround,pll"
DB = "benchmarks/results/selfkd.db"
REPORT = "benchmarks/reports/selfkd"
SECTIONS = ["mAP ↑", "Ranking loss ↓", "Example-F1 @0.5 ↑", "Example-F1 @tuned ↑", "Macro-F1 @tuned ↑"]


def mlkd(*args: str) -> None:
    """``mlkd ARGS`` from the repository root (relative PYTHONPATH entries made absolute first)."""
    env = dict(os.environ)
    if env.get("PYTHONPATH"):
        env["PYTHONPATH"] = os.pathsep.join(str(Path(p).resolve()) for p in env["PYTHONPATH"].split(os.pathsep))
    subprocess.run([sys.executable, "-m", "mlkd.cli", *args], cwd=ROOT, env=env, check=True)


def sections(tables_md: str, wanted: list[str]) -> list[str]:
    """The ``## title`` sections of the report's tables.md named in ``wanted``, in that order."""
    parts = {m.group(1).strip(): m.group(2).strip()
             for m in re.finditer(r"^## (.+?)\n(.*?)(?=^## |\Z)", tables_md, flags=re.M | re.S)}
    out = []
    for title in wanted:
        if title in parts:
            out += [f"**{title}**", "", parts[title], ""]
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", default=DATASETS)
    ap.add_argument("--methods", default=METHODS)
    ap.add_argument("--seeds", default="0-2")
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--report-only", action="store_true", help="report and tables from the finished cells")
    args = ap.parse_args()
    methods = [a for m in args.methods.split(",") for a in ("-m", m)]
    bench = [DB, "-d", args.datasets, *methods, "--seeds", args.seeds, *REFERENCE_PARAMS, "--jobs", str(args.jobs),
             "--threads", "1"]
    t0 = time.time()
    if not args.report_only:
        mlkd("bench", *bench)
    wall = time.time() - t0
    report = [DB, "--out", REPORT, "--methods", args.methods, "--datasets", args.datasets]
    mlkd("report", *report)
    cmd = "mlkd bench " + " ".join(bench) + " && mlkd report " + " ".join(report)
    tables = (ROOT / REPORT / "tables.md").read_text(encoding="utf-8")
    summary = re.search(r"^- results: .*$", (ROOT / REPORT / "index.md").read_text(encoding="utf-8"), flags=re.M)
    body = [
        f"Command (from the repository root, `MLKD_DATA` set): `{cmd}`; "
        f"`python benchmarks/selfkd.py` runs both and rewrites this block"
        + ("" if args.report_only else f" (wall {wall / 60:.1f} min this run)") + ".  ",
        (summary.group(0)[2:] if summary else "") + ".  ",
        f"Full report with every metric, the Friedman/Nemenyi test, CD diagrams and figures: "
        f"[{REPORT}/index.md]({REPORT}/index.md).",
        "",
        *sections(tables, SECTIONS),
    ]
    replace_block("selfkd_table", "\n".join(body))
    print("tables written to BENCHMARKS.md")


if __name__ == "__main__":
    main()
