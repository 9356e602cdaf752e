"""The result schema: one versioned dataclass tree -> result.json, written atomically, and read
back into the same tree, checked (Result.read; the reading is lem.result.decode's).

Every field is always present; a value that could not be measured is null and `null_reasons`
says why, so results of different machines and failures stay comparable column for column.
The blocks typed `dict[str, Any]` are free-form on purpose: config is the run's whole Hydra config,
environment and engine are what each machine and backend reports (their keys differ by machine
and engine), cycles and requests are raw per-cycle and per-request records (read by key path by
the statistics, thousands of them per result). Everything lem derives from them is typed.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from lem.analysis.attribution import Attribution
from lem.analysis.metrics import Percentiles
from lem.analysis.roofline import Roofline
from lem.analysis.serving import ServingSummary
from lem.analysis.stats import CycleStats
from lem.analysis.validity import Validity
from lem.backends.base import GpuMemory, ParallelInfo, PrecisionInfo
from lem.machine.devices import ThermalGap
from lem.measure.baseline import Baseline
from lem.measure.instruments import TimeseriesInfo
from lem.measure.warmup import WarmupReport
from lem.measure.windows import Window
from lem.result.decode import Misfit, decoder

try:  # several times faster on results of thousands of token times (parity, sweep summaries)
    import orjson

    _loads = orjson.loads
except ImportError:  # pragma: no cover - orjson is a dependency; json reads the same
    _loads = json.loads

SCHEMA_VERSION = "2.0"
SCHEMA_MAJOR = SCHEMA_VERSION.split(".")[0]  # results of any 2.x are read (missing fields: defaults)
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
    job_gap: Optional[ThermalGap] = None  # the thermal gap waited before this job (measurement.job_gap_max_s)
    config_hash: Optional[str] = None
    overrides: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    environment: dict[str, Any] = field(default_factory=dict)
    precision: Optional[PrecisionInfo] = None
    summary: Summary = field(default_factory=Summary)
    statistics: dict[str, CycleStats] = field(default_factory=dict)  # across cycles: mean, std, CV, CI
    validity: Optional[Validity] = None  # valid flag, reasons, every check's verdict
    baseline: Optional[Baseline] = None  # engine-ready and device idle power
    warmup: Optional[WarmupReport] = None
    cycles: list[dict[str, Any]] = field(default_factory=list)  # per-cycle raw figures
    windows: list[Window] = field(default_factory=list)  # every measured span
    attribution: Optional[Attribution] = None  # prefill/decode energy, pooled over cycles
    roofline: Optional[Roofline] = None
    timeseries: Optional[TimeseriesInfo] = None  # the parquet file next to result.json
    memory: Memory = field(default_factory=Memory)
    requests: list[dict[str, Any]] = field(default_factory=list)  # every request of every cycle
    # batching=continuous: goodput, steady-state window and its energy, pooled over cycles
    # (per cycle, with the engine's state over time, in cycles[i]["serving"])
    serving: Optional[ServingSummary] = None
    # backend.parallel: the mode and which worker (rank) drove which physical GPUs; requests name
    # the rank that ran them (`worker`); per-GPU energy is in windows[].gpus and the summary
    parallel: Optional[ParallelInfo] = None
    # the backend's engine: workflow, version and, for a built engine (backend=tensorrt), its cache
    # key and whether it was a cache hit; the build's time and energy are windows[name=engine_build]
    engine: Optional[dict[str, Any]] = None
    null_reasons: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def read(cls, path: Path) -> Result:
        """The typed result in `path` (a result.json), every nested block its dataclass again.

        Strict about what it cannot hold: a key the schema has no field for raises ResultError
        naming the file, the key and the file's schema_version. A tolerant reader would drop it
        silently, and what a newer lem measured would vanish from whatever this one prints or
        compares; read such a file with the lem that wrote it. A missing key takes the field's
        default (results of an older 2.x lack the fields added since). A value of the wrong type
        raises ResultError naming the key, the value and the type the schema wants.
        (lem.aggregate reads thousands of results its own faster way, checked against the same
        annotations: lem.aggregate.shape.)
        """
        path = Path(path)
        try:
            data = _loads(path.read_bytes())
        except ValueError as e:
            raise ResultError(f"not JSON ({type(e).__name__}: {str(e)[:200]})", path,
                              fix="rerun the job (a result is written whole or not at all: "
                              "this file was cut short or written by something else)") from None
        return cls.from_dict(data, path)

    @classmethod
    def from_dict(cls, data: Any, path: Optional[Path] = None) -> Result:
        """The typed result of parsed result.json `data` (as Result.read; `path` names it in errors)."""
        version = data.get("schema_version", SCHEMA_VERSION) if isinstance(data, dict) else None
        if version is not None and not str(version).startswith(f"{SCHEMA_MAJOR}."):
            raise ResultError(f"schema_version is {version!r}, this lem reads {SCHEMA_MAJOR}.x results",
                              path, fix="read it with the lem that wrote it")
        try:
            return decoder(cls)(data)
        except Misfit as e:
            raise ResultError(e.what, path, version, _fix(e, version)) from None


class ResultError(ValueError):
    """A result.json that does not fit the schema. The message names the file, the key, the schema
    version and the fix; `what` alone ("summary.duration_s is a string ('fast'), expected a number")
    is for callers that name the file themselves (lem.aggregate lists it as the corrupt row's reason)."""

    def __init__(self, what: str, path: Optional[Path] = None, version: Optional[str] = None,
                 fix: str = "fix the field or rerun the job"):
        where = f"{path}: " if path is not None else ""
        schema = f" (schema_version {version})" if version is not None else ""
        super().__init__(f"{where}{what}{schema}; {fix}")
        self.what, self.path, self.version = what, path, version


def _fix(e: Misfit, version: Optional[str]) -> str:
    if e.problem is None or not e.problem.startswith("is not a field"):
        return "fix the field or rerun the job"
    if version != SCHEMA_VERSION:
        return f"this lem reads schema {SCHEMA_VERSION}: read the file with the lem that wrote it"
    return "it was edited or written by another tool: remove the key or rerun the job"


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
    """The parsed JSON as written, untyped and unchecked (Result.read gives the typed result)."""
    return json.loads(Path(path).read_text(encoding="utf-8"))
