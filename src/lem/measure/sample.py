"""One reading of one GPU by the sampler process: the measured timeline's only row type.

A NamedTuple: it pickles through the sampler's queue and writes to the time series as a row,
and every reader names its fields instead of counting positions."""

from __future__ import annotations

from typing import NamedTuple, Optional


class Sample(NamedTuple):
    t_ns: int  # time.time_ns() when read: the clock of windows (lem.measure.clock converts tokens')
    gpu: int  # physical index
    power_w: float
    power_source: str  # instant | average_1s (NVML's 1 s average where instant is not readable)
    memory_used_mb: float
    gpu_util_pct: Optional[int]
    sm_clock_mhz: Optional[int]
    temperature_c: Optional[int]
    clock_event_reasons: int  # NVML's clocks-event-reason bits


COLUMNS = Sample._fields
