"""Warmup to stability: repeat a warmup batch until its latency stops changing.

Stops when the coefficient of variation of the last k latencies is under the threshold, or at
the batch or time bound; what happened is recorded either way (a run that never converged says
so rather than pretending it did).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Optional

import numpy as np


@dataclass
class WarmupReport:
    batches: int
    duration_s: float
    converged: bool
    final_cv: Optional[float]
    stop_reason: str
    rule: str
    latencies_s: list[float] = field(default_factory=list)


def cv(values: list[float]) -> Optional[float]:
    if len(values) < 2 or np.mean(values) == 0:
        return None
    return float(np.std(values, ddof=1) / np.mean(values))


def warm_up(run_batch: Callable[[], float], k: int, cv_threshold: float, max_batches: int,
            max_s: float) -> WarmupReport:
    """`run_batch` runs one warmup batch and returns its latency in seconds."""
    rule = f"CV of the last {k} batch latencies <= {cv_threshold}, at most {max_batches} " \
           f"batches or {max_s} s"
    latencies: list[float] = []
    t0 = time.monotonic()
    while True:
        latencies.append(run_batch())
        last_cv = cv(latencies[-k:]) if len(latencies) >= k else None
        elapsed = time.monotonic() - t0
        reason = _stop_reason(last_cv, cv_threshold, len(latencies), max_batches, elapsed, max_s)
        if reason:
            return WarmupReport(len(latencies), elapsed, reason == "converged", last_cv, reason,
                                rule, latencies)


def _stop_reason(last_cv, threshold, n, max_batches, elapsed, max_s) -> Optional[str]:
    if last_cv is not None and last_cv <= threshold:
        return "converged"
    if n >= max_batches:
        return "max_batches"
    if elapsed >= max_s:
        return "time_limit"
    return None
