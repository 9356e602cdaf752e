"""The replayed H200 (replay_nvml) with what a doctor or pre-flight must notice, chosen by env:
LEM_FAKE_MIG=1: MIG mode on, and then no energy counter (MEASUREMENT.md rule 6; NVML answers
NotSupported); LEM_FAKE_FOREIGN_PIDS=4242,4243: other processes' compute contexts on every GPU.
Select it with LEM_NVML_MODULE=tests.fakes.doctor_nvml (plus replay_nvml's LEM_REPLAY_* vars)."""

from __future__ import annotations

import os
from types import SimpleNamespace

from tests.fakes import replay_nvml as _replay


def __getattr__(name):  # everything not overridden here answers as the replayed H200 did
    return getattr(_replay, name)


NVMLError = _replay.NVMLError
NVMLError_NotSupported = _replay.NVMLError_NotSupported
NVML_DEVICE_MIG_ENABLE = 1


def _mig() -> bool:
    return os.environ.get("LEM_FAKE_MIG") == "1"


def nvmlDeviceGetMigMode(h):
    return (1, 1) if _mig() else (0, 0)


def nvmlDeviceGetTotalEnergyConsumption(h):
    if _mig():
        raise NVMLError_NotSupported("Not Supported")
    return _replay.nvmlDeviceGetTotalEnergyConsumption(h)


def nvmlSystemGetCudaDriverVersion():
    return 13000  # what driver 580 reports: CUDA 13.0


def nvmlDeviceGetComputeRunningProcesses(h):
    pids = [int(p) for p in os.environ.get("LEM_FAKE_FOREIGN_PIDS", "").split(",") if p]
    return [SimpleNamespace(pid=p, usedGpuMemory=512 * 2**20) for p in pids]
