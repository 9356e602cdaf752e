"""The measured timeline has one clock, time.time_ns() (samples, windows). Backends timestamp
tokens with time.perf_counter() (monotonic, finer); a `Clock` pins the two together once per cycle
and converts, so no module does the arithmetic by hand."""

from __future__ import annotations

import time
from dataclasses import dataclass


@dataclass(frozen=True)
class Clock:
    perf_s: float  # time.perf_counter() ...
    ns: int  # ... and time.time_ns() read at the same instant

    @classmethod
    def now(cls) -> Clock:
        return cls(time.perf_counter(), time.time_ns())

    def to_ns(self, t_perf_s: float) -> int:
        """A perf_counter time on the timeline's clock."""
        return self.ns + int((t_perf_s - self.perf_s) * 1e9)

    def since_s(self, t_perf_s: float) -> float:
        """Seconds from the pin to a perf_counter time (the cycle-relative times results hold)."""
        return t_perf_s - self.perf_s
