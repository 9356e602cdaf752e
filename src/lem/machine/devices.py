"""Device selection and cheap device-state reads: the run's `gpus` list is the single source."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Optional


@dataclass
class ThermalGap:
    """The wait for steady GPU temperatures before a job (result.job_gap)."""

    waited_s: float
    steady: bool
    temperatures_c: Optional[list[int]] = None  # the last reading, one per GPU
    rule: Optional[str] = None
    reason: Optional[str] = None  # why it could not be waited for (no NVML)


class DeviceError(RuntimeError):
    """The devices a config asks for cannot be used; the message says how to fix it."""


def pin_devices(gpus: list[int]) -> None:
    """Expose exactly `gpus` to CUDA (PCI order, as NVML numbers them) before CUDA starts.

    Torch's cuda:0..n-1 then map to the listed physical GPUs; [] hides every GPU (a CPU run).
    """
    wanted = ",".join(str(g) for g in gpus)
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        current = os.environ.get("CUDA_VISIBLE_DEVICES")
        if current != wanted:
            raise DeviceError(
                f"gpus={gpus} but CUDA already started in this process with "
                f"CUDA_VISIBLE_DEVICES={current!r}; run configurations on different GPUs in "
                f"separate processes (one `python -m lem` per GPU set)")
        return
    os.environ["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
    os.environ["CUDA_VISIBLE_DEVICES"] = wanted


def scheduler_gpus(gpus: list[int]) -> tuple[list[int], str | None]:
    """Inside a SLURM job the scheduler picks the GPUs and says so in CUDA_VISIBLE_DEVICES; lem
    then measures those (physical ids), not the indices in the config. Returns (gpus, note)."""
    allotted = os.environ.get("CUDA_VISIBLE_DEVICES")
    if not os.environ.get("SLURM_JOB_ID") or not allotted or not gpus:
        return gpus, None
    ids = allotted.split(",")
    if not all(i.strip().isdigit() for i in ids) or len(ids) != len(gpus):
        return gpus, (f"SLURM set CUDA_VISIBLE_DEVICES={allotted!r}, which does not map onto "
                      f"gpus={gpus}; measuring gpus={gpus} as configured")
    physical = [int(i) for i in ids]
    if physical == gpus:
        return gpus, None
    return physical, f"gpus={gpus} mapped to the GPUs SLURM allotted to this job: {physical}"


def check_cuda(gpus: list[int]) -> None:
    """Pre-flight after torch is imported: CUDA must work when GPUs are requested."""
    if not gpus:
        return
    import torch

    if not torch.cuda.is_available():
        raise DeviceError(f"gpus={gpus} but torch {torch.__version__} cannot use CUDA "
                          f"(CPU-only build or driver problem); install a CUDA build of torch, "
                          f"or set gpus=[] to run on the CPU")
    if torch.cuda.device_count() != len(gpus):
        raise DeviceError(f"gpus={gpus} but torch sees {torch.cuda.device_count()} GPU(s) with "
                          f"CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')!r}")


def wait_for_steady_temperature(gpus: list[int], max_s: float, range_c: float,
                                window_s: float = 2.0, period_s: float = 0.2) -> Optional[ThermalGap]:
    """Thermal gap before a job: poll until every GPU's temperature stayed within `range_c` for
    `window_s`, at most `max_s`; returns what happened (None when not asked for or no NVML)."""
    if not gpus or max_s <= 0:
        return None
    from lem.machine import nvml as nvml_seam

    try:
        nvml = nvml_seam.start()
        handles = [nvml.nvmlDeviceGetHandleByIndex(g) for g in gpus]
    except Exception as exc:  # no NVML, or a GPU it cannot see: no gap, and the reason says why
        return ThermalGap(0.0, False, reason=nvml_seam.unavailable(exc))
    try:
        return _poll_temperatures(nvml, handles, max_s, range_c, window_s, period_s)
    finally:
        nvml.nvmlShutdown()


def _poll_temperatures(nvml, handles, max_s, range_c, window_s, period_s) -> ThermalGap:
    import time

    history: list[list[int]] = []
    t0 = time.monotonic()
    need = max(2, int(window_s / period_s))
    while True:
        history.append([nvml.nvmlDeviceGetTemperature(h, nvml.NVML_TEMPERATURE_GPU) for h in handles])
        recent = history[-need:]
        steady = len(recent) == need and all(max(c) - min(c) <= range_c for c in zip(*recent))
        waited = time.monotonic() - t0
        if steady or waited >= max_s:
            return ThermalGap(waited, steady, history[-1],
                              f"range <= {range_c} C over {window_s} s, at most {max_s} s")
        time.sleep(period_s)


def foreign_gpu_processes(gpus: list[int], own_pids=()) -> Optional[dict[str, list[int]]]:
    """Compute processes on the run's GPUs that are not lem's own: this process, every process
    descended from it (vLLM's EngineCore and its workers, spawned or forked) and `own_pids`
    (backend.parallel's workers); None when NVML cannot tell."""
    if not gpus:
        return None
    from lem.machine import nvml as nvml_seam

    try:
        with nvml_seam.session() as nvml:
            procs = {str(g): [p.pid for p in nvml.nvmlDeviceGetComputeRunningProcesses(
                nvml.nvmlDeviceGetHandleByIndex(g))] for g in gpus}
    except Exception:  # no NVML, or it cannot list processes: "cannot tell", never a failure
        return None
    own = own_process_tree() | set(own_pids)
    return {g: [pid for pid in pids if pid not in own] for g, pids in procs.items()}


def own_process_tree(root: Optional[int] = None) -> set[int]:
    """`root` (default: this process) and all its descendants, from the parent links in /proc.

    A process that left the tree (double fork, `setsid -f`: re-parented to init) is not in it,
    whoever started it: its power is not lem's work. Without /proc (not Linux): `root` alone."""
    root = os.getpid() if root is None else root
    children: dict[int, list[int]] = {}
    for pid, ppid in _parent_links():
        children.setdefault(ppid, []).append(pid)
    tree, todo = {root}, [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in tree:
                tree.add(child)
                todo.append(child)
    return tree


def _parent_links():
    """(pid, parent pid) of every process /proc lists; processes that exit meanwhile are skipped."""
    try:
        entries = [e.name for e in os.scandir("/proc") if e.name.isdigit()]
    except OSError:
        return
    for name in entries:
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read().decode(errors="replace")
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses, so split after the last ")"
        yield int(name), int(stat.rsplit(")", 1)[1].split()[1])
