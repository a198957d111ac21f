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
