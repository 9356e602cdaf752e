"""Provenance: what ran, where, with which versions. Never records secrets or the environment
wholesale; only the named variables below."""

from __future__ import annotations

import os
import platform
import socket
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any, Optional

import lem
from lem.machine import nvml as nvml_seam
from lem.machine.nvml import text as nvml_text

_ENV_VARS = ("CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER", "SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID",
             "SLURM_ARRAY_TASK_ID", "SLURM_JOB_PARTITION", "SLURM_NODELIST", "OMP_NUM_THREADS",
             "LEM_CONTAINER")  # which of lem's images the run was in (docker/*.Dockerfile)
# each engine's spec adds its own libraries and variables
_LIBRARIES = ("torch", "transformers", "hydra-core", "omegaconf", "nvidia-ml-py")


def _recorded() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(environment variables, distributions) a result records: lem's own and every engine's."""
    from lem.backends.registry import SPECS

    env = _ENV_VARS + tuple(v for s in SPECS.values() for v in s.env_vars)
    libs = tuple(dict.fromkeys(_LIBRARIES + tuple(d for s in SPECS.values() for d in s.provenance)))
    return env, libs


def snapshot(gpus: list[int]) -> dict[str, Any]:
    env_vars, libraries = _recorded()
    return {
        "lem_version": lem.__version__,
        "git": _git(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "host": socket.gethostname(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "libraries": {name: _version(name) for name in libraries},
        "torch_cuda": _torch_cuda(),
        "gpus": _gpus(gpus),
        "env": {k: os.environ.get(k) for k in env_vars},
    }


def _version(dist: str) -> Optional[str]:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _git() -> dict[str, Any]:
    """Commit of the lem checkout this code runs from (null when installed from a wheel)."""
    here = Path(lem.__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True,
                                text=True, timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--", "."],
                               capture_output=True, text=True, timeout=5).stdout.strip() != ""
        return {"commit": commit, "dirty": dirty}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def _cpu_model() -> Optional[str]:
    from lem.machine.host import cpuinfo_field

    return cpuinfo_field("model name") or platform.processor() or None


def _torch_cuda() -> dict[str, Any]:
    torch = sys.modules.get("torch")
    if torch is None:
        return {"cuda": None, "cudnn": None, "available": None}
    available = torch.cuda.is_available()
    return {"cuda": torch.version.cuda, "available": available,
            "cudnn": torch.backends.cudnn.version() if available else None}


def _gpus(indices: list[int]) -> list[dict[str, Any]]:
    if not indices:
        return []
    try:
        with nvml_seam.session() as pynvml:
            driver = nvml_text(pynvml.nvmlSystemGetDriverVersion())
            return [dict(_gpu(pynvml, i), driver=driver) for i in indices]
    except nvml_seam.NvmlUnavailable:
        return []


def _gpu(pynvml, index: int) -> dict[str, Any]:
    h = pynvml.nvmlDeviceGetHandleByIndex(index)
    return {
        "index": index,
        "name": nvml_text(pynvml.nvmlDeviceGetName(h)),
        "uuid": nvml_text(pynvml.nvmlDeviceGetUUID(h)),
        "compute_capability": list(pynvml.nvmlDeviceGetCudaComputeCapability(h)),
        "memory_total_mb": pynvml.nvmlDeviceGetMemoryInfo(h).total / 2**20,
        "power_limit_w": _try(lambda: pynvml.nvmlDeviceGetPowerManagementLimit(h) / 1000),
        "sm_clock_max_mhz": _try(lambda: pynvml.nvmlDeviceGetMaxClockInfo(h, pynvml.NVML_CLOCK_SM)),
        "persistence_mode": _try(lambda: pynvml.nvmlDeviceGetPersistenceMode(h)),
        "mig_mode": _try(lambda: pynvml.nvmlDeviceGetMigMode(h)[0]),
        "ecc_mode": _try(lambda: pynvml.nvmlDeviceGetEccMode(h)[0]),
        "pci_bus_id": _try(lambda: nvml_text(pynvml.nvmlDeviceGetPciInfo(h).busId)),
    }


def _try(read):
    try:
        return read()
    except Exception:  # a field this GPU or driver does not report
        return None

