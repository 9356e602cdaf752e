"""Idle baselines: device idle (before lem's CUDA context) and engine-ready idle (model loaded).

On an H200 these differ by ~45 W (79 W vs ~124 W, MEASUREMENT.md), and a live context never
returns to device idle, so dynamic energy subtracts the engine-ready idle, measured in the same
state as the workload, after temperature and power have settled.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from lem.measure.sample import Sample


@dataclass
class Settle:
    settled: bool
    waited_s: float
    max_wait_s: float
    rule: str


@dataclass
class Baseline:
    state: str  # what "idle" means here
    idle_power_w: Optional[float] = None  # all GPUs, counter energy / duration
    idle_power_per_gpu_w: dict[str, float] = field(default_factory=dict)
    idle_power_std_w: Optional[float] = None  # spread of the summed instantaneous samples
    duration_s: Optional[float] = None
    settle: Optional[Settle] = None
    device_idle_power_w: Optional[float] = None  # before lem created a CUDA context
    device_idle_note: Optional[str] = None
    reason: Optional[str] = None  # why idle_power_w is null


def is_steady(rows: list[Sample], now_ns: int, window_s: float, temp_range_c: float,
              power_cv: float) -> bool:
    """Steady: over the last window_s, per GPU, temperature within a band and power CV small."""
    recent = [r for r in rows if r.t_ns >= now_ns - int(window_s * 1e9)]
    gpus = {r.gpu for r in recent}
    if not recent or len(recent) < 3 * max(1, len(gpus)):
        return False
    for g in gpus:
        temps = [r.temperature_c for r in recent if r.gpu == g]
        power = np.array([r.power_w for r in recent if r.gpu == g])
        if max(temps) - min(temps) > temp_range_c or power.std() > power_cv * power.mean():
            return False
    return True


def wait_until_steady(sampler, e) -> Settle:
    """Poll the sampler's rows (bounded by energy.settle_max_s) until is_steady holds."""
    rule = (f"temperature range <= {e.settle_temp_range_c} C and power CV <= {e.settle_power_cv} "
            f"over the last {e.settle_window_s} s, per GPU")
    t0 = time.monotonic()
    time.sleep(e.settle_window_s)
    while True:
        sampler.drain()
        steady = is_steady(sampler.rows, time.time_ns(), e.settle_window_s,
                           e.settle_temp_range_c, e.settle_power_cv)
        waited = time.monotonic() - t0
        if steady or waited >= e.settle_max_s:
            return Settle(steady, waited, e.settle_max_s, rule)
        time.sleep(sampler.period_s)


def from_window(window, rows: list[Sample], state: str) -> Baseline:
    """Engine-ready idle power of a measured idle window: counter mean, sample spread."""
    if window.energy_j is None:
        return Baseline(state, duration_s=window.duration_s, reason=window.reason)
    inside = [r for r in rows if window.start_ns <= r.t_ns <= window.end_ns]
    return Baseline(
        state=state,
        idle_power_w=window.energy_j / window.duration_s,
        idle_power_per_gpu_w={str(g.index): g.mean_power_w for g in window.gpus},
        idle_power_std_w=_summed_std(inside),
        duration_s=window.duration_s)


def device_idle_w(rows: list[Sample], until_ns: int) -> Optional[float]:
    """Mean summed instantaneous power of the samples taken before lem created a context."""
    early = [r for r in rows if r.t_ns < until_ns]
    gpus = {r.gpu for r in early}
    if not early:
        return None
    return float(sum(np.mean([r.power_w for r in early if r.gpu == g]) for g in gpus))


def _summed_std(rows: list[Sample]) -> Optional[float]:
    """Std of total power across GPUs, per sampling tick (ticks grouped by order per GPU)."""
    gpus = sorted({r.gpu for r in rows})
    series = [[r.power_w for r in rows if r.gpu == g] for g in gpus]
    n = min((len(s) for s in series), default=0)
    if n < 2:
        return None
    return float(np.std(np.sum([s[:n] for s in series], axis=0), ddof=1))
