"""Why TEA (and KD-TEA) score near chance on medical and corel5k: latent collapse under plain L2 alignment.

    MLKD_DATA=../shared/datasets/mulan .venv/bin/python benchmarks/tea_collapse.py --datasets medical,corel5k

For each data set, TEA (METHODS.md §1 with alignment="l2", λ_align = 1) is fitted with seed 0 under
PROTOCOL.md, then again with only the alignment changed: λ_align = 0.1, 0.01, 0 and C2AE's alignment
("cca": L2 + the orthogonality penalty). For each fit it prints the kept epoch, validation and test mAP, and
the mean per-dimension standard deviation of the feature code F_x(x) and the label code F_e(y) over the
validation rows: a collapsed code is (almost) the same vector for every row, so the decoder can only predict
the label priors. The table goes to BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import time
import warnings

from common import REFERENCE_KERNELS, replace_block

VARIANTS = [("l2, λ_align = 1 (TEA default)", {}), ("l2, λ_align = 0.1", {"lambda_align": 0.1}),
            ("l2, λ_align = 0.01", {"lambda_align": 0.01}), ("no alignment (λ_align = 0)", {"lambda_align": 0.0}),
            ("cca: l2 + orthogonality (C2AE's)", {"alignment": "cca"})]


def diagnose(dataset: str, params: dict, seed: int = 0) -> dict:
    import torch

    from mlkd import MultiLabelClassifier
    from mlkd.data import load_dataset, validation_split
    from mlkd.metrics import evaluate

    data = load_dataset(dataset)
    tr, va = validation_split(data.train.Y, fraction=1 / 6, seed=0)
    X, Y = data.train.X, data.train.Y
    t0 = time.perf_counter()
    clf = MultiLabelClassifier("tea", random_state=seed, **REFERENCE_KERNELS, **params).fit(X[tr], Y[tr], X[va], Y[va])
    fit_s = time.perf_counter() - t0
    model = clf.model_.eval()
    with torch.no_grad():
        z_x = model.feature_encoder(torch.as_tensor(clf.scaler_.transform(X[va]), dtype=torch.float32))
        z_e = model.target_encoder(torch.as_tensor(Y[va], dtype=torch.float32))
    test = evaluate(data.test.Y, clf.predict_proba(data.test.X), clf.threshold_)
    return {"best_epoch": clf.best_epoch_, "val_mAP": clf.history_[clf.best_epoch_]["val_score"],
            "test_mAP": test["mAP"], "test_ebF1": test["example_f1"], "std_zx": float(z_x.std(0).mean()),
            "std_ze": float(z_e.std(0).mean()), "fit_s": fit_s}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", default="medical,corel5k")
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    import torch

    torch.set_num_threads(1)
    lines = ["| dataset | TEA alignment | kept epoch | val mAP | test mAP | test ebF1@tuned | std F_x(x) "
             "| std F_e(y) |", "|---|---|---|---|---|---|---|---|"]
    for d in args.datasets.split(","):
        for name, params in VARIANTS:
            r = diagnose(d, params)
            print(d, name, {k: round(v, 4) for k, v in r.items()}, flush=True)
            lines.append(f"| {d} | {name} | {r['best_epoch']} | {r['val_mAP']:.3f} | {r['test_mAP']:.3f} | "
                         f"{r['test_ebF1']:.3f} | {r['std_zx']:.4f} | {r['std_ze']:.4f} |")
    cmd = f"MLKD_DATA=../shared/datasets/mulan .venv/bin/python benchmarks/tea_collapse.py --datasets {args.datasets}"
    replace_block("tea_collapse", "\n".join([
        f"Command: `{cmd}` (seed 0, PROTOCOL.md; std = mean over latent dimensions of the standard deviation "
        "of the code across validation rows).", "", *lines]))


if __name__ == "__main__":
    main()
