"""Energy meters: two verbs, start() and stop() -> EnergyReading, joules per device.

The NVML meter reads the hardware energy counter at the window's edges only (see
MEASUREMENT.md: integrating the averaged power reading is wrong on bursts, and a counter read
costs ~4 ms, so it never goes in a polling loop). No sensor -> null with the reason.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Optional, Protocol

from lem.machine.nvml import text as nvml_text


@dataclass
class DeviceEnergy:
    index: int  # physical GPU index
    uuid: Optional[str]
    energy_j: Optional[float]


@dataclass
class EnergyReading:
    method: Optional[str]  # "nvml-counter", or None when nothing was measured
    duration_s: float
    devices: list[DeviceEnergy] = field(default_factory=list)
    total_j: Optional[float] = None
    reason: Optional[str] = None  # why total_j is null
    # counter resolution: what a reader should know before trusting a short window
    resolution: Optional[str] = None


class EnergyMeter(Protocol):
    def start(self) -> None: ...

    def stop(self) -> EnergyReading: ...


class NullMeter:
    """Measures nothing and says why (energy=none, or no sensor on this machine)."""

    def __init__(self, reason: str):
        self.reason = reason
        self._t0 = 0.0

    def start(self) -> None:
        self._t0 = time.perf_counter()

    def stop(self) -> EnergyReading:
        return EnergyReading(method=None, duration_s=time.perf_counter() - self._t0,
                             reason=self.reason)


class NvmlMeter:
    """GPU energy from nvmlDeviceGetTotalEnergyConsumption (mJ since driver load), per GPU."""

    RESOLUTION = "counter updates about every 100 ms (H200); windows under ~1 s are coarse"

    def __init__(self, gpu_indices: list[int]):
        from lem.machine import nvml as nvml_seam

        # held for the meter's life, never shut down: window edges read it until the process ends
        pynvml = nvml_seam.start()
        self._nvml = pynvml
        self._indices = list(gpu_indices)
        self._handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in self._indices]
        self._uuids = [nvml_text(pynvml.nvmlDeviceGetUUID(h)) for h in self._handles]
        self._start_mj: list[Optional[int]] = []
        self._t0 = 0.0

    def start(self) -> None:
        self._start_mj = [self._read_mj(h) for h in self._handles]
        self._t0 = time.perf_counter()

    def stop(self) -> EnergyReading:
        duration_s = time.perf_counter() - self._t0
        end_mj = [self._read_mj(h) for h in self._handles]
        devices = [DeviceEnergy(i, u, _delta_j(a, b))
                   for i, u, a, b in zip(self._indices, self._uuids, self._start_mj, end_mj)]
        values = [d.energy_j for d in devices]
        if None in values:
            missing = [d.index for d in devices if d.energy_j is None]
            return EnergyReading("nvml-counter", duration_s, devices, None,
                                 f"GPU(s) {missing} have no NVML energy counter (MIG or pre-Volta)",
                                 self.RESOLUTION)
        return EnergyReading("nvml-counter", duration_s, devices, sum(values), None,
                             self.RESOLUTION)

    def _read_mj(self, handle) -> Optional[int]:
        try:
            return self._nvml.nvmlDeviceGetTotalEnergyConsumption(handle)
        except self._nvml.NVMLError:
            return None


def _delta_j(start_mj: Optional[int], end_mj: Optional[int]) -> Optional[float]:
    if start_mj is None or end_mj is None:
        return None
    return (end_mj - start_mj) / 1000.0



def make_meter(meter: str, gpus: list[int], nvml_error: Optional[str]) -> EnergyMeter:
    """The meter for `energy.meter`; a null meter with the reason when it cannot measure."""
    if meter == "none":
        return NullMeter("not measured: energy=none")
    if not gpus:
        return NullMeter("not measured: the run uses no GPU (gpus=[]); energy=nvml meters GPUs "
                         "(CPU/DRAM energy, where readable, is in summary.cpu_energy_j)")
    if nvml_error:
        return NullMeter(f"not measured: {nvml_error}")
    return NvmlMeter(gpus)
