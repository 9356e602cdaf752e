"""The one place lem imports NVML from.

`LEM_NVML_MODULE` names a stand-in module with pynvml's API; tests set it to a replayer of traces
recorded on a real GPU, because NVML cannot exist on a CPU machine. Unset, this is pynvml.
"""

from __future__ import annotations

import importlib
import os

FIELD_POWER_AVERAGE = 185  # NVML_FI_DEV_POWER_AVERAGE: a ~1 s moving average (MEASUREMENT.md)
FIELD_POWER_INSTANT = 186  # NVML_FI_DEV_POWER_INSTANT: what the time series samples


def load():
    return importlib.import_module(os.environ.get("LEM_NVML_MODULE", "pynvml"))


def text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
