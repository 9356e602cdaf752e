"""A pynvml stand-in that replays a trace recorded on a real GPU (tests/data/*.csv).

NVML cannot exist on a CPU machine; this replays what an H200 really answered, on the wall
clock: replay time = trace start + (time.time_ns() - LEM_REPLAY_T0_NS) * LEM_REPLAY_SPEED.
Every process that imports it (the sampler is a separate process) shares that mapping.
Select it with LEM_NVML_MODULE=tests.fakes.replay_nvml and LEM_REPLAY_TRACE=<csv>.
"""

from __future__ import annotations

import bisect
import csv
import os
import time
from types import SimpleNamespace

NVML_CLOCK_SM = 1
NVML_TEMPERATURE_GPU = 0
NVML_CLOCK_SM_MAX = NVML_CLOCK_SM


class NVMLError(Exception):
    pass


class NVMLError_NotSupported(NVMLError):  # noqa: N801 (pynvml's name)
    pass


_trace = None


def _load():
    global _trace
    if _trace is None:
        with open(os.environ["LEM_REPLAY_TRACE"], newline="") as f:
            rows = list(csv.DictReader(f))
        t = [int(r["t_ns"]) for r in rows]
        counter = [(int(r["t_ns"]), int(r["energy_mj"])) for r in rows if r["energy_mj"]]
        _trace = SimpleNamespace(rows=rows, t=t, counter_t=[c[0] for c in counter],
                                 counter_mj=[c[1] for c in counter])
    return _trace


def _now_trace_ns() -> int:
    tr = _load()
    t0 = int(os.environ["LEM_REPLAY_T0_NS"])
    speed = float(os.environ.get("LEM_REPLAY_SPEED", "1"))
    return tr.t[0] + int((time.time_ns() - t0) * speed)


def _row() -> dict:
    tr = _load()
    i = max(0, bisect.bisect_right(tr.t, _now_trace_ns()) - 1)
    return tr.rows[i]


def nvmlInit():
    _load()


def nvmlShutdown():
    pass


def nvmlDeviceGetCount():
    return int(os.environ.get("LEM_REPLAY_GPUS", "1"))


def nvmlDeviceGetHandleByIndex(index):
    if index >= nvmlDeviceGetCount():
        raise NVMLError(f"Invalid Argument (index {index})")
    return index


def nvmlDeviceGetName(h):
    return "NVIDIA H200 (replayed trace)"


def nvmlDeviceGetUUID(h):
    return f"GPU-replay-{h}"


def nvmlDeviceGetCudaComputeCapability(h):
    return (9, 0)


def nvmlSystemGetDriverVersion():
    return "580.159.04"


def nvmlDeviceGetMemoryInfo(h):
    used = float(_row()["memory_used_mb"]) * 2**20
    return SimpleNamespace(used=used, total=143771 * 2**20, free=143771 * 2**20 - used)


def nvmlDeviceGetUtilizationRates(h):
    return SimpleNamespace(gpu=int(_row()["gpu_util_pct"]), memory=0)


def nvmlDeviceGetClockInfo(h, clock):
    return int(_row()["sm_clock_mhz"])


def nvmlDeviceGetTemperature(h, sensor):
    return int(_row()["temperature_c"])


def nvmlDeviceGetCurrentClocksEventReasons(h):
    return int(_row()["clock_event_reasons"])


def nvmlDeviceGetPowerUsage(h):
    return int(_row()["power_usage_mw"])


def nvmlDeviceGetFieldValues(h, field_ids):
    row = _row()
    by_id = {185: row["power_avg_field_mw"], 186: row["power_instant_mw"]}
    return [SimpleNamespace(fieldId=f, nvmlReturn=0 if by_id.get(f) else 1,
                            value=SimpleNamespace(uiVal=int(by_id[f]) if by_id.get(f) else 0))
            for f in field_ids]


def nvmlDeviceGetTotalEnergyConsumption(h):
    """The counter as the card updates it: the last reading at or before now (~100 ms steps)."""
    tr = _load()
    i = max(0, bisect.bisect_right(tr.counter_t, _now_trace_ns()) - 1)
    return tr.counter_mj[i]


def nvmlDeviceGetComputeRunningProcesses(h):
    return []


def nvmlDeviceGetPowerManagementLimit(h):
    return 700000
