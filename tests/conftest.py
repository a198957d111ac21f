"""Shared pytest fixtures."""

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def mulan_dir() -> Path:
    """Folder holding the MULAN benchmark data sets (``<dir>/<name>/<files>``).

    ``$MLKD_DATA`` if set, else ``<repo>/../shared/datasets/mulan``; the test is skipped when neither
    holds the data.
    """
    candidates = []
    env = os.environ.get("MLKD_DATA", "").strip()
    if env:
        candidates.append(Path(env).expanduser())
    candidates.append(REPO.parent / "shared" / "datasets" / "mulan")
    for cand in candidates:
        if (cand / "emotions").is_dir():
            return cand
    pytest.skip(
        "MULAN benchmark data not found (tried "
        + ", ".join(str(c) for c in candidates)
        + "); set MLKD_DATA to the folder holding emotions/, scene/, ..."
    )


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models run fastest, and least disturbed by other processes, on one thread."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


#: tests/test_gpu.py puts this back for its own tests.
REAL_CUDA_AVAILABLE = torch.cuda.is_available


@pytest.fixture(autouse=True, scope="session")
def cpu_semantics():
    """The suite pins what a CPU run guarantees (bit-identical reruns, CPU tensors out of ``predict_logits``), so
    on a GPU machine 'auto' must mean the CPU here, as it does in CI, also in the subprocesses tests start.
    tests/test_gpu.py is the CUDA suite: this process initialises CUDA first, so hiding the GPUs from children
    through CUDA_VISIBLE_DEVICES leaves them to it."""
    if torch.cuda.is_available():
        torch.cuda.init()
        torch.cuda.device_count()  # cached from now on: the variable set below would otherwise make it 0
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch.cuda, "is_available", lambda: False)
        patch.setenv("CUDA_VISIBLE_DEVICES", "")
        yield
