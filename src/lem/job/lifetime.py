"""Child processes that end with the process that started them.

A measuring child or a sampler orphaned by a SIGKILL (OOM killer, scancel --signal=KILL) would go
on using the GPUs the next run measures, and a measuring child would hold the sweep's lock."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal


def die_with_parent() -> None:
    """SIGTERM this process when its parent dies (Linux PR_SET_PDEATHSIG; elsewhere nothing)."""
    import ctypes

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    parent = mp.parent_process()
    if parent is not None and os.getppid() != parent.pid:  # it died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)
