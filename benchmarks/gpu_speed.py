"""The fast path on a CUDA GPU: epoch times of the two training paths, and many small fits at once.

    # on a machine with a CUDA GPU (measures, keeps the figures in benchmarks/results/gpu_speed.json):
    MLKD_DATA=../shared/datasets/mulan python benchmarks/gpu_speed.py --run
    # anywhere (rebuilds the BENCHMARKS.md block "gpu-speed" from that file):
    python benchmarks/gpu_speed.py

Two tables, both measured on the GPU in one run (wall time with ``torch.cuda.synchronize``, since the work
is on the device):

- epoch: one ``Trainer.fit`` epoch (validation included; (fit of E epochs − fit of 1) / (E − 1)) on the
  reference path (``REFERENCE_KERNELS``: the published cells' kernels) against the fast path (the defaults),
  at the default batch 64 and at 512, interleaved repeats, medians;
- batched: 8 seeds of one configuration to early stopping, one after another against ``mlkd.batched``'s
  one vmapped model, with the test mAP of both (the comparison is in distribution: see perf.py, section 3).

The GPU section "gpu" (benchmarks/gpu.py) compares whole protocol cells with the CPU; this one is issue 7's
targets 1 and 3 on the device where launch overhead, not arithmetic, bounds a small model.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import time

import numpy as np

from common import ROOT, replace_block, require_cuda

RESULTS = ROOT / "benchmarks" / "results" / "gpu_speed.json"
EPOCH_ROWS = [(ds, m, bs) for ds in ("yeast", "delicious") for m in ("bce", "skdtea") for bs in (64, 512)]
BATCHED_ROWS = [("emotions", "skdtea"), ("emotions", "bce"), ("yeast", "skdtea"), ("yeast", "bce")]


def _sync():
    import torch

    torch.cuda.synchronize()


def wall(fn) -> float:
    _sync()
    t0 = time.perf_counter()
    fn()
    _sync()
    return time.perf_counter() - t0


def epoch_seconds(method_name: str, data, bs: int, path: str, epochs: int) -> float:
    from mlkd.methods import build_method
    from mlkd.trainer import TrainConfig, Trainer
    from perf import path_settings

    X, Y, Xv, Yv = data[:4]

    def fit(n):
        model = build_method(method_name, X.shape[1], Y.shape[1], {}, seed=0)
        cfg = TrainConfig(max_epochs=n, patience=10**6, batch_size=bs, device="cuda", **path_settings(path))
        return wall(lambda: Trainer(cfg).fit(model, X, Y, Xv, Yv))

    return (fit(epochs) - fit(1)) / (epochs - 1)


def test_map(model, X, Y) -> float:
    import torch

    from mlkd.metrics import mean_average_precision
    from mlkd.trainer import predict_logits

    return mean_average_precision(Y, torch.sigmoid(predict_logits(model, X)).cpu().numpy())


def batched_row(ds: str, method: str, seeds: list[int]) -> dict:
    from mlkd.batched import fit_seeds
    from mlkd.methods import build_method
    from mlkd.trainer import TrainConfig, Trainer
    from perf import prepared

    data = prepared(ds)
    seq_maps, fits = [], []

    def sequential():
        for s in seeds:
            model = build_method(method, data[0].shape[1], data[1].shape[1], {}, seed=s)
            Trainer(TrainConfig(seed=s, device="cuda")).fit(model, *data[:4])
            seq_maps.append(test_map(model, data[4], data[5]))

    t_seq = wall(sequential)
    t_bat = wall(lambda: fits.extend(fit_seeds(method, *data[:4], seeds=seeds, config=TrainConfig(device="cuda"))))
    return {"dataset": ds, "method": method, "sequential_s": t_seq, "batched_s": t_bat, "sequential_map": seq_maps,
            "batched_map": [test_map(model, data[4], data[5]) for model, _ in fits]}


def measure(repeats: int, members: int) -> dict:
    import torch

    from perf import prepared

    props = torch.cuda.get_device_properties(0)
    try:
        driver = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                capture_output=True, text=True).stdout.strip() or "?"
    except OSError:
        driver = "?"
    out = {"gpu": props.name, "driver": driver, "torch": torch.__version__, "host": platform.machine(),
           "date": time.strftime("%Y-%m-%d %H:%M"), "repeats": repeats, "members": members, "epoch": [],
           "batched": []}
    for path in ("fast", "reference"):  # warm-up: CUDA context, cuBLAS handles, kernels, the optimizers' imports
        epoch_seconds("bce", prepared("yeast"), 64, path, 2)
    for ds, m, bs in EPOCH_ROWS:
        data = prepared(ds)
        epochs = 3 if ds == "delicious" else 5
        ref, fast = [], []
        for _ in range(repeats):
            ref.append(epoch_seconds(m, data, bs, "reference", epochs))
            fast.append(epoch_seconds(m, data, bs, "fast", epochs))
        row = {"dataset": ds, "method": m, "batch": bs, "reference": ref, "fast": fast}
        out["epoch"].append(row)
        print(row, flush=True)
    for ds, m in BATCHED_ROWS:
        row = batched_row(ds, m, list(range(members)))
        out["batched"].append(row)
        print(row, flush=True)
    return out


def pm(values) -> str:
    v = np.asarray(values, dtype=float)
    return f"{v.mean():.3f} ± {v.std(ddof=1) if len(v) > 1 else 0:.3f}"


def render(r: dict) -> str:
    lines = [
        "Command: `MLKD_DATA=../shared/datasets/mulan python benchmarks/gpu_speed.py --run` on a machine with a "
        f"CUDA GPU, then `python benchmarks/gpu_speed.py` anywhere to rebuild this block. {r['date']}: one "
        f"{r['gpu']} (driver {r['driver']}, torch {r['torch']}), wall time with `torch.cuda.synchronize`, "
        f"{r['repeats']} interleaved repeats, medians.",
        "",
        "**Epoch on the GPU, reference path → fast path (the defaults).** One `Trainer.fit` epoch, validation "
        "included ((fit of E epochs − fit of 1) / (E − 1); E = 5, delicious 3), default model of each method.",
        "",
        "| data set | method | batch | epoch, reference (ms) | epoch, fast (ms) | fast ÷ reference |",
        "|---|---|---|---|---|---|",
    ]
    for row in r["epoch"]:
        ref, fast = np.median(row["reference"]), np.median(row["fast"])
        ratio = float(np.median(np.asarray(row["fast"]) / np.asarray(row["reference"])))
        lines.append(f"| {row['dataset']} | {row['method']} | {row['batch']} | {1000 * ref:.0f} | {1000 * fast:.0f} "
                     f"| {ratio:.2f} |")
    lines += [
        "",
        f"**Many small fits at once on the GPU.** {r['members']} seeds of the default configuration to early "
        "stopping: `Trainer.fit` per seed one after another against `mlkd.batched.fit_seeds` (one vmapped "
        "model); test mAP mean ± std over the seeds (same comparison in distribution as perf.py's section 3).",
        "",
        "| data set | method | one after another (s) | batched (s) | fits/min sequential → batched | speed-up "
        "| test mAP sequential | test mAP batched |",
        "|---|---|---|---|---|---|---|---|",
    ]
    k = r["members"]
    for row in r["batched"]:
        s, b = row["sequential_s"], row["batched_s"]
        lines.append(f"| {row['dataset']} | {row['method']} | {s:.1f} | {b:.1f} | {60 * k / s:.0f} → "
                     f"{60 * k / b:.0f} | {s / b:.2f}× | {pm(row['sequential_map'])} | {pm(row['batched_map'])} |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", action="store_true", help="measure first (needs a CUDA GPU)")
    ap.add_argument("--repeats", type=int, default=3, help="interleaved repeats of each epoch timing (default 3)")
    ap.add_argument("--members", type=int, default=8, help="seeds per batched fit (default 8)")
    args = ap.parse_args()
    if args.run:
        require_cuda(ap)
        RESULTS.write_text(json.dumps(measure(args.repeats, args.members), indent=1) + "\n")
    if not RESULTS.exists():
        ap.error(f"{RESULTS} does not exist; expected the GPU figures (make them with --run on a GPU machine)")
    body = render(json.loads(RESULTS.read_text()))
    replace_block("gpu-speed", body)
    print(body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
