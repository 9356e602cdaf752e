"""Pre-flight: what this machine must offer the configured run, checked before anything loads.

`enforce()` runs once per run, from the runner, after validation and before the sampler starts
or a model loads; `python -m lem.doctor` shows the same checks for a configuration without
running it. Validation (lem.config.validate) already refuses GPUs that do not exist, a backend whose
engine is not installed and options an engine cannot honour; the checks here read the machine.
Each check is a PreflightCheck: lem.analysis.validity's Check (verdict pass, warn, fail or skipped)
with a fix; every fail names the check, the config key where one applies, and the fix. Nothing here
imports torch or an engine.

The system is read through seams that tests replace: NVML (LEM_NVML_MODULE), CUDA_PROBE (the
command that initialises CUDA in a child process), statvfs (the /dev/shm size) and disk_usage.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from lem.analysis.validity import Check
from lem.backends.registry import SPECS
from lem.machine.host import HostInfo

log = logging.getLogger(__name__)

SHM_PATH = "/dev/shm"
statvfs = os.statvfs  # seam: tests fake the size of /dev/shm
disk_usage = shutil.disk_usage  # seam: tests fake free disk
CUDA_PROBE = [sys.executable, "-m", "lem.machine.cuda_probe"]  # seam: tests swap in a hanging probe

# Engines that run worker processes talking through /dev/shm (their specs say so: vLLM's message
# queues and NCCL, TensorRT-LLM's MPI workers). Docker's default /dev/shm is 64 MB: they crash on it.
SHM_BACKENDS = tuple(name for name, spec in SPECS.items() if spec.worker_processes)
FOREIGN_POLICIES = ("warn", "refuse", "ignore")


@dataclass
class PreflightCheck(Check):
    """A check of the machine before the run: validity's Check (name, verdict, detail) plus the fix
    to show the user. result.json gets only a warning's line(), so `fix` adds nothing to its shape."""

    fix: str = ""

    def line(self) -> str:
        fix = f"; fix: {self.fix}" if self.fix and self.verdict in ("warn", "fail") else ""
        return f"[{self.name}] {self.detail}{fix}"


class PreflightError(RuntimeError):
    """The machine cannot run this configuration; the message lists every failed check and fix."""

    def __init__(self, failed: list[PreflightCheck]):
        self.failed = failed
        lines = "\n".join(f"  - {c.line()}" for c in failed)
        super().__init__(f"pre-flight failed ({len(failed)} check(s)); nothing was loaded:\n{lines}\n"
                         f"  (python -m lem.doctor with the same overrides shows the whole machine)")


def enforce(cfg, host: HostInfo, out_dir: Path) -> list[str]:
    """Run every check; raise PreflightError on any fail, else return the warnings (logged)."""
    checks = run_checks(cfg, host, out_dir)
    failed = [c for c in checks if c.verdict == "fail"]
    if failed:
        raise PreflightError(failed)
    warnings = [c.line() for c in checks if c.verdict == "warn"]
    for w in warnings:
        log.warning("pre-flight: %s", w)
    return warnings


def run_checks(cfg, host: HostInfo, out_dir: Path) -> list[PreflightCheck]:
    """The checks for `cfg` (its `gpus` already resolved to a list) on this machine."""
    gpus, backend, p = list(cfg.gpus), cfg.backend.name, cfg.preflight
    spec = SPECS.get(backend)
    engine_checks = spec.preflight(cfg, host) if spec is not None and spec.preflight else []
    return [
        check_torch_cuda(gpus),
        check_cuda(gpus, p.cuda_init_timeout_s),
        check_foreign_processes(gpus, p.foreign_processes),
        check_shm(backend, p.min_shm_mb, cfg.backend.get("parallel")),
        *engine_checks,  # the engine's own (its spec's preflight)
        check_container(backend),
        check_disk(out_dir, p.min_free_disk_mb),
        check_rapl(cfg.energy.cpu),
    ]


def check_rapl(cpu: str) -> PreflightCheck:
    """energy.cpu=rapl promises CPU energy from RAPL: a machine that cannot read it fails here
    instead of ending `ok` with CPU energy null."""
    if cpu != "rapl":
        return PreflightCheck("rapl", "skipped", f"energy.cpu={cpu}")
    from lem.machine.inventory import rapl_row  # inventory builds on this module

    row = rapl_row()
    if row.state == "ok":
        return PreflightCheck("rapl", "pass", f"energy.cpu=rapl: {row.detail}")
    return PreflightCheck("rapl", "fail", f"energy.cpu=rapl but RAPL is unreadable: {row.detail}",
                          "energy.cpu=auto measures RAPL where readable, else labels an estimate; "
                          "energy.cpu=none measures no CPU energy")


def check_torch_cuda(gpus: list[int]) -> PreflightCheck:
    """A CPU-only torch cannot use the GPUs whatever the driver says; read its build without
    importing it (torch/version.py holds `cuda = '12.8'`, or None for a CPU build)."""
    if not gpus:
        return PreflightCheck("torch_cuda", "skipped", "gpus=[]: a CPU run")
    version, cuda = torch_build()
    if version is None:
        return PreflightCheck("torch_cuda", "skipped", "torch is not installed")
    if cuda is None:
        return PreflightCheck("torch_cuda", "fail", f"gpus={gpus} but torch {version} is a CPU-only build",
                              "install a CUDA build of torch (pip install torch without `-c constraints.txt`, "
                              "or from https://download.pytorch.org/whl/cu128), use a container, "
                              "or set gpus=[]")
    return PreflightCheck("torch_cuda", "pass", f"torch {version} built for CUDA {cuda}")


def torch_build() -> tuple[Optional[str], Optional[str]]:
    """(torch version, CUDA version it was built for) from torch/version.py; (None, None) if absent."""
    spec = importlib.util.find_spec("torch")
    if spec is None or not spec.origin:
        return None, None
    return parse_torch_version(Path(spec.origin).parent / "version.py")


def parse_torch_version(path: Path) -> tuple[Optional[str], Optional[str]]:
    try:
        text = path.read_text()
    except OSError:
        return None, None
    version = re.search(r"^__version__\s*=\s*['\"]([^'\"]+)", text, re.M)
    cuda = re.search(r"^cuda\s*(?::[^=]+)?=\s*['\"]([^'\"]+)", text, re.M)
    return (version.group(1) if version else "unknown"), (cuda.group(1) if cuda else None)


def check_cuda(gpus: list[int], timeout_s: float) -> PreflightCheck:
    """Initialise the CUDA driver in a child process that sees exactly `gpus`, with a timeout."""
    if not gpus:
        return PreflightCheck("cuda", "skipped", "gpus=[]: a CPU run")
    env = {**os.environ, "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
           "CUDA_VISIBLE_DEVICES": ",".join(str(g) for g in gpus)}
    answer = cuda_probe(timeout_s, env)
    if answer.get("timeout"):
        return PreflightCheck("cuda", "fail", f"CUDA initialisation did not finish within {timeout_s:g} s "
                              "(hung)",
                              "check that `nvidia-smi` answers; in a container, start it with GPU access "
                              "(NVIDIA Container Toolkit; compose GPU reservation or docker run --gpus all); "
                              "if init is only slow, raise preflight.cuda_init_timeout_s")
    if not answer.get("ok"):
        return PreflightCheck("cuda", "fail", f"gpus={gpus} but CUDA is not usable: {probe_failure(answer)}",
                              "install the NVIDIA driver, or in a container start it with GPU access (NVIDIA "
                              "Container Toolkit; compose GPU reservation or docker run --gpus all); "
                              "or set gpus=[] for a CPU run")
    if answer["devices"] < len(gpus):
        return PreflightCheck("cuda", "fail", f"gpus={gpus} but CUDA sees {answer['devices']} of them "
                              f"(CUDA_VISIBLE_DEVICES={answer.get('visible')!r})",
                              "use indices from `nvidia-smi -L`; in a container, reserve those GPUs for it")
    return PreflightCheck("cuda", "pass", f"CUDA driver {answer['driver_cuda']} initialises {len(gpus)} GPU(s)")


def cuda_probe(timeout_s: float, env: Optional[dict] = None) -> dict:
    """The probe's JSON answer, or {"timeout": True}; {"ok": False, ...} if it crashed."""
    try:
        p = subprocess.run(CUDA_PROBE, env=env, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return {"ok": False, "timeout": True}
    try:
        return json.loads(p.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        return {"ok": False, "stage": "crash", "error": f"exit {p.returncode}: {p.stderr.strip()[-300:]}"}


def probe_failure(answer: dict) -> str:
    stage, error = answer.get("stage"), answer.get("error")
    if stage == "load":
        return f"no NVIDIA driver library here ({error})"
    if stage == "init":
        return f"cuInit failed with {error}"
    return f"the CUDA probe crashed ({error})"


def check_foreign_processes(gpus: list[int], policy: str) -> PreflightCheck:
    """Other processes on the run's GPUs add their power to the measurement (validity fails)."""
    if policy not in FOREIGN_POLICIES:
        return PreflightCheck("foreign_processes", "fail", f"preflight.foreign_processes={policy} is unknown",
                              f"choose one of {FOREIGN_POLICIES}")
    if not gpus or policy == "ignore":
        return PreflightCheck("foreign_processes", "skipped",
                              "gpus=[]: a CPU run" if not gpus else "preflight.foreign_processes=ignore")
    from lem.machine.devices import foreign_gpu_processes

    found = foreign_gpu_processes(gpus)
    if found is None:
        return PreflightCheck("foreign_processes", "skipped", "NVML cannot list the GPUs' processes")
    others = {g: pids for g, pids in found.items() if pids}
    if not others:
        return PreflightCheck("foreign_processes", "pass", f"no other compute processes on GPU(s) {gpus}")
    verdict = "fail" if policy == "refuse" else "warn"
    return PreflightCheck("foreign_processes", verdict,
                          f"other compute processes on the run's GPUs (GPU: PIDs) {others}; their power "
                          f"lands in the measurement and the result will not be valid",
                          "stop them or choose idle GPUs (nvidia-smi shows them); preflight.foreign_processes="
                          "refuse makes this an error, =ignore silences it")


def check_shm(backend: str, min_shm_mb: float, parallel: Optional[str] = None) -> PreflightCheck:
    """Worker processes exchange tensors through /dev/shm: the multi-process engines, and the
    PyTorch backend's worker per GPU (backend.parallel=data|tensor; NCCL/gloo use it too)."""
    if backend not in SHM_BACKENDS and not parallel:
        return PreflightCheck("shm", "skipped", f"backend={backend} runs in one process")
    who = f"backend={backend}" + (f" with backend.parallel={parallel}" if parallel else "")
    try:
        st = statvfs(SHM_PATH)
    except OSError as exc:
        return PreflightCheck("shm", "fail", f"{SHM_PATH} is not usable ({exc.strerror or exc})",
                              "mount a tmpfs on /dev/shm; in Docker: --ipc=host or --shm-size=8g")
    free_mb = st.f_frsize * st.f_bavail / 2**20
    size_mb = st.f_frsize * st.f_blocks / 2**20
    detail = f"{SHM_PATH}: {free_mb:.0f} MiB free of {size_mb:.0f} MiB"
    if free_mb < min_shm_mb:
        return PreflightCheck("shm", "fail", f"{detail}; {who} needs >= {min_shm_mb:.0f} MiB "
                              f"(preflight.min_shm_mb): its worker processes exchange data through it",
                              "in Docker run with --ipc=host or --shm-size=8g (compose: ipc: host or "
                              "shm_size); on a host, remount it larger: sudo mount -o remount,size=8G /dev/shm")
    return PreflightCheck("shm", "pass", detail)


def check_container(backend: str) -> PreflightCheck:
    """lem's images say which engine they carry (ENV LEM_CONTAINER); a run of another backend in
    one is routed to the wrong container (its engine is missing, or not the one pinned for it)."""
    image = os.environ.get("LEM_CONTAINER")
    if not image:
        return PreflightCheck("container", "skipped", "not in one of lem's containers")
    if image == backend:
        return PreflightCheck("container", "pass", f"backend={backend} in the lem-{image} container")
    return PreflightCheck("container", "warn", f"backend={backend} in the lem-{image} container, which is "
                          f"built for backend={image}",
                          f"run it in its own container: docker compose run --rm {backend} python -m lem "
                          f"backend={backend} ...")


def check_disk(out_dir: Path, min_free_mb: float) -> PreflightCheck:
    where = existing_ancestor(Path(out_dir))
    try:
        free_mb = disk_usage(where).free / 2**20
    except OSError as exc:
        return PreflightCheck("disk", "fail", f"cannot read free space at {where}: {exc.strerror or exc}",
                              "point output_root at a writable directory")
    if free_mb < min_free_mb:
        return PreflightCheck("disk", "fail", f"{free_mb:.0f} MiB free for {out_dir}; results need >= "
                              f"{min_free_mb:.0f} MiB (preflight.min_free_disk_mb)",
                              "free space there, or set output_root=<a roomier directory> (or in the local "
                              "config group)")
    return PreflightCheck("disk", "pass", f"{free_mb / 1024:.1f} GiB free for {out_dir}")


def existing_ancestor(path: Path) -> Path:
    """The path itself or its nearest existing parent (the job dir may not exist yet)."""
    path = path.absolute()
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path("/")
