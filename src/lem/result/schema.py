"""The result schema: one versioned dataclass tree -> result.json, written atomically.

Every field is always present; a value that could not be measured is null and `null_reasons`
says why, so results of different machines and failures stay comparable column for column.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from lem.analysis.metrics import Percentiles
from lem.backends.base import GpuMemory, PrecisionInfo

SCHEMA_VERSION = "2.0"
from lem.paths import RESULT_FILE  # noqa: E402,F401 (re-exported)


@dataclass
class ErrorInfo:
    type: str
    message: str
    traceback: str


@dataclass
class Summary:
    """Pooled over every measured cycle: sums of tokens, time and energy; latencies pooled."""

    cycles: Optional[int] = None
    num_requests: Optional[int] = None
    input_tokens: Optional[int] = None
    output_tokens: Optional[int] = None
    duration_s: Optional[float] = None  # measured windows, summed
    output_tokens_per_s: Optional[float] = None
    total_tokens_per_s: Optional[float] = None
    requests_per_s: Optional[float] = None
    ttft_s: Percentiles = field(default_factory=Percentiles)
    itl_s: Percentiles = field(default_factory=Percentiles)
    tpot_s: Percentiles = field(default_factory=Percentiles)
    e2e_s: Percentiles = field(default_factory=Percentiles)
    energy_j: Optional[float] = None  # all GPUs, counter, measured windows summed
    energy_per_gpu_j: Optional[dict[str, float]] = None  # physical index -> J
    j_per_output_token: Optional[float] = None
    j_per_request: Optional[float] = None
    output_tokens_per_j: Optional[float] = None
    # dynamic = total - engine-ready idle power x duration (the work's own energy)
    idle_power_w: Optional[float] = None
    idle_power_std_w: Optional[float] = None
    device_idle_power_w: Optional[float] = None
    dynamic_energy_j: Optional[float] = None
    dynamic_j_per_output_token: Optional[float] = None
    prefill_energy_j: Optional[float] = None
    decode_energy_j: Optional[float] = None
    cpu_energy_j: Optional[float] = None  # package + DRAM over the measured windows
    cpu_energy_method: Optional[str] = None  # rapl | estimate | None
    co2_kg: Optional[float] = None  # always an estimate (CodeCarbon), never measured
    mbu: Optional[float] = None  # decode bandwidth utilisation (see roofline)
    mfu: Optional[float] = None
    model_load_s: Optional[float] = None
    model_load_energy_j: Optional[float] = None


@dataclass
class Memory:
    gpus: list[GpuMemory] = field(default_factory=list)
    # NVML memory used per GPU: the highest time-series sample inside the measured cycles
    gpu_used_mb_max: Optional[dict[str, float]] = None
    peak_host_rss_mb: Optional[float] = None


@dataclass
class Result:
    schema_version: str = SCHEMA_VERSION
    status: str = "running"  # ok | failed | interrupted
    error: Optional[ErrorInfo] = None
    started_at: Optional[str] = None
    finished_at: Optional[str] = None
    wall_s: Optional[float] = None
    phase_s: dict[str, float] = field(default_factory=dict)  # wall time per phase of the run
    job_gap: Optional[Any] = None  # the thermal gap waited before this job (measurement.job_gap_max_s)
    config_hash: Optional[str] = None
    overrides: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    environment: dict[str, Any] = field(default_factory=dict)
    precision: Optional[PrecisionInfo] = None
    summary: Summary = field(default_factory=Summary)
    statistics: dict[str, Any] = field(default_factory=dict)  # across cycles: mean, std, CV, CI
    validity: Optional[Any] = None  # Validity: valid flag, reasons, every check's verdict
    baseline: Optional[Any] = None  # Baseline: engine-ready and device idle power
    warmup: Optional[Any] = None  # WarmupReport
    cycles: list[dict[str, Any]] = field(default_factory=list)  # per-cycle raw figures
    windows: list[Any] = field(default_factory=list)  # Window: every measured span
    attribution: Optional[Any] = None  # prefill/decode energy, pooled over cycles
    roofline: Optional[Any] = None
    timeseries: Optional[Any] = None  # TimeseriesInfo: the parquet file next to result.json
    memory: Memory = field(default_factory=Memory)
    requests: list[dict[str, Any]] = field(default_factory=list)  # every request of every cycle
    # batching=continuous: goodput, steady-state window and its energy, pooled over cycles
    # (per cycle, with the engine's state over time, in cycles[i]["serving"])
    serving: Optional[dict[str, Any]] = None
    # backend.parallel: the mode and which worker (rank) drove which physical GPUs; requests name
    # the rank that ran them (`worker`); per-GPU energy is in windows[].gpus and the summary
    parallel: Optional[dict[str, Any]] = None
    # the backend's engine: workflow, version and, for a built engine (backend=tensorrt), its cache
    # key and whether it was a cache hit; the build's time and energy are windows[name=engine_build]
    engine: Optional[dict[str, Any]] = None
    null_reasons: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _finite(value):
    """NaN/inf are not JSON: they become null (a value that could not be computed)."""
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Write via a temp file in the same directory + rename: never a half-written result."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2, allow_nan=False, default=str)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp makes 0600; results are for the group too
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def current_umask() -> int:
    """The process's umask, read without changing it where /proc says (os.umask can only set it)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_result(result: Result, job_dir: Path) -> Path:
    path = Path(job_dir) / RESULT_FILE
    write_json_atomic(path, _finite(result.to_dict()))
    return path


def load_result(path: Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text(encoding="utf-8"))
