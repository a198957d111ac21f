"""Label noise × multi-round self-distillation and the PLL student (issue: self-distillation family).

    MLKD_DATA=../shared/datasets/mulan .venv/bin/python benchmarks/selfkd_noise.py            # run + tables + plot
    MLKD_DATA=../shared/datasets/mulan .venv/bin/python benchmarks/selfkd_noise.py --report-only

One *chain* = (dataset, noise kind, rate η, seed). The training AND validation labels get the noise
(`mlkd.noise.add_label_noise`, one draw over both, seeded by the seed); the test labels are always clean.
Each chain is one stage list run by `mlkd.stages.run_stages`:

    round0  plain BCE-MLP on the noisy labels (the teacher)
    round1 … round4   multi-round SD: a fresh MLP trained only on the previous round's σ outputs
    pll     PLL student (BCE on per-label ½ where round0 and the label disagree), initialised from round0
    pll_gce the same with binary GCE, q = 0.7

so every gain is measured against the same round-0 teacher. Each stage early-stops on the (noisy)
validation labels, like any fit under PROTOCOL.md; the tuned threshold of each stage is chosen on them too.
η = 0 is one chain per seed, shared by both kinds. Finished chains are appended to
benchmarks/results/selfkd_noise.jsonl at once; rerunning skips them.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from common import ROOT, load_results, replace_block, run_grid

STAGES = ["round0", "round1", "round2", "round3", "round4", "pll", "pll_gce"]
FOLLOWERS = STAGES[1:]
FIGURE = ROOT / "benchmarks/figures/selfkd_noise.png"


def stage_list():
    from mlkd.stages import Stage

    rounds = [Stage("round0", "bce")]
    rounds += [Stage(f"round{r}", "multiround", teacher=f"round{r - 1}") for r in range(1, 5)]
    rounds += [Stage("pll", "pll", {"loss": "bce"}, teacher="round0", init_from="round0"),
               Stage("pll_gce", "pll", {"loss": "gce", "gce_q": 0.7}, teacher="round0", init_from="round0")]
    return rounds


def chain_key(chain: dict) -> str:
    from mlkd.trainer import EARLY_STOPPING_RULE, REFERENCE_KERNELS, TrainConfig, identity_settings

    train = identity_settings(asdict(TrainConfig(**REFERENCE_KERNELS)))  # the reference path (see run_chain)
    for execution_only in ("num_threads", "device", "progress", "seed"):
        train.pop(execution_only)
    stages = [asdict(s) for s in stage_list()]
    blob = json.dumps({**chain, "stages": stages, "train": train, "early_stopping": EARLY_STOPPING_RULE},
                      sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:16]


def run_chain(chain: dict) -> dict:
    import torch

    from mlkd.data import load_dataset, validation_split
    from mlkd.metrics import evaluate, tune_threshold
    from mlkd.noise import add_train_val_noise
    from mlkd.preprocessing import FeatureScaler
    from mlkd.stages import run_stages
    from mlkd.trainer import REFERENCE_KERNELS, TrainConfig, predict_logits

    data = load_dataset(chain["dataset"])
    tr, va = validation_split(data.train.Y, fraction=1 / 6, seed=0)  # fixed split, as in every table
    X, Y = data.train.X, data.train.Y
    Y_tr, Y_va = Y[tr], Y[va]
    if chain["rate"] > 0:  # the estimator's draw: one over train + validation, seeded by the run seed
        Y_tr, Y_va = add_train_val_noise(Y_tr, Y_va, chain["kind"], chain["rate"], seed=chain["seed"])
    scaler = FeatureScaler().fit(X[tr])
    X_tr, X_va, X_te = scaler.transform(X[tr]), scaler.transform(X[va]), scaler.transform(data.test.X)
    t0 = time.perf_counter()
    outcomes = run_stages(stage_list(), X_tr, Y_tr, X_va, Y_va, TrainConfig(seed=chain["seed"], **REFERENCE_KERNELS),
                          input_scaler=scaler)
    fit_s = time.perf_counter() - t0
    stages = {}
    for name, (model, result) in outcomes.items():
        with torch.no_grad():
            p_va = torch.sigmoid(predict_logits(model, X_va)).numpy().astype(np.float64)
            p_te = torch.sigmoid(predict_logits(model, X_te)).numpy().astype(np.float64)
        thr = tune_threshold(Y_va, p_va)
        stages[name] = {"test": evaluate(data.test.Y, p_te, thr), "threshold": float(thr),
                        "best_epoch": result.best_epoch, "epochs_run": len(result.history)}
    observed = {"flip_rate": float(np.mean(Y_tr != Y[tr]))}
    return {**chain, "key": chain_key(chain), "stages": stages, "fit_s": fit_s, **observed}


def chains(datasets, kinds, rates, seeds):
    out = []
    for d in datasets:
        for s in seeds:
            out.append(dict(dataset=d, kind="none", rate=0.0, seed=s))
            out += [dict(dataset=d, kind=k, rate=r, seed=s) for r in rates if r > 0 for k in kinds]
    return out


def gains(rows, stage, metric="mAP"):
    """Per-seed gain of ``stage`` over round 0 on the clean test labels."""
    return np.array([r["stages"][stage]["test"][metric] - r["stages"]["round0"]["test"][metric] for r in rows])


def fmt_gain(g):
    if len(g) == 0:
        return "not run"
    text = f"{g.mean():+.4f}" + (f" ± {g.std(ddof=1):.4f}" if len(g) > 1 else " (1 seed)")
    return f"**{text}**" if len(g) > 1 and abs(g.mean()) > g.std(ddof=1) else text


def tables(results, datasets, kinds, rates, seeds, metric):
    lines = [f"| dataset | noise | η | round-0 {metric} | " + " | ".join(f"Δ {s}" for s in FOLLOWERS) + " |",
             "|---|---|---|---|" + "---|" * len(FOLLOWERS)]
    for d in datasets:
        for k in kinds:
            for r in rates:
                kind = "none" if r == 0 else k
                rows = [results[chain_key(dict(dataset=d, kind=kind, rate=r, seed=s))] for s in seeds
                        if chain_key(dict(dataset=d, kind=kind, rate=r, seed=s)) in results]
                if r == 0 and k != kinds[0]:
                    continue
                base = np.array([x["stages"]["round0"]["test"][metric] for x in rows])
                head = f"{base.mean():.3f}" if len(base) else "not run"
                lines.append(f"| {d} | {'—' if r == 0 else k} | {r:.1f} | {head} | "
                             + " | ".join(fmt_gain(gains(rows, s, metric)) for s in FOLLOWERS) + " |")
    return "\n".join(lines)


def plot(results, datasets, kinds, rates, seeds, metric="mAP"):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(kinds), len(datasets), figsize=(4.2 * len(datasets), 3.4 * len(kinds)),
                             squeeze=False, sharex=True)
    colours = plt.cm.viridis(np.linspace(0, 0.85, 4))
    style = {f"round{i}": dict(color=colours[i - 1], marker="o", ms=3, lw=1.2) for i in range(1, 5)}
    style["pll"] = dict(color="crimson", marker="s", ms=4, lw=2)
    style["pll_gce"] = dict(color="darkorange", marker="^", ms=4, lw=2, ls="--")
    for i, k in enumerate(kinds):
        for j, d in enumerate(datasets):
            ax = axes[i][j]
            for stage in FOLLOWERS:
                xs, ms, ss = [], [], []
                for r in rates:
                    kind = "none" if r == 0 else k
                    rows = [results[key] for s in seeds
                            if (key := chain_key(dict(dataset=d, kind=kind, rate=r, seed=s))) in results]
                    if rows:
                        g = gains(rows, stage, metric)
                        xs.append(r), ms.append(g.mean()), ss.append(g.std(ddof=1) if len(g) > 1 else 0.0)
                if xs:
                    ms, ss = np.array(ms), np.array(ss)
                    ax.plot(xs, ms, label=stage, **style[stage])
                    ax.fill_between(xs, ms - ss, ms + ss, color=style[stage]["color"], alpha=0.08)
            ax.axhline(0, color="grey", lw=0.8)
            ax.set_title(f"{d}, {k} noise", fontsize=10)
            ax.set_xlabel("noise rate η")
            if j == 0:
                ax.set_ylabel(f"Δ test {metric} vs round 0")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(FOLLOWERS), fontsize=9, frameon=False)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    FIGURE.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(FIGURE, dpi=110)
    plt.close(fig)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", default="emotions,scene,yeast")
    ap.add_argument("--kinds", default="symmetric,missing")
    ap.add_argument("--rates", default="0,0.1,0.2,0.3,0.4")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--report-only", action="store_true", help="write tables and plot from finished chains")
    ap.add_argument("--results", default=str(ROOT / "benchmarks/results/selfkd_noise.jsonl"))
    args = ap.parse_args()
    datasets, kinds = args.datasets.split(","), args.kinds.split(",")
    rates = [float(r) for r in args.rates.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    path = Path(args.results)
    all_chains = chains(datasets, kinds, rates, seeds)
    t0 = time.time()
    if args.report_only:
        results = load_results(path)
    else:
        results = run_grid(all_chains, path, args.jobs, run=run_chain, key=chain_key, desc="chains")
    wall = time.time() - t0
    done = [results[k] for c in all_chains if (k := chain_key(c)) in results]
    fit_total = sum(r["fit_s"] for r in done)
    cmd = ("MLKD_DATA=../shared/datasets/mulan .venv/bin/python benchmarks/selfkd_noise.py "
           f"--datasets {args.datasets} --kinds {args.kinds} --rates {args.rates} --seeds {args.seeds}")
    plot(results, datasets, kinds, rates, seeds)
    body = [
        f"Command: `{cmd}` (add `--report-only` to rebuild from the cached chains).  ",
        f"{len(done)} of {len(all_chains)} chains finished (7 fits each); total fit time {fit_total / 60:.1f} min "
        "on this machine" + ("" if args.report_only else f", wall {wall / 60:.1f} min this run") + ".  ",
        "Each cell: mean ± std over seeds of (stage − round 0) on the clean test labels; **bold** where "
        "|mean| exceeds the seed std. Noise hits training and validation labels (so early stopping and the "
        "threshold see noisy labels, as a user's would); test labels are clean.",
        "",
        f"![gain over the round-0 teacher]({FIGURE.relative_to(ROOT)})",
        "",
        "**Δ mAP over the round-0 teacher**",
        "",
        tables(results, datasets, kinds, rates, seeds, "mAP"),
        "",
        "**Δ example-F1 at each stage's validation-tuned threshold**",
        "",
        tables(results, datasets, kinds, rates, seeds, "example_f1"),
    ]
    replace_block("selfkd_noise", "\n".join(body))
    print(f"{len(done)}/{len(all_chains)} chains; tables written to BENCHMARKS.md, plot to {FIGURE}")


if __name__ == "__main__":
    main()
