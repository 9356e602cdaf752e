"""Record a raw NVML trace on a real GPU, for replay tests of meters and samplers on CPU machines.

Phases: idle (no CUDA context) -> context created, idle -> bf16 matmul burst -> idle with the
context alive. Every ~10 ms: instantaneous power field (186), average power field (185) and
nvmlDeviceGetPowerUsage, SM clock, temperature, utilisation, memory used, clock-event reasons;
every ~100 ms: the energy counter. One CSV row per read, timestamps from time.time_ns().

    python benchmarks/record_nvml_trace.py OUT.csv [--gpu 0]
"""

import argparse
import csv
import threading
import time

import pynvml

FIELD_POWER_AVG, FIELD_POWER_INSTANT = 185, 186
PHASES_S = {"idle_no_context": 3.0, "idle_context": 3.0, "burst": 5.0, "after_burst": 5.0}


def fast_row(h):
    fv = pynvml.nvmlDeviceGetFieldValues(h, [FIELD_POWER_AVG, FIELD_POWER_INSTANT])
    util = pynvml.nvmlDeviceGetUtilizationRates(h)
    return {"power_avg_field_mw": fv[0].value.uiVal if fv[0].nvmlReturn == 0 else None,
            "power_instant_mw": fv[1].value.uiVal if fv[1].nvmlReturn == 0 else None,
            "power_usage_mw": pynvml.nvmlDeviceGetPowerUsage(h),
            "sm_clock_mhz": pynvml.nvmlDeviceGetClockInfo(h, pynvml.NVML_CLOCK_SM),
            "temperature_c": pynvml.nvmlDeviceGetTemperature(h, pynvml.NVML_TEMPERATURE_GPU),
            "gpu_util_pct": util.gpu, "memory_used_mb": pynvml.nvmlDeviceGetMemoryInfo(h).used / 2**20,
            "clock_event_reasons": pynvml.nvmlDeviceGetCurrentClocksEventReasons(h)}


def sample(h, phase, rows, stop):
    last_counter = 0.0
    while not stop.is_set():
        row = {"t_ns": time.time_ns(), "phase": phase[0], **fast_row(h), "energy_mj": None}
        if time.monotonic() - last_counter >= 0.1:
            row["energy_mj"] = pynvml.nvmlDeviceGetTotalEnergyConsumption(h)
            last_counter = time.monotonic()
        rows.append(row)
        time.sleep(0.01)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--gpu", type=int, default=0)
    a = ap.parse_args()
    pynvml.nvmlInit()
    h = pynvml.nvmlDeviceGetHandleByIndex(a.gpu)
    rows, stop, phase = [], threading.Event(), ["idle_no_context"]
    t = threading.Thread(target=sample, args=(h, phase, rows, stop), daemon=True)
    t.start()
    time.sleep(PHASES_S["idle_no_context"])
    import torch  # the CUDA context starts here, not before

    x = torch.randn(8192, 8192, device=f"cuda:{a.gpu}", dtype=torch.bfloat16)
    torch.cuda.synchronize()
    phase[0] = "idle_context"
    time.sleep(PHASES_S["idle_context"])
    phase[0] = "burst"
    end = time.perf_counter() + PHASES_S["burst"]
    while time.perf_counter() < end:
        x @ x
        torch.cuda.synchronize()
    phase[0] = "after_burst"
    time.sleep(PHASES_S["after_burst"])
    stop.set()
    t.join()
    with open(a.out, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    print(f"{len(rows)} rows -> {a.out}")


if __name__ == "__main__":
    main()
