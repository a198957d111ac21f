"""What a GPU buys: the same protocol cells fitted on CUDA against this project's CPU cells.

    # on a machine with a CUDA GPU (fits the cells into benchmarks/results/gpu.db, then reports):
    MLKD_DATA=../shared/datasets/mulan python benchmarks/gpu.py --run
    # anywhere (rebuilds the BENCHMARKS.md block "gpu" from the two databases):
    python benchmarks/gpu.py

The GPU cells are `mlkd bench` cells with ``--param device=cuda`` in their own database, never mixed into
the CPU tables: PROTOCOL.md §9 promises bit-identical reruns on CPU, and a GPU fit agrees with a CPU fit
only up to float rounding (cuBLAS vs MKL kernels), which training can amplify (a different best epoch).
Each row sets a GPU cell beside the CPU cell of the same data set, method and seed in selfkd.db.
"""

from __future__ import annotations

import argparse
import sqlite3
import subprocess
import sys

from common import REFERENCE_PARAMS, ROOT, replace_block, require_cuda

GPU_DB = ROOT / "benchmarks" / "results" / "gpu.db"
CPU_DB = ROOT / "benchmarks" / "results" / "selfkd.db"
DATASETS = ["yeast", "delicious"]
METHODS = ["bce", "skdtea", "tea", "c2ae", "mpvae", "kdtea"]
COLUMNS = "dataset, method, seed, fit_seconds, epochs_run, best_epoch, mAP_05, example_f1_tuned, device, machine"


def rows(db, cells=None) -> dict:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        found = con.execute(f"SELECT {COLUMNS} FROM results WHERE noise = 'none'").fetchall()
    finally:
        con.close()
    return {(r[0], r[1], r[2]): r for r in found if cells is None or (r[0], r[1], r[2]) in cells}


def render(gpu: dict, cpu: dict) -> str:
    keys = sorted(gpu, key=lambda k: (DATASETS.index(k[0]) if k[0] in DATASETS else 99,
                                      METHODS.index(k[1]) if k[1] in METHODS else 99, k[2]))
    machine = sorted({gpu[k][9] for k in keys})
    out = [
        "Command: `MLKD_DATA=../shared/datasets/mulan python benchmarks/gpu.py --run` on a machine with a CUDA GPU "
        "(it runs `mlkd bench benchmarks/results/gpu.db -d " + ",".join(DATASETS) + " "
        + " ".join(f"-m {m}" for m in METHODS) + " --seeds 0 --param device=cuda --threads 1 --no-checkpoints`), "
        "then `python benchmarks/gpu.py` anywhere to rebuild this block. GPU: one NVIDIA H100 80GB HBM3 "
        f"(driver 580.159.04, torch 2.11.0+cu130, host `{', '.join(machine)}`), one CPU thread per cell; CPU: the "
        "cells of `benchmarks/results/selfkd.db` (this project's 2-core machine, one thread, torch 2.13.0+cpu). "
        "Same protocol, same seed, same defaults; fit time includes the per-epoch validation.",
        "",
        "| dataset | method | seed | CPU fit s | GPU fit s | CPU ÷ GPU | epochs CPU / GPU | mAP CPU | mAP GPU "
        "| ebF1@tuned CPU | ebF1@tuned GPU |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for k in keys:
        g, c = gpu[k], cpu.get(k)
        if c is None:
            out.append(f"| {k[0]} | {k[1]} | {k[2]} | *no CPU cell* | {g[3]:.1f} | | – / {g[4]} | | {g[6]:.3f} | "
                       f"| {g[7]:.3f} |")
            continue
        out.append(f"| {k[0]} | {k[1]} | {k[2]} | {c[3]:.1f} | {g[3]:.1f} | {c[3] / g[3]:.1f}× | {c[4]} / {g[4]} | "
                   f"{c[6]:.3f} | {g[6]:.3f} | {c[7]:.3f} | {g[7]:.3f} |")
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", action="store_true", help="fit the missing GPU cells first (needs a CUDA GPU)")
    ap.add_argument("--jobs", type=int, default=1, help="cells at once on the one GPU (default 1: clean timings)")
    args = ap.parse_args()
    if args.run:
        require_cuda(ap)
        cmd = [sys.executable, "-m", "mlkd", "bench", str(GPU_DB), "-d", ",".join(DATASETS),
               *(a for m in METHODS for a in ("-m", m)), "--seeds", "0", "--param", "device=cuda", *REFERENCE_PARAMS,
               "--jobs", str(args.jobs), "--threads", "1", "--no-checkpoints"]
        subprocess.run(cmd, check=True)
    if not GPU_DB.exists():
        ap.error(f"{GPU_DB} does not exist; expected the GPU cells (make them with --run on a GPU machine)")
    gpu = rows(GPU_DB)
    body = render(gpu, rows(CPU_DB, set(gpu)))
    replace_block("gpu", body)
    print(body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
