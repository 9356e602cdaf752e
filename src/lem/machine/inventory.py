"""What this machine offers lem, read for `python -m lem.doctor`: GPUs and their sensors, CUDA,
engines, RAPL, /dev/shm, SLURM and Hydra plugins. Cheap and import-free: engines are found by
import spec and versioned by package metadata (importing vLLM or TensorRT-LLM takes seconds and
may initialise CUDA), NVML is read through lem.machine.nvml (tests replay a recorded H200).
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from typing import Optional

from lem.backends.registry import SPECS
from lem.checks import preflight
from lem.machine import nvml as nvml_seam
from lem.machine.cuda_probe import cuda_version
from lem.machine.nvml import text as nvml_text


@dataclass
class Row:
    item: str
    state: str  # ok | missing | warn | info
    detail: str


@dataclass
class GpuSensors:
    index: int
    name: str
    uuid: str
    compute_capability: tuple[int, int]
    mig: Optional[bool]  # None: the GPU has no MIG mode (or NVML does not say)
    energy_counter: bool  # nvmlDeviceGetTotalEnergyConsumption answers
    instant_power: bool  # field NVML_FI_DEV_POWER_INSTANT answers (else the 1 s average)


@dataclass
class NvmlState:
    gpus: list[GpuSensors]
    driver: Optional[str] = None
    cuda: Optional[str] = None  # the newest CUDA the driver supports
    error: Optional[str] = None


# row -> (module to find, distribution for the version), from each engine's spec
ENGINES = {row: (module, dist) for spec in SPECS.values() for row, module, dist in spec.engines}
# Hydra plugins lem can use: (kind, name, module, distribution)
PLUGINS = (("launcher", "submitit_slurm", "hydra_plugins.hydra_submitit_launcher",
            "hydra-submitit-launcher"),
           ("sweeper", "optuna", "hydra_plugins.hydra_optuna_sweeper", "hydra-optuna-sweeper"),
           ("sweeper", "lem (shuffle)", "hydra_plugins.lem_sweeper", "lem"))
SLURM_COMMANDS = ("sbatch", "sinfo", "sacct")


def read_nvml() -> NvmlState:
    try:
        with nvml_seam.session() as nvml:
            return NvmlState([_sensors(nvml, i) for i in range(nvml.nvmlDeviceGetCount())],
                             driver=_try(lambda: nvml_text(nvml.nvmlSystemGetDriverVersion())),
                             cuda=_try(lambda: cuda_version(nvml.nvmlSystemGetCudaDriverVersion())))
    except nvml_seam.NvmlUnavailable as exc:  # no driver or library: a CPU machine, a container without GPUs
        return NvmlState([], error=nvml_seam.unavailable(exc))


def _sensors(nvml, index: int) -> GpuSensors:
    from lem.measure.sampler import _instant_power_mw  # the sampler's own test: same verdict as a run

    h = nvml.nvmlDeviceGetHandleByIndex(index)
    mig = _try(lambda: nvml.nvmlDeviceGetMigMode(h)[0])
    return GpuSensors(index, nvml_text(nvml.nvmlDeviceGetName(h)), nvml_text(nvml.nvmlDeviceGetUUID(h)),
                      tuple(nvml.nvmlDeviceGetCudaComputeCapability(h)),
                      None if mig is None else bool(mig),
                      _try(lambda: nvml.nvmlDeviceGetTotalEnergyConsumption(h)) is not None,
                      _instant_power_mw(nvml, h) is not None)


def _try(read: Callable):
    try:
        return read()
    except Exception:  # NVMLError_NotSupported, or a function this NVML lacks
        return None


def gpu_rows(state: NvmlState) -> list[Row]:
    if state.error:
        return [Row("NVML", "missing", f"{state.error}; no GPU can be measured here")]
    cuda = f", supports CUDA <= {state.cuda}" if state.cuda else ""
    rows = [Row("NVIDIA driver", "ok", f"{state.driver}{cuda}; {len(state.gpus)} GPU(s)")]
    for g in state.gpus:
        mig = {None: "n/a", True: "enabled", False: "disabled"}[g.mig]
        sensors = (f"energy counter {'yes' if g.energy_counter else 'NO'}, instant power "
                   f"{'yes' if g.instant_power else 'no (1 s average)'}")
        ok = g.energy_counter and not g.mig
        rows.append(Row(f"GPU {g.index}", "ok" if ok else "warn",
                        f"{g.name} ({g.uuid}), cc {g.compute_capability[0]}.{g.compute_capability[1]}, "
                        f"MIG {mig}; {sensors}"))
    return rows


def cuda_row(timeout_s: float) -> Row:
    answer = preflight.cuda_probe(timeout_s)
    if answer.get("timeout"):
        return Row("CUDA init", "missing", f"cuInit did not return within {timeout_s:g} s (hung)")
    if not answer.get("ok"):
        return Row("CUDA init", "missing", preflight.probe_failure(answer))
    return Row("CUDA init", "ok", f"driver API {answer['driver_cuda']}, {answer['devices']} device(s)")


def engine_rows() -> list[Row]:
    rows = []
    for engine, (module, dist) in ENGINES.items():
        if importlib.util.find_spec(module) is None:
            rows.append(Row(engine, "missing", f"`{module}` not installed"))
            continue
        detail = f"{dist} {_version(dist)}"
        if module == "torch":  # which CUDA the build is for decides whether it can use a GPU
            version, cuda = preflight.torch_build()
            detail += f", built for CUDA {cuda}" if cuda else ", CPU-only build"
        rows.append(Row(engine, "ok", detail))
    return rows


def import_rows(timeout_s: float = 300.0) -> list[Row]:
    """Import each installed engine for real, each in its own child process (seconds each, and an
    engine may initialise CUDA while importing: never in doctor's own process)."""
    return [_import_row(module, timeout_s) for module, _ in ENGINES.values()
            if importlib.util.find_spec(module) is not None]


def _import_row(module: str, timeout_s: float) -> Row:
    code = f"import {module}; print(getattr({module}, '__version__', '?'))"
    t0 = time.monotonic()
    try:
        p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return Row(f"import {module}", "missing", f"did not finish within {timeout_s:g} s")
    took = f"{time.monotonic() - t0:.1f} s"
    if p.returncode == 0:
        return Row(f"import {module}", "ok", f"{p.stdout.strip()} imported in {took}")
    last = (p.stderr.strip().splitlines() or ["no error output"])[-1]
    return Row(f"import {module}", "missing", f"fails after {took}: {last[:200]}")


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "(version unknown)"


def rapl_row(powercap_root: Optional[str] = None) -> Row:
    """Readable when one window can be measured: the meter's own start/stop, no estimate."""
    from lem.measure.cpu_energy import POWERCAP_ROOT, CpuEnergyMeter

    meter = CpuEnergyMeter(powercap_root or POWERCAP_ROOT, fallback="none")
    meter.start()
    reading = meter.stop()
    if reading.method == "rapl":
        return Row("RAPL (CPU energy)", "ok", f"readable: zones {', '.join(sorted(reading.zones))}")
    why = (reading.reason or "").removeprefix("not measured: ").removeprefix("RAPL unreadable: ")
    return Row("RAPL (CPU energy)", "missing", why.split("; fallback=none")[0])


def shm_row() -> Row:
    try:
        st = preflight.statvfs(preflight.SHM_PATH)
    except OSError as exc:
        return Row("/dev/shm", "missing", f"{preflight.SHM_PATH}: {exc.strerror or exc}")
    free_mb, size_mb = st.f_frsize * st.f_bavail / 2**20, st.f_frsize * st.f_blocks / 2**20
    return Row("/dev/shm", "ok", f"{free_mb:.0f} MiB free of {size_mb:.0f} MiB")


def slurm_row() -> Row:
    found = {c: shutil.which(c) for c in SLURM_COMMANDS}
    missing = [c for c, path in found.items() if path is None]
    if len(missing) == len(found):
        return Row("SLURM client", "missing", f"none of {', '.join(SLURM_COMMANDS)} on PATH")
    if missing:
        return Row("SLURM client", "warn", f"{', '.join(missing)} not on PATH")
    return Row("SLURM client", "ok", f"{', '.join(SLURM_COMMANDS)} on PATH; {_cluster()}")


def _cluster() -> str:
    try:
        p = subprocess.run(["sinfo", "-h", "-o", "%P %a %D"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return "sinfo did not answer within 5 s"
    if p.returncode != 0:
        return f"no controller answers ({p.stderr.strip()[:120]})"
    parts = p.stdout.split()
    return f"partition {parts[0]} {parts[1]}, {parts[2]} node(s)" if len(parts) >= 3 else "no partitions"


def plugin_rows() -> list[Row]:
    rows = []
    for kind, name, module, dist in PLUGINS:
        present = _has_module(module)
        rows.append(Row(f"{kind} {name}", "ok" if present else "missing",
                        f"{dist} {_version(dist)}" if present else f"pip install {dist}"))
    return rows


def _has_module(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # the parent namespace package is absent
        return False
