"""Warmup to stability: one full-length priming batch, then short batches until latency settles.

The priming batch runs the measured workload's own lengths once, so every kernel, KV-cache size
and allocator block the cycles will touch is set up before anything is measured (on the H200 the
first 8B generate of 128 tokens took 11 s against 3.5 s later, and warmups of only 32-token
batches left the first cycle 1.5-1.8x slower). Stability is then judged on batches of
`warmup_output_len` tokens, which are cheaper: the run stops when the coefficient of variation of
the last k latencies is under the threshold, or at the batch or time bound. What happened is
recorded either way (a run that never converged says so rather than pretending it did).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Optional

import numpy as np


@dataclass
class WarmupReport:
    batches: int  # including the priming batch
    duration_s: float
    converged: bool
    final_cv: Optional[float]
    stop_reason: str
    rule: str
    prime_s: Optional[float] = None  # the full-length priming batch; not part of the CV
    latencies_s: list[float] = field(default_factory=list)  # the stability batches


def cv(values: list[float]) -> Optional[float]:
    if len(values) < 2 or np.mean(values) == 0:
        return None
    return float(np.std(values, ddof=1) / np.mean(values))


def warm_up(run_batch: Callable[[], float], k: int, cv_threshold: float, max_batches: int,
            max_s: float, prime: Optional[Callable[[], float]] = None) -> WarmupReport:
    """`run_batch` runs one stability batch and returns its latency in seconds; `prime`, if
    given, runs the full-length priming batch once first (it counts toward both bounds)."""
    rule = f"CV of the last {k} batch latencies <= {cv_threshold}, at most {max_batches} " \
           f"batches or {max_s} s" + (", after one full-length priming batch" if prime else "")
    t0 = time.monotonic()
    prime_s = prime() if prime else None
    latencies: list[float] = []
    while True:
        latencies.append(run_batch())
        last_cv = cv(latencies[-k:]) if len(latencies) >= k else None
        elapsed = time.monotonic() - t0
        n = len(latencies) + (prime is not None)
        reason = _stop_reason(last_cv, cv_threshold, n, max_batches, elapsed, max_s)
        if reason:
            return WarmupReport(n, elapsed, reason == "converged", last_cv, reason, rule, prime_s,
                                latencies)


def _stop_reason(last_cv, threshold, n, max_batches, elapsed, max_s) -> Optional[str]:
    if last_cv is not None and last_cv <= threshold:
        return "converged"
    if n >= max_batches:
        return "max_batches"
    if elapsed >= max_s:
        return "time_limit"
    return None
