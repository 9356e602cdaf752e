"""Pre-flight for backend=tensorrt: TensorRT-LLM really imports here, and is a release whose API
lem's adapter was written for; and the GPUs are of an architecture it supports.

Validation only sees that a `tensorrt_llm` package is installed; importing it loads its C++
bindings, TensorRT, MPI and CUDA libraries, which is where broken installs fail. The import runs in
a child process with a timeout, so a hang or crash is reported with its fix instead of taking the
run down after the instruments have started.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

from lem.checks.preflight import PreflightCheck
from lem.machine.host import HostInfo

# TensorRT-LLM's supported-hardware page (2026-11): Ampere A100 (8.0), Ada (8.9), Hopper (9.0),
# Blackwell (10.0 and later). Older architectures are not built for; others of >= 8.0 may work.
TENSORRT_MIN_CC = (8, 0)
TENSORRT_LISTED_CC = ((8, 0), (8, 9), (9, 0), (10, 0), (10, 3), (12, 0), (12, 1))

IMPORT_TIMEOUT_S = 180.0  # importing TensorRT-LLM takes tens of seconds on a cold file cache
# seam: tests point it at another interpreter environment
IMPORT_PROBE = [sys.executable, "-c",
                "import json, tensorrt_llm, tensorrt_llm.llmapi; "
                "print(json.dumps({'version': tensorrt_llm.__version__}))"]
MIN_VERSION = (1, 0)  # 1.x: tensorrt_llm.LLM is the PyTorch workflow, _tensorrt_engine.LLM the engine one
FIX = ("use lem's tensorrt container (docker compose run --rm tensorrt python -m lem ...), or "
       "reinstall: pip install 'lem[tensorrt]' (TensorRT-LLM >= 1.0, NVIDIA's wheels; see README)")


def check_tensorrt_import(backend: str, timeout_s: float = IMPORT_TIMEOUT_S) -> PreflightCheck:
    if backend != "tensorrt":
        return PreflightCheck("tensorrt_import", "skipped", "not a tensorrt run")
    try:
        p = subprocess.run(IMPORT_PROBE, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return PreflightCheck("tensorrt_import", "fail", f"importing tensorrt_llm did not finish within "
                              f"{timeout_s:g} s (hung)", FIX)
    if p.returncode != 0:
        last = (p.stderr.strip().splitlines() or [f"exit {p.returncode}"])[-1]
        return PreflightCheck("tensorrt_import", "fail", f"tensorrt_llm does not import: {last[-300:]}", FIX)
    return version_check(json.loads(p.stdout.strip().splitlines()[-1])["version"])


def version_check(version: str) -> PreflightCheck:
    found = re.match(r"(\d+)\.(\d+)", version)
    if found is None or (int(found.group(1)), int(found.group(2))) < MIN_VERSION:
        return PreflightCheck("tensorrt_import", "fail", f"TensorRT-LLM {version} predates the 1.x LLM API "
                              f"lem's backend is written for (its workflows live elsewhere)", FIX)
    return PreflightCheck("tensorrt_import", "pass", f"tensorrt_llm {version} imports")


def check_tensorrt_arch(backend: str, gpus: list[int], host: HostInfo) -> PreflightCheck:
    if backend != "tensorrt" or not gpus:
        return PreflightCheck("tensorrt_arch", "skipped", "not a tensorrt run on GPUs")
    found = {g.index: g for g in host.gpus if g.index in gpus}
    old = {i: g.compute_capability for i, g in found.items() if g.compute_capability < TENSORRT_MIN_CC}
    if old:
        return PreflightCheck("tensorrt_arch", "fail", f"GPU(s) {old} (index: compute capability) are older "
                              f"than TensorRT-LLM supports (>= {TENSORRT_MIN_CC[0]}.{TENSORRT_MIN_CC[1]}, "
                              "Ampere)",
                              "use backend=vllm or backend=pytorch on these GPUs, or GPUs of Ampere or newer")
    unlisted = {i: g.compute_capability for i, g in found.items()
                if g.compute_capability not in TENSORRT_LISTED_CC}
    if unlisted:
        return PreflightCheck("tensorrt_arch", "warn", f"GPU(s) {unlisted} are not on TensorRT-LLM's "
                              f"supported-hardware list (A100, Ada, Hopper, Blackwell); it may still work",
                              "if engine builds fail, use backend=vllm")
    ccs = sorted({g.compute_capability for g in found.values()})
    return PreflightCheck("tensorrt_arch", "pass", f"compute capability {ccs} is supported by TensorRT-LLM")
