"""The GPU time series, sampled by a separate process so the workload's interpreter never polls.

Per GPU and tick: instantaneous power (field 186; the ~1 s average where the field is missing,
flagged in `power_source`), memory used, utilisation, SM clock, temperature and clock-event
(throttle) reasons. Timestamps are time.time_ns(), a clock the workload's window edges share.
The energy counter is never read here: it costs ~4 ms a read and belongs to window edges.
"""

from __future__ import annotations

import multiprocessing as mp
import queue as queue_mod
import time
from typing import Optional

from lem.machine import nvml as nvml_seam
from lem.measure.sample import COLUMNS, Sample  # noqa: F401  (COLUMNS: the time series' columns)


class SamplerError(RuntimeError):
    pass


class Sampler:
    """start() spawns the sampling process; drain() collects rows so far; stop() ends it."""

    def __init__(self, gpus: list[int], period_s: float):
        self.gpus = list(gpus)
        self.period_s = period_s
        self.rows: list[Sample] = []
        self.power_fallback: dict[int, bool] = {}
        self._proc: Optional[mp.Process] = None

    def start(self, timeout_s: float = 30.0) -> None:
        ctx = mp.get_context("spawn")  # never fork a process that may hold a CUDA context
        self._queue, self._stop = ctx.Queue(), ctx.Event()
        self._proc = ctx.Process(target=_sample_loop, name="lem-sampler", daemon=True,
                                 args=(self.gpus, self.period_s, self._queue, self._stop))
        self._proc.start()
        kind, payload = self._queue.get(timeout=timeout_s)  # "ready" once NVML answered
        if kind == "error":
            self._proc.join(5)
            raise SamplerError(f"the sampler process could not read NVML: {payload}")
        self.power_fallback = payload

    def drain(self) -> list[Sample]:
        """Move every sample the process has sent so far into self.rows; returns self.rows."""
        while True:
            try:
                self.rows.extend(self._queue.get_nowait())
            except queue_mod.Empty:
                return self.rows

    def stop(self) -> list[Sample]:
        if self._proc is None:
            return self.rows
        self._stop.set()
        deadline = time.monotonic() + 10
        while self._proc.is_alive() and time.monotonic() < deadline:
            self.drain()
            self._proc.join(0.05)
        self.drain()
        if self._proc.is_alive():
            self._proc.terminate()
        self._proc = None
        return self.rows

    def wait_for_sample_after(self, t_ns: int, timeout_s: float = 2.0) -> None:
        """Block until a sample newer than t_ns arrived, so a window's edge is covered."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.drain() and self.rows[-1].t_ns >= t_ns:
                return
            time.sleep(self.period_s / 4)


def _sample_loop(gpus: list[int], period_s: float, out, stop) -> None:
    from lem.job.lifetime import die_with_parent

    die_with_parent()  # an orphaned sampler would go on polling the next run's GPUs
    try:
        nvml = nvml_seam.start()  # this process's own NVML, shut down when the loop ends
        handles = [(g, nvml.nvmlDeviceGetHandleByIndex(g)) for g in gpus]
        fallback = {g: _instant_power_mw(nvml, h) is None for g, h in handles}
    except Exception as exc:  # reported to the parent, which names the fix
        out.put(("error", nvml_seam.describe(exc)))
        return
    out.put(("ready", fallback))
    next_t = time.monotonic()
    while not stop.is_set():
        out.put([_read(nvml, g, h, fallback[g]) for g, h in handles])
        # after a stall (an overloaded host, a stopped process) resume the period from now
        # instead of firing a burst of back-to-back reads to catch up
        next_t = max(next_t + period_s, time.monotonic())
        time.sleep(max(0.0, next_t - time.monotonic()))
    nvml.nvmlShutdown()


def _read(nvml, gpu: int, handle, fallback: bool) -> Sample:
    t_ns = time.time_ns()
    power_mw = None if fallback else _instant_power_mw(nvml, handle)
    source = "instant"
    if power_mw is None:
        power_mw, source = nvml.nvmlDeviceGetPowerUsage(handle), "average_1s"
    return Sample(t_ns, gpu, power_mw / 1000.0, source,
            nvml.nvmlDeviceGetMemoryInfo(handle).used / 2**20,
            nvml.nvmlDeviceGetUtilizationRates(handle).gpu,
            nvml.nvmlDeviceGetClockInfo(handle, nvml.NVML_CLOCK_SM),
            nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU),
            int(nvml.nvmlDeviceGetCurrentClocksEventReasons(handle)))


def _instant_power_mw(nvml, handle) -> Optional[int]:
    try:
        value = nvml.nvmlDeviceGetFieldValues(handle, [nvml_seam.FIELD_POWER_INSTANT])[0]
    except Exception:
        return None
    return value.value.uiVal if value.nvmlReturn == 0 else None
