"""Pure functions: per-request timings -> latency, throughput and energy-normalised metrics."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

PERCENTILES = (50, 90, 95, 99)


@dataclass
class Percentiles:
    n: int = 0
    mean: Optional[float] = None
    p50: Optional[float] = None
    p90: Optional[float] = None
    p95: Optional[float] = None
    p99: Optional[float] = None


def percentiles(values: list[float]) -> Percentiles:
    if not values:
        return Percentiles()
    arr = np.asarray(values, dtype=float)
    p = np.percentile(arr, PERCENTILES)
    return Percentiles(len(arr), float(arr.mean()), *map(float, p))


@dataclass
class RequestTiming:
    """One request, times in seconds relative to the measured window's start."""

    index: int
    batch: int
    input_tokens: int
    requested_output_tokens: int
    output_tokens: int
    submit_s: float
    token_times_s: list[float]  # absolute within the window, one per output token
    cycle: int = 0
    per_token: bool = True  # False: token_times_s holds only the first and last token's time
    worker: Optional[int] = None  # data parallel: the rank that ran it

    @property
    def ttft_s(self) -> Optional[float]:
        return self.token_times_s[0] - self.submit_s if self.token_times_s else None

    @property
    def e2e_s(self) -> Optional[float]:
        return self.token_times_s[-1] - self.submit_s if self.token_times_s else None

    @property
    def itl_s(self) -> list[float]:
        if not self.per_token:
            return []  # first and last token only: no gaps between tokens were measured
        t = self.token_times_s
        return [b - a for a, b in zip(t, t[1:])]

    @property
    def tpot_s(self) -> Optional[float]:
        """Mean time per output token after the first (decode speed seen by this request)."""
        n = len(self.token_times_s) if self.per_token else self.output_tokens
        if n < 2 or len(self.token_times_s) < 2:
            return None
        return (self.token_times_s[-1] - self.token_times_s[0]) / (n - 1)


def latency_stats(requests: list[RequestTiming]) -> dict[str, Percentiles]:
    """TTFT, TPOT, E2E over requests; ITL pooled over every token gap of every request."""
    def present(values):
        return [v for v in values if v is not None]

    return {
        "ttft_s": percentiles(present(r.ttft_s for r in requests)),
        "itl_s": percentiles([gap for r in requests for gap in r.itl_s]),
        "tpot_s": percentiles(present(r.tpot_s for r in requests)),
        "e2e_s": percentiles(present(r.e2e_s for r in requests)),
    }


def per_unit(total: Optional[float], count: float) -> Optional[float]:
    """total / count, or None when either is missing or the count is zero."""
    if total is None or not count:
        return None
    return total / count

