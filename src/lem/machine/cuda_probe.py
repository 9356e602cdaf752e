"""`python -m lem.machine.cuda_probe`: does the CUDA driver initialise here? Prints one JSON line.

Run in a child process by the pre-flight, with a timeout, because a broken container setup can
make cuInit hang for minutes, and because it must not leave CUDA state in lem's own process
(the sampler and the device-idle window come after it). Uses the driver API through ctypes:
no torch, so it answers in ~0.1 s and says whether the fault is the driver or the torch build.
"""

from __future__ import annotations

import ctypes
import json
import os


def probe() -> dict:
    try:
        cuda = ctypes.CDLL("libcuda.so.1")
    except OSError as exc:
        return {"ok": False, "stage": "load", "error": str(exc)}
    rc = cuda.cuInit(0)
    if rc != 0:
        return {"ok": False, "stage": "init", "error": _error_name(cuda, rc), "code": rc}
    count, version = ctypes.c_int(0), ctypes.c_int(0)
    cuda.cuDeviceGetCount(ctypes.byref(count))
    cuda.cuDriverGetVersion(ctypes.byref(version))
    return {"ok": True, "devices": count.value, "driver_cuda": cuda_version(version.value),
            "visible": os.environ.get("CUDA_VISIBLE_DEVICES")}


def _error_name(cuda, rc: int) -> str:
    name = ctypes.c_char_p()
    if cuda.cuGetErrorName(rc, ctypes.byref(name)) == 0 and name.value:
        return name.value.decode()
    return f"CUresult {rc}"


def cuda_version(v: int) -> str:
    """CUDA's integer versions (cuDriverGetVersion, NVML's CUDA driver version): 12080 -> "12.8"."""
    return f"{v // 1000}.{(v % 1000) // 10}"


if __name__ == "__main__":
    print(json.dumps(probe()), flush=True)
