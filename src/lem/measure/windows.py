"""Measurement windows: named spans of time with the energy counter read at their edges.

Each window records, per GPU, the counter energy, the integral of the sampled instantaneous
power over the same span (a cross-check, and the only option where there is no counter), the
number of samples inside and their coverage of the window; and CPU/DRAM energy where readable.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from lem.measure.cpu_energy import CpuEnergyReading
from lem.measure.energy import EnergyMeter


@dataclass
class GpuWindow:
    index: int
    energy_j: Optional[float]  # hardware counter difference (headline)
    power_integral_j: Optional[float]  # trapezoid over instantaneous power samples
    mean_power_w: Optional[float]  # energy_j / duration (counter)
    samples: int
    coverage: Optional[float]  # share of the window spanned by samples (edges interpolated)
    temperature_max_c: Optional[float] = None
    clock_event_reasons: int = 0  # OR of every reason bit seen inside the window


@dataclass
class Window:
    name: str
    start_ns: int
    end_ns: int
    duration_s: float
    gpus: list[GpuWindow] = field(default_factory=list)
    energy_j: Optional[float] = None  # all GPUs, counter
    reason: Optional[str] = None  # why energy_j is null
    cpu: Optional[CpuEnergyReading] = None  # where a CPU meter ran


def integrate_power_j(t_ns: np.ndarray, power_w: np.ndarray, start_ns: int, end_ns: int
                      ) -> tuple[Optional[float], float]:
    """Energy of [start, end] from power samples (linear between samples, edges interpolated).

    Returns (joules, coverage): coverage is the share of the window lying between the first and
    last sample. Below 90 % the integral is None (too little of the window was seen); above it,
    the uncovered edge jitter is filled at the covered part's mean power.
    """
    if len(t_ns) < 2 or end_ns <= start_ns:
        return None, 0.0
    lo, hi = max(start_ns, int(t_ns[0])), min(end_ns, int(t_ns[-1]))
    coverage = max(0.0, (hi - lo) / (end_ns - start_ns))
    if coverage < 0.9:
        return None, coverage
    inside = (t_ns > lo) & (t_ns < hi)
    t = np.concatenate(([lo], t_ns[inside], [hi])).astype(float)
    p = np.interp(t, t_ns.astype(float), power_w)
    joules = float(np.sum((p[1:] + p[:-1]) / 2 * np.diff(t)) / 1e9)
    return joules / coverage, coverage


class WindowRecorder:
    """Opens windows one after another; the same meter instance serves them all."""

    def __init__(self, meter: EnergyMeter, sampler=None, cpu_meter=None):
        self.meter, self.sampler, self.cpu_meter = meter, sampler, cpu_meter
        self.windows: list[Window] = []

    @contextmanager
    def window(self, name: str):
        if self.cpu_meter is not None:
            self.cpu_meter.start()
        self.meter.start()
        start_ns = time.time_ns()
        try:
            yield
        finally:
            end_ns = time.time_ns()
            reading = self.meter.stop()
            cpu = self.cpu_meter.stop() if self.cpu_meter is not None else None
            self.windows.append(self._close(name, start_ns, end_ns, reading, cpu))

    def _close(self, name, start_ns, end_ns, reading, cpu) -> Window:
        if self.sampler is not None:
            self.sampler.wait_for_sample_after(end_ns)
        per_gpu = {d.index: d.energy_j for d in reading.devices}
        duration_s = (end_ns - start_ns) / 1e9
        gpus = [self._gpu_window(g, e, start_ns, end_ns, duration_s) for g, e in per_gpu.items()]
        return Window(name, start_ns, end_ns, duration_s, gpus, reading.total_j, reading.reason, cpu)

    def _gpu_window(self, gpu: int, energy_j, start_ns: int, end_ns: int, duration_s: float):
        rows = [r for r in (self.sampler.rows if self.sampler else []) if r.gpu == gpu]
        t = np.array([r.t_ns for r in rows], dtype=np.int64)
        p = np.array([r.power_w for r in rows], dtype=float)
        integral, coverage = integrate_power_j(t, p, start_ns, end_ns)
        inside = [r for r in rows if start_ns <= r.t_ns <= end_ns]
        return GpuWindow(
            index=gpu, energy_j=energy_j, power_integral_j=integral,
            mean_power_w=energy_j / duration_s if energy_j is not None and duration_s else None,
            samples=len(inside), coverage=coverage if rows else None,
            temperature_max_c=max((r.temperature_c for r in inside), default=None),
            clock_event_reasons=_or_bits(r.clock_event_reasons for r in inside))

    def get(self, name: str) -> Optional[Window]:
        return next((w for w in self.windows if w.name == name), None)


def _or_bits(values) -> int:
    out = 0
    for v in values:
        out |= int(v)
    return out
