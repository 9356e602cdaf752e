"""What this machine offers, read cheaply (NVML and import specs; never torch or an engine).

Validation takes a `HostInfo` so it stays a pure function that tests can feed any machine.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from typing import Optional

from lem.machine import nvml as nvml_seam
from lem.machine.nvml import text as nvml_text

# Optional libraries a configuration may need; probed by import spec, not imported. Each engine's
# spec adds its own (vllm, bitsandbytes, ...).
OPTIONAL_PACKAGES = ("datasets", "codecarbon")


def optional_packages() -> tuple[str, ...]:
    from lem.backends.registry import SPECS

    return OPTIONAL_PACKAGES + tuple(p for s in SPECS.values() for p in s.packages)


@dataclass
class GpuInfo:
    index: int  # physical index, as NVML and nvidia-smi number it
    name: str
    uuid: str
    compute_capability: tuple[int, int]
    memory_total_mb: float


@dataclass
class HostInfo:
    gpus: list[GpuInfo] = field(default_factory=list)
    nvml_error: Optional[str] = None  # why NVML could not be used, when it could not
    packages: dict[str, bool] = field(default_factory=dict)
    # the CPU's feature flags as Linux lists them (/proc/cpuinfo), e.g. "avx512f", "amx_tile";
    # empty where unknown. Engines' CPU kernels are chosen by them.
    cpu_flags: frozenset[str] = frozenset()

    @property
    def gpu_count(self) -> int:
        return len(self.gpus)


def probe_host() -> HostInfo:
    packages = {name: importlib.util.find_spec(name) is not None for name in optional_packages()}
    gpus, error = _probe_gpus()
    return HostInfo(gpus=gpus, nvml_error=error, packages=packages, cpu_flags=_cpu_flags())


def _cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> frozenset[str]:
    """The first processor's flags; empty off Linux or where it cannot be read."""
    return frozenset((cpuinfo_field("flags", cpuinfo) or "").split())


def cpuinfo_field(name: str, cpuinfo: str = "/proc/cpuinfo") -> Optional[str]:
    """The first processor's `name` line of /proc/cpuinfo ("model name", "flags"); None where
    there is none (off Linux, unreadable)."""
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith(name):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    return None


def _probe_gpus() -> tuple[list[GpuInfo], Optional[str]]:
    try:
        with nvml_seam.session() as pynvml:
            return [_gpu_info(pynvml, i) for i in range(pynvml.nvmlDeviceGetCount())], None
    except nvml_seam.NvmlUnavailable as exc:  # no driver, no library: a CPU machine
        return [], nvml_seam.unavailable(exc)


def _gpu_info(pynvml, index: int) -> GpuInfo:
    handle = pynvml.nvmlDeviceGetHandleByIndex(index)
    major, minor = pynvml.nvmlDeviceGetCudaComputeCapability(handle)
    return GpuInfo(
        index=index,
        name=nvml_text(pynvml.nvmlDeviceGetName(handle)),
        uuid=nvml_text(pynvml.nvmlDeviceGetUUID(handle)),
        compute_capability=(major, minor),
        memory_total_mb=pynvml.nvmlDeviceGetMemoryInfo(handle).total / 2**20,
    )

