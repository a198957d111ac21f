"""What a fit or a prediction leaves of the process's state: the caller's random streams on every device,
the thread count the fit's own numbers are computed at, the model's train/eval modes."""

from __future__ import annotations

import pytest
import torch

from mlkd import MultiLabelClassifier
from mlkd.batched import fit_seeds
from mlkd.methods import build_method
from mlkd.trainer import TrainConfig, Trainer

from .helpers import linear_problem

X, Y = linear_problem(n=60, d=6, L=3, seed=0)
TINY = dict(hidden=8, max_epochs=2, batch_size=16)


@pytest.fixture
def accelerator_seeding(monkeypatch):
    """Every call that seeds an accelerator's generators (what ``torch.manual_seed`` makes besides the CPU's)."""
    calls = []
    for module, name in ((torch.cuda, "manual_seed_all"), (torch.cuda, "manual_seed"), (torch.mps, "manual_seed"),
                         (torch.xpu, "manual_seed_all"), (torch.mtia, "manual_seed_all")):
        monkeypatch.setattr(module, name, lambda seed, _n=f"{module.__name__}.{name}": calls.append(_n))
    return calls


def test_a_cpu_fit_reseeds_no_accelerator_generator(accelerator_seeding):
    # torch.manual_seed seeds every CUDA device (and MPS, XPU, …), and a fit's fork_rng restores only the CPU's
    # and its own device's: a CPU fit on a GPU machine reseeded the user's CUDA streams with the fit's seed (at
    # once, or when CUDA started later), so their numbers depended on having fitted before
    build_method("skdtea", 6, 3, {"hidden": 8}, seed=3)
    m = build_method("bce", 6, 3, {"hidden": 8}, seed=0)
    Trainer(TrainConfig(max_epochs=1, batch_size=16, device="cpu")).fit(m, X, Y)
    fit_seeds("bce", X, Y, seeds=[0, 1], params={"hidden": 8}, config=TrainConfig(max_epochs=1, device="cpu"))
    MultiLabelClassifier("ban", generations=2, device="cpu", **TINY).fit(X, Y)
    assert accelerator_seeding == []
