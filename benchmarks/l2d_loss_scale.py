"""How large each L2D loss term is against the BCE at the official weights (issue: L2D).

    MLKD_DATA=../shared/datasets/mulan .venv/bin/python benchmarks/l2d_loss_scale.py

Needs the seed-0 teachers that benchmarks/l2d.py saved under benchmarks/results/l2d_teachers/. Trains the
"+ L2D (MLD + LED)" student of each track for 2 epochs (seed 0, the l2d.py sizes and weights) and prints
the mean per-batch value of every weighted term of its loss in each epoch (as the trainer logs them): if
λ_cd·CD or λ_id·ID is many times the BCE, the student optimises the embedding geometry first.
"""

from __future__ import annotations

import argparse
import warnings

from common import REFERENCE_KERNELS, replace_block
from l2d import BATCH, EPOCHS, SIZES, VARIANTS, load, teacher_dir, track

TERMS = ("bce", "mld", "cd", "id", "total")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", default="digits-random,emotions,scene,yeast")
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    import torch

    from mlkd import MultiLabelClassifier
    from mlkd.data import validation_split

    torch.set_num_threads(1)
    lines = ["| dataset | epoch | " + " | ".join(TERMS) + " | val mAP |", "|---|---|" + "---|" * (len(TERMS) + 1)]
    for d in args.datasets.split(","):
        X, Y, _, _ = load(d, quick=False)
        tr, va = validation_split(Y, fraction=1 / 6, seed=0)
        student, _ = SIZES[track(d)]
        params = {**student, **VARIANTS["+ L2D (MLD + LED)"], "teacher_dir": str(teacher_dir(d, 0, False))}
        train = dict(EPOCHS[track(d)], batch_size=BATCH, max_epochs=2, patience=2)
        clf = MultiLabelClassifier("distill", random_state=0, **{**REFERENCE_KERNELS, **train}, **params)
        clf.fit(X[tr], Y[tr], X[va], Y[va])
        for epoch, h in enumerate(clf.history_):
            print(d, epoch, {k: round(h[k], 2) for k in TERMS if k in h}, flush=True)
            lines.append(f"| {d} | {epoch} | " + " | ".join(f"{h[k]:.1f}" if k in h else "—" for k in TERMS)
                         + f" | {h['val_score']:.3f} |")
    cmd = f"MLKD_DATA=../shared/datasets/mulan .venv/bin/python benchmarks/l2d_loss_scale.py --datasets {args.datasets}"
    replace_block("l2d_loss_scale", "\n".join([
        f"Command: `{cmd}` (seed 0, first 2 epochs of the \"+ L2D (MLD + LED)\" student; weighted terms, "
        "mean per batch: BCE summed over batch × labels, λ_logits·MLD, λ_le·λ_cd·CD, λ_le·λ_id·ID).", "", *lines]))


if __name__ == "__main__":
    main()
