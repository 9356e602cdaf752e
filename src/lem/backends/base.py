"""The Backend seam: load a model, generate a batch with per-token timestamps, report memory.

Backends know nothing of energy meters: the runner owns the measurement windows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Optional, Protocol, runtime_checkable

from lem.models.source import ModelSource
from lem.workload.requests import Request


@dataclass
class BatchRecord:
    """One generate call. Times are time.perf_counter() seconds, on the runner's clock."""

    submit_s: float
    output_tokens: list[int]  # per request, in batch order, counted from token ids
    token_times_s: list[list[float]]  # per request: when each output token reached the host
    # serving-style runs: when each request was handed to the engine (None: all at submit_s)
    request_submit_s: Optional[list[float]] = None
    # False: token_times_s holds only each request's first and last token time (no token gaps)
    per_token: bool = True
    engine_state: Optional[Any] = None  # the engine's own state over time, where it exposes it
    token_ids: Optional[list[list[int]]] = None  # per request, where the backend returns them
    worker: Optional[int] = None  # data parallel: the rank (worker process) that ran the batch


@dataclass
class PrecisionInfo:
    """What the loaded model actually holds (read off its parameters, not assumed)."""

    weight_dtype: Optional[str]
    activation_dtype: Optional[str]
    compute_dtype: Optional[str]
    quantization: Optional[str]
    param_dtypes: dict[str, float] = field(default_factory=dict)  # dtype -> share of elements


@dataclass
class GpuMemory:
    index: int  # physical index
    peak_allocated_mb: Optional[float]
    peak_reserved_mb: Optional[float]


@dataclass
class WorkerInfo:
    rank: int
    gpus: list[int]  # physical indices this worker process drives
    pid: int


@dataclass
class ParallelInfo:
    """result.parallel: which worker (rank) drove which physical GPUs and how batches were dealt;
    requests name the rank that ran them (`worker`), per-GPU energy is in windows[].gpus."""

    mode: str  # data | tensor
    size: int
    workers: list[WorkerInfo]
    dealing: str
    local_param_elements_per_worker: list[Optional[int]]  # shards under tensor parallel
    # inside model load's time and energy when not None (a one-time cost)
    random_checkpoint_write_s: Optional[float] = None


@dataclass(frozen=True)
class RunContext:
    """All a backend sees of the run beyond its own config section (`backend.*`) and what each
    call hands it (model, precision, GPUs, requests): where caches go, how requests arrive, and
    whether it is one rank of a tensor-parallel group. Built by the runner from the composed
    config (`RunContext.of`); None in a test or benchmark means the defaults below."""

    cache_dir: Optional[str] = None  # models written once (random checkpoints, config-only dirs)
    batching: Optional[Any] = None  # the batching group: strategy, arrival, rate, concurrency
    tensor_parallel: bool = False  # this process is one rank of a torch.distributed group

    @classmethod
    def of(cls, cfg) -> RunContext:
        return cls(cache_dir=str(cfg.cache_dir), batching=cfg.batching)

    @property
    def serving(self) -> bool:
        """batching=continuous: requests arrive over time instead of in offline batches."""
        return self.batching is not None and self.batching.strategy == "continuous"


NO_RUN = RunContext()


class Backend(Protocol):
    """What every backend does. Anything more is a capability below, which the runner asks for
    by type (isinstance on a runtime-checkable protocol), never by probing attribute names."""

    def load(self, source: ModelSource, precision, gpus: list[int]) -> PrecisionInfo: ...

    def generate(self, batch: list[Request], force_output_len: bool) -> BatchRecord: ...

    def model_info(self) -> dict: ...  # num_params, param_bytes, arch (config dict)

    def close(self) -> None: ...


@runtime_checkable
class ReportsEngine(Protocol):
    """Says how its engine ran (result.engine); read after load and again after the cycles."""

    def engine_info(self) -> dict: ...


@runtime_checkable
class TracksMemory(Protocol):
    """Reads its own peak GPU memory (allocator counters in lem's process)."""

    def reset_peak_memory(self) -> None: ...

    def peak_memory(self) -> list[GpuMemory]: ...


@runtime_checkable
class BuildsEngine(Protocol):
    """Compiles an engine ahead of loading; the runner measures the build in its own window."""

    def engine_build(self, source: ModelSource, precision,
                     gpus: list[int]) -> Optional[Callable[[], None]]: ...


@runtime_checkable
class RunsWorkers(Protocol):
    """Drives worker processes: a cycle's batches go to them together."""

    def generate_all(self, batches: list, force_output_len: bool, on_batch=None) -> list: ...

    def describe(self) -> ParallelInfo: ...  # result.parallel
