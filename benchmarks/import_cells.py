"""Copy cells that a script-run grid cached in JSON lines into an `mlkd bench` results database, so the headline
grid (benchmarks/headline.toml) does not fit them again.

    MLKD_DATA=../shared/datasets/mulan .venv/bin/python benchmarks/import_cells.py            # tea_family → selfkd.db
    MLKD_DATA=../shared/datasets/mulan .venv/bin/python benchmarks/import_cells.py --check 2  # + rerun 2 cells

benchmarks/tea_family.py fits each cell with `benchmarks/common.run_cell`: the estimator with the method's
defaults, the fixed seed-0 1/6 validation split, test once — what `mlkd bench` does for the same
(dataset, method, seed). A row is copied only when its recorded config equals the bench's resolved config
field by field (method parameters, training settings, early-stopping rule); otherwise it is skipped and
counted. Copied rows keep their metrics, threshold, epochs, validation score and timings; they have no
training history or soft-target examples (the report draws no curves for them), and their `machine`
column ends in "(imported from <file>)". A cell the database already holds keeps the database's row (the
script says how many of those differ: cells fitted on another machine can, see BENCHMARKS.md,
"Reproducibility"). `--check N` refits the N fastest copied cells through the bench runner on this machine
and stops with an error unless every metric, the threshold and the epochs are identical. Copying again skips
rows already in the database.
"""

from __future__ import annotations

import argparse
import functools
import sys
from datetime import UTC, datetime
from pathlib import Path

from common import ROOT, load_results

FIELDS = ("threshold", "epochs_run", "best_epoch")
#: bench training settings a cached config may lack, at the values that leave the numbers as they were
NEUTRAL = {"device": "auto", "fused_optimizer": False}


@functools.cache
def split_sizes(dataset: str) -> tuple[int, int, int]:
    """(training rows after the validation hold-out, validation rows, test rows): one load per data set."""
    from mlkd.data import load_dataset, validation_split

    data = load_dataset(dataset)
    tr, va = validation_split(data.train.Y, fraction=1 / 6, seed=0)
    return len(tr), len(va), data.test.n_samples


def bench_row(row: dict, source: str) -> dict | None:
    """The results-database row of a cached cell, or None if its config is not the bench's for that cell."""
    from mlkd.bench.grid import Cell

    if row.get("params") or row.get("noise", "none") != "none":
        return None
    cell = Cell(dataset=row["dataset"], method=row["method"], label=row["method"], seed=int(row["seed"]))
    resolved, cached = cell.config, row["config"]
    train = {k: v for k, v in cached["train"].items() if k not in ("seed", "early_stopping")}  # seed: the cell's
    extra = {k: v for k, v in resolved["train"].items() if k not in train}
    same = (cached["method"] == resolved["params"]
            and all(resolved["train"].get(k) == v for k, v in train.items())
            and extra == {k: v for k, v in NEUTRAL.items() if k in extra} and set(extra) <= set(NEUTRAL)
            and cached["train"].get("early_stopping") == resolved["early_stopping"])
    if not same:
        return None
    n_train, n_val, n_test = split_sizes(row["dataset"])
    out = {
        "key": cell.key, "dataset": cell.dataset, "method": cell.method, "label": cell.label,
        "config": resolved, "config_hash": cell.config_hash, "seed": cell.seed, "noise": "none",
        "val_score": row["val_mAP"], "fit_seconds": row["fit_s"], "predict_seconds": row.get("predict_s"),
        "n_train": n_train, "n_val": n_val, "n_test": n_test, "threads": 1, "device": "cpu",
        "mlkd_version": row.get("mlkd"), "torch_version": row.get("torch"), "python_version": None,
        "machine": f"{row.get('machine', '')} (imported from {source})",
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"), "history": None, "examples": None,
        **{f: row[f] for f in FIELDS},
    }
    for suffix, key in (("05", "at_05"), ("tuned", "at_tuned")):
        out.update({f"{metric}_{suffix}": value for metric, value in row[key].items()})
    return out


def check(rows: list[dict], n: int) -> None:
    """Refit ``n`` copied cells through the bench runner; raise unless the numbers are identical."""
    from mlkd.bench.grid import Cell
    from mlkd.bench.runner import run_cell

    for row in rows[:n]:
        fresh = run_cell(Cell(dataset=row["dataset"], method=row["method"], label=row["label"], seed=row["seed"]),
                         threads=1)
        diff = [k for k, v in _numbers(row).items() if v != fresh[k]]
        if diff:
            raise SystemExit(f"import check failed: {row['dataset']} {row['method']} seed {row['seed']} differs "
                             f"from a fresh bench fit in {', '.join(diff)}; expected identical numbers")
        print(f"check: {row['dataset']} {row['method']} seed {row['seed']}: identical to a fresh bench fit")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source", default="benchmarks/results/tea_family.jsonl")
    ap.add_argument("--db", default="benchmarks/results/selfkd.db")
    ap.add_argument("--check", type=int, default=0, metavar="N", help="refit the first N copied cells and compare")
    args = ap.parse_args()
    from mlkd.bench.store import ResultsDB

    source = Path(args.source)
    cached = load_results(ROOT / source)
    rows, skipped = [], 0
    for row in cached.values():
        converted = bench_row(row, source.name)
        if converted is None:
            skipped += 1
        else:
            rows.append(converted)
    small_first = sorted(rows, key=lambda r: r["fit_seconds"])
    if args.check:
        check(small_first, args.check)
    with ResultsDB(ROOT / args.db, create=True) as db:
        there = {r["key"]: r for r in db.rows()}
        differ = [(r, there[r["key"]]) for r in rows if r["key"] in there and _numbers(r) != _numbers(there[r["key"]])]
        added = sum(db.insert(r) for r in rows)
    print(f"{source}: {len(cached)} cached cells, {added} copied into {args.db}, {len(rows) - added} already there "
          f"(kept as they are), {skipped} skipped (not the bench's default config)", file=sys.stderr)
    if differ:
        worst = max(abs(a["mAP_tuned"] - b["mAP_tuned"]) for a, b in differ)
        print(f"{len(differ)} of the cells already there have other numbers in {source} (largest test-mAP gap "
              f"{worst:.4f}): fitted on another machine, whose MKL kernels round differently (BENCHMARKS.md, "
              "'Reproducibility'); the database keeps its own fit", file=sys.stderr)


def _numbers(row: dict) -> dict:
    return {k: row[k] for k in row if k.endswith("_05") or k.endswith("_tuned") or k in FIELDS}


if __name__ == "__main__":
    main()
