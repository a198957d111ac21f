"""Process plumbing shared by the bench's worker processes and the distributed fit's ranks."""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys

_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def exit_with_parent(parent: int | None, signum: int) -> None:
    """On Linux, have the kernel send this process ``signum`` when the process ``parent`` dies (SIGKILL
    included), so that a killed parent leaves no child working on unseen; exit at once if the parent is
    already gone (it died before the request took effect). Elsewhere, or without a parent, nothing."""
    if parent is None or not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signum)
    if os.getppid() != parent:
        os._exit(1)

