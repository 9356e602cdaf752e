"""vLLM backend: offline batches through `LLMEngine`, serving-style load through `AsyncLLM`.

Offline (batching=static|sorted): each batch is added to the engine at once and stepped until it
finishes. Serving (batching=continuous): requests arrive on the configured schedule through the
async engine, which batches them as they come (lem.backends.vllm_serve).

Output lengths are forced with `ignore_eos` + `min_tokens` = `max_tokens`; tokens are counted from
the engine's token ids. With `per_token_timestamps` every output is streamed (DELTA) and each token
is stamped with time.perf_counter() when it reaches lem; two tokens arriving in one output share
that time. Without it, the first and last token times come from vLLM's request metrics
(`first_token_ts`, `last_token_ts`: the engine core's time.monotonic()), mapped onto the runner's
perf_counter clock by `clock_offset_s` (see `monotonic_to_perf_counter`).
"""

from __future__ import annotations

import itertools
import logging
import os
import time
from pathlib import Path
from typing import Any, Optional

from lem.backends.base import BatchRecord, GpuMemory, PrecisionInfo
from lem.models.source import ModelSource
from lem.workload import Request

log = logging.getLogger(__name__)

# precision.quantization -> vLLM's `quantization` argument
VLLM_QUANTIZATION = {"fp8": "fp8", "int8-weight-only": "int8_per_channel_weight_only",
                     "awq": "awq", "gptq": "gptq", "compressed-tensors": "compressed-tensors"}
_QUANT_BYTES_PER_PARAM = {"fp8": 1, "int8-weight-only": 1}  # online quantization: weights stored in 1 byte
_DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}


def monotonic_to_perf_counter() -> tuple[float, str]:
    """Offset to add to a time.monotonic() reading to place it on time.perf_counter()'s clock.

    On Linux both read clock_gettime(CLOCK_MONOTONIC) (time.get_clock_info says so), a clock that
    every process of the machine shares, so the offset is exactly 0 and vLLM's engine-core
    timestamps, read in its own process, line up with lem's. Elsewhere the offset is measured
    (the midpoint of two perf_counter reads around one monotonic read)."""
    perf, mono = time.get_clock_info("perf_counter"), time.get_clock_info("monotonic")
    if perf.implementation == mono.implementation:
        return 0.0, f"identical clocks ({perf.implementation}): offset 0"
    a = time.perf_counter()
    m = time.monotonic()
    b = time.perf_counter()
    return (a + b) / 2 - m, (f"perf_counter={perf.implementation}, monotonic={mono.implementation}: "
                             f"offset measured once at load (+-{(b - a) / 2:.1e} s)")


def engine_kwargs(c, source: ModelSource, precision, gpus: list[int], model_dir: str) -> dict[str, Any]:
    """Everything that reaches vllm.EngineArgs, from the backend YAML and lem's own groups."""
    kwargs: dict[str, Any] = {
        "model": model_dir, "dtype": precision.dtype,
        "quantization": VLLM_QUANTIZATION.get(precision.quantization),
        "tensor_parallel_size": max(1, len(gpus)), "seed": c.seed,
        "trust_remote_code": c.trust_remote_code, "revision": source.revision,
        "gpu_memory_utilization": c.gpu_memory_utilization, "enforce_eager": c.enforce_eager,
        "kv_cache_dtype": c.kv_cache_dtype, "enable_prefix_caching": c.enable_prefix_caching,
        "disable_log_stats": False,  # request metrics and scheduler stats need it
    }
    for key in ("kv_cache_memory_bytes", "max_model_len", "max_num_seqs", "max_num_batched_tokens",
                "block_size", "enable_chunked_prefill"):
        if c[key] is not None:
            kwargs[key] = c[key]
    if source.kind == "random":  # weights drawn by vLLM from the config alone; no tokenizer
        kwargs.update(load_format="dummy", skip_tokenizer_init=True)
    kwargs.update(_plain(c.engine_args) or {})
    return kwargs


def sampling_kwargs(r: Request, forced: bool, detokenize: bool) -> dict[str, Any]:
    """Greedy, as the PyTorch backend; forced lengths mask EOS until the target length."""
    return {"max_tokens": r.output_len, "min_tokens": r.output_len if forced else 0,
            "ignore_eos": forced, "temperature": 0.0, "detokenize": detokenize}


class VLLMBackend:
    def __init__(self, backend_cfg, run_cfg):
        self.cfg = backend_cfg
        self.run_cfg = run_cfg
        self.serving = run_cfg is not None and run_cfg.batching.strategy == "continuous"
        self.engine = None
        self.server = None  # lem.backends.vllm_serve.Server in serving mode
        self.gpus: list[int] = []
        self.source: Optional[ModelSource] = None
        self.precision = None
        self.clock_offset_s, self.clock_note = 0.0, ""
        self._ids = itertools.count()
        self.state = None  # EngineStateLog
        self.random_weights = False

    # -- loading ---------------------------------------------------------------------------
    def load(self, source: ModelSource, precision, gpus: list[int]) -> PrecisionInfo:
        self._environment()
        from lem.backends.vllm_setup import check_platform
        from lem.backends.vllm_state import EngineStateLog, stat_logger_factory

        check_platform(gpus)
        self.gpus, self.source, self.precision = list(gpus), source, precision
        self.random_weights = source.kind == "random"
        self.clock_offset_s, self.clock_note = monotonic_to_perf_counter()
        self.state = EngineStateLog(self.cfg.engine_state_period_s)
        kwargs = engine_kwargs(self.cfg, source, precision, gpus, self._model_dir(source))
        log.info("vLLM engine args: %s", kwargs)
        loggers = [stat_logger_factory(self.state)]
        if self.serving:
            from lem.backends.vllm_serve import Server

            self.server = Server(kwargs, loggers, self)
        else:
            from vllm.engine.arg_utils import EngineArgs
            from vllm.v1.engine.llm_engine import LLMEngine

            self.engine = LLMEngine.from_engine_args(EngineArgs(**kwargs), stat_loggers=loggers)
        return self._precision_info()

    def _environment(self) -> None:
        """Before vLLM is imported: where its caches go, and whether its engine core is a process."""
        cache = Path(self.run_cfg.cache_dir).expanduser() if self.run_cfg is not None else None
        if cache is not None:
            os.environ.setdefault("VLLM_CACHE_ROOT", str(cache / "vllm"))
            os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(cache / "torchinductor"))
        if self.cfg.in_process:
            os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
        # no usage-report thread (network) inside a measured process, unless the user asks for it
        os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")

    def _model_dir(self, source: ModelSource) -> str:
        """A checkpoint directory; random-weight models get one holding only their config."""
        if source.path is not None:
            return source.path
        from lem.backends.vllm_setup import config_only_dir

        return config_only_dir(source, self.run_cfg.cache_dir)

    def _precision_info(self) -> PrecisionInfo:
        p = self.precision
        weight = p.quantization or p.dtype
        return PrecisionInfo(weight_dtype=weight, activation_dtype=p.dtype, compute_dtype=p.dtype,
                             quantization=VLLM_QUANTIZATION.get(p.quantization))

    # -- generation ------------------------------------------------------------------------
    def sampling_params(self, r: Request, forced: bool):
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        kind = RequestOutputKind.DELTA if self.cfg.per_token_timestamps else RequestOutputKind.FINAL_ONLY
        detok = self.cfg.detokenize and not self.random_weights
        return SamplingParams(**sampling_kwargs(r, forced, detok), output_kind=kind)

    def next_id(self) -> str:
        return f"lem-{next(self._ids)}"

    def generate(self, batch: list[Request], force_output_len: bool) -> BatchRecord:
        self.state.clear()
        if self.server is not None:
            rec = self.server.serve(batch, force_output_len)
        else:
            rec = self._offline(batch, force_output_len)
        rec.engine_state = self.state.snapshot()
        return rec

    def _offline(self, batch: list[Request], forced: bool) -> BatchRecord:
        streams = {}
        submit_s = time.perf_counter()
        for r in batch:
            rid = self.next_id()
            self.engine.add_request(rid, {"prompt_token_ids": r.prompt_ids}, self.sampling_params(r, forced))
            streams[rid] = TokenStream(self.clock_offset_s)
        while self.engine.has_unfinished_requests():
            outputs = self.engine.step()
            now = time.perf_counter()
            for out in outputs:
                streams[out.request_id].add(out, now)
        return streams_record(submit_s, list(streams.values()), self.cfg.per_token_timestamps)

    def model_info(self) -> dict[str, Any]:
        """Parameters counted on the meta device from the architecture (vLLM's weights live in
        its worker processes); bytes as stored: dtype size, 1 byte for vLLM's online int8/fp8, the
        checkpoint's files for pre-quantized checkpoints."""
        from lem.backends.vllm_setup import count_params

        arch, num_params = count_params(self.source)
        q = self.precision.quantization
        if q in _QUANT_BYTES_PER_PARAM:
            param_bytes = num_params * _QUANT_BYTES_PER_PARAM[q]
        elif q:
            param_bytes = sum(f.stat().st_size for f in Path(self.source.path).glob("*.safetensors"))
        else:
            param_bytes = num_params * _DTYPE_BYTES[self.precision.dtype]
        return {"num_params": num_params, "param_bytes": param_bytes, "arch": arch}

    # -- memory and teardown ---------------------------------------------------------------
    def reset_peak_memory(self) -> None:
        """Nothing to reset: vLLM reserves its KV cache once, at load."""

    def peak_memory(self) -> list[GpuMemory]:
        # vLLM allocates in its worker processes, where lem's torch counters cannot see; the
        # NVML memory-used series (memory.gpu_used_mb_max) is the measurement for this backend
        return [GpuMemory(phys, None, None) for phys in self.gpus]

    def close(self) -> None:
        if self.server is not None:
            self.server.close()
        elif self.engine is not None:
            self.engine.engine_core.shutdown()
        self.engine = self.server = None
        import gc

        gc.collect()


def streams_record(submit_s: float, streams: list[TokenStream], per_token: bool,
                   request_submit_s: Optional[list[float]] = None) -> BatchRecord:
    return BatchRecord(submit_s, [s.count for s in streams], [s.times(per_token) for s in streams],
                       request_submit_s=request_submit_s, per_token=per_token,
                       token_ids=[s.token_ids for s in streams])


class TokenStream:
    """One request's outputs: token ids as they arrive, each stamped on arrival, and the engine's
    own first/last token times (its metrics) for runs without per-token timestamps."""

    def __init__(self, clock_offset_s: float):
        self.offset = clock_offset_s
        self.token_ids: list[int] = []
        self.arrivals: list[float] = []
        self.first_s: Optional[float] = None
        self.last_s: Optional[float] = None

    def add(self, out, now: float) -> None:
        new = list(out.outputs[0].token_ids) if out.outputs else []
        self.token_ids += new
        self.arrivals += [now] * len(new)
        m = out.metrics
        if out.finished and m is not None and m.first_token_ts:
            self.first_s, self.last_s = m.first_token_ts + self.offset, m.last_token_ts + self.offset

    @property
    def count(self) -> int:
        return len(self.token_ids)

    def times(self, per_token: bool) -> list[float]:
        if per_token:
            return self.arrivals
        if not self.token_ids or self.first_s is None:
            return []
        return [self.first_s] if self.count == 1 else [self.first_s, self.last_s]


def _plain(value):
    from omegaconf import DictConfig, ListConfig, OmegaConf

    if isinstance(value, (DictConfig, ListConfig)):
        return OmegaConf.to_container(value, resolve=True)
    return value


BACKEND = VLLMBackend
