"""vLLM backend: offline batches through `LLMEngine`, serving-style load through `AsyncLLM`.

Offline (batching=static|sorted): each batch is added to the engine at once and stepped until it
finishes. Serving (batching=continuous): requests arrive on the configured schedule through the
async engine, which batches them as they come (lem.backends.vllm.serve).

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

from lem.backends.base import NO_RUN, BatchRecord, PrecisionInfo, RunContext
from lem.config.plain import plain
from lem.models.source import ModelSource
from lem.units import dtype_bytes
from lem.workload.requests import Request

log = logging.getLogger(__name__)

# precision.quantization -> vLLM's `quantization` argument. precision=int8 (bitsandbytes on
# PyTorch) is W8A8 int8 here: vLLM has no in-flight int8 for dense layers (its
# int8_per_channel_weight_only covers MoE experts only, in 0.26 and 0.32 alike), so a random-weight
# model gets a compressed-tensors W8A8 config (vllm_setup.W8A8_INT8) and vLLM's int8 GEMMs run.
VLLM_QUANTIZATION = {"fp8": "fp8", "bnb-int8": "compressed-tensors", "awq": "awq", "gptq": "gptq",
                     "compressed-tensors": "compressed-tensors"}
# what the loaded weights must hold, else vLLM fell back to 16-bit and the run would be mislabelled
EXPECTED_WEIGHT_DTYPE = {"fp8": "float8_e4m3fn", "bnb-int8": "int8"}
W8A8_INT8_NOTE = ("W8A8 int8 (compressed-tensors): int8 weights per output channel, activations "
                  "quantized to int8 per token at run time, int8 GEMMs; embeddings, lm_head and "
                  "norms in the precision's dtype")
WORKER_EXTENSION = "lem.backends.vllm.worker.LemWorkerExtension"
_QUANT_BYTES_PER_PARAM = {"fp8": 1, "bnb-int8": 1}  # when the workers cannot be asked: 1 byte


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
        # random int8 weights and a record of what was loaded (lem.backends.vllm.worker)
        "worker_extension_cls": WORKER_EXTENSION,
    }
    for key in ("kv_cache_memory_bytes", "max_model_len", "max_num_seqs", "max_num_batched_tokens",
                "block_size", "enable_chunked_prefill"):
        if c[key] is not None:
            kwargs[key] = c[key]
    if draws_weights(source, precision):  # weights drawn by vLLM from the config alone; no tokenizer
        kwargs.update(load_format="dummy", skip_tokenizer_init=True)
    kwargs.update(plain(c.engine_args) or {})
    return kwargs


def draws_weights(source: ModelSource, precision) -> bool:
    """Random-weight models, and int8 (W8A8) of the tiny model: its layers are built from its
    config with a W8A8 quantization_config and vLLM draws the weights (validation refuses int8
    for hub checkpoints, which vLLM cannot quantize to W8A8 while loading)."""
    return source.kind == "random" or precision.quantization == "bnb-int8"


def sampling_kwargs(r: Request, forced: bool, detokenize: bool) -> dict[str, Any]:
    """Greedy, as the PyTorch backend; forced lengths mask EOS until the target length."""
    return {"max_tokens": r.output_len, "min_tokens": r.output_len if forced else 0,
            "ignore_eos": forced, "temperature": 0.0, "detokenize": detokenize}


class VLLMBackend:
    def __init__(self, backend_cfg, run: Optional[RunContext] = None):
        self.cfg = backend_cfg
        self.run = run or NO_RUN
        self.serving = self.run.serving
        self.engine = None
        self.server = None  # lem.backends.vllm.serve.Server in serving mode
        self.gpus: list[int] = []
        self.source: Optional[ModelSource] = None
        self.precision = None
        self.clock_offset_s, self.clock_note = 0.0, ""
        self._ids = itertools.count()
        self.state = None  # EngineStateLog
        self.random_weights = False
        self.loaded: Optional[list[dict]] = None  # per worker: what its model held as loaded
        self.loaded_reason = "not loaded"

    # -- loading ---------------------------------------------------------------------------
    def load(self, source: ModelSource, precision, gpus: list[int]) -> PrecisionInfo:
        self._environment(gpus)
        from lem.backends.vllm.setup import check_platform
        from lem.backends.vllm.state import EngineStateLog, stat_logger_factory

        check_platform(gpus)
        self.gpus, self.source, self.precision = list(gpus), source, precision
        self.random_weights = draws_weights(source, precision)
        self.clock_offset_s, self.clock_note = monotonic_to_perf_counter()
        self.state = EngineStateLog(self.cfg.engine_state_period_s)
        kwargs = engine_kwargs(self.cfg, source, precision, gpus, self._model_dir(source))
        log.info("vLLM engine args: %s", kwargs)
        loggers = [stat_logger_factory(self.state)]
        if self.serving:
            from lem.backends.vllm.serve import Server

            self.server = Server(kwargs, loggers, self)
        else:
            from vllm.engine.arg_utils import EngineArgs
            from vllm.usage.usage_lib import UsageContext
            from vllm.v1.engine.llm_engine import LLMEngine

            # LLM_CLASS: the scheduler defaults of `vllm.LLM`, vLLM's offline API (on an
            # H100/H200 1024 sequences and 16384 tokens per step). LLMEngine's own default
            # context gets SchedulerConfig's fallbacks, 128 and 2048, which cap a batch of 256.
            self.engine = LLMEngine.from_engine_args(EngineArgs(**kwargs), stat_loggers=loggers,
                                                     usage_context=UsageContext.LLM_CLASS)
        self._read_loaded(kwargs)
        return self._precision_info()

    def _environment(self, gpus: list[int]) -> None:
        """Before vLLM is imported: where its caches go, and how its engine core starts."""
        from lem.backends.vllm.setup import engine_environment

        cache = Path(self.run.cache_dir).expanduser() if self.run.cache_dir is not None else None
        for key, value in engine_environment(cache, bool(gpus), self.cfg.in_process).items():
            if key == "VLLM_ENABLE_V1_MULTIPROCESSING":  # backend.in_process is the config's word
                os.environ[key] = value
            else:  # the user's own setting wins
                os.environ.setdefault(key, value)

    def _rpc(self, method: str) -> list:
        if self.server is not None:
            return self.server.rpc(method)
        return self.engine.collective_rpc(method)

    def _read_loaded(self, kwargs: dict) -> None:
        """Ask each worker what its model holds; a quantized precision whose weights are not of
        the expected dtype fails the run (vLLM quietly running 16-bit would be mislabelled)."""
        if kwargs.get("worker_extension_cls") != WORKER_EXTENSION:
            self.loaded_reason = (f"backend.engine_args.worker_extension_cls="
                                  f"{kwargs.get('worker_extension_cls')} replaces lem's worker extension")
        else:
            self.loaded = self._rpc("lem_loaded")
        q = self.precision.quantization
        want = EXPECTED_WEIGHT_DTYPE.get(q)
        if want and self.loaded is not None:
            held = self.loaded[0]["held"]["elements"]
            if not held.get(want):
                raise RuntimeError(f"precision={self.precision.name}: vLLM {vllm_version()} loaded "
                                   f"no {want} weights (held: {held}); it did not apply "
                                   f"quantization={VLLM_QUANTIZATION[q]}, so this run would not "
                                   f"measure {self.precision.name}")

    def _model_dir(self, source: ModelSource) -> str:
        """A checkpoint directory; models whose weights vLLM draws get one holding only their
        config (with the W8A8 quantization_config for int8)."""
        if not self.random_weights:
            return source.path
        from lem.backends.vllm.setup import W8A8_INT8, config_only_dir

        quant = W8A8_INT8 if self.precision.quantization == "bnb-int8" else None
        return config_only_dir(source, self.run.cache_dir, quant)

    def _precision_info(self) -> PrecisionInfo:
        p = self.precision
        weight = EXPECTED_WEIGHT_DTYPE.get(p.quantization) or p.quantization or p.dtype
        activation = "int8 (dynamic, per token) into int8 GEMMs" if p.quantization == "bnb-int8" else p.dtype
        quant = VLLM_QUANTIZATION.get(p.quantization)
        if p.quantization == "bnb-int8":
            quant = W8A8_INT8_NOTE
        return PrecisionInfo(weight_dtype=weight, activation_dtype=activation, compute_dtype=p.dtype,
                             quantization=quant, param_dtypes=self._param_dtypes())

    def _param_dtypes(self) -> dict[str, float]:
        """Share of parameter elements per dtype, as the first worker's model holds them."""
        if not self.loaded:
            return {}
        held = self.loaded[0]["held"]["elements"]
        total = sum(held.values()) or 1
        return {k: v / total for k, v in held.items()}

    def engine_info(self) -> dict[str, Any]:
        """For result.engine: the vLLM that ran, how its engine core was started, which sampler,
        what precision=... mapped to, and what each worker's model held."""
        from lem.backends.vllm.setup import sampler_note

        env = os.environ
        core = ("in lem's process (backend.in_process=true)" if self.cfg.in_process else
                f"a child process (VLLM_WORKER_MULTIPROC_METHOD="
                f"{env.get('VLLM_WORKER_MULTIPROC_METHOD', 'fork (vLLM default)')})")
        info = {"backend": "vllm", "vllm_version": vllm_version(), "engine_core": core,
                "tensor_parallel_size": max(1, len(self.gpus)), "sampler": sampler_note(),
                "quantization": self._precision_info().quantization, "loaded": self.loaded}
        if self.loaded is None:
            info["loaded_reason"] = self.loaded_reason
        info.update(self._scheduler_limits())
        return info

    def _scheduler_limits(self) -> dict[str, Any]:
        """The limits vLLM's scheduler ran under, read off the engine's own config: a batch
        larger than max_num_seqs never runs whole (lem.analysis flags it)."""
        engine = self.server.engine if self.server is not None else getattr(self, "engine", None)
        sched = getattr(getattr(engine, "vllm_config", None), "scheduler_config", None)
        if sched is None:
            return {}
        return {"usage_context": "OPENAI_API_SERVER" if self.server is not None else "LLM_CLASS",
                "max_num_batched_tokens": sched.max_num_batched_tokens,
                "max_seqs_per_step": sched.max_num_seqs}

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
        """Parameters counted on the meta device from the architecture; bytes as the workers'
        models hold them (every tensor-parallel shard), or, where the workers cannot be asked,
        assumed: dtype size, 1 byte for int8/fp8, a pre-quantized checkpoint's files."""
        from lem.backends.vllm.setup import count_params

        arch, num_params = count_params(self.source)
        q = self.precision.quantization
        if self.loaded:  # read off the workers' models: every shard's bytes
            param_bytes = sum(w["held"]["bytes"] for w in self.loaded)
        elif q in _QUANT_BYTES_PER_PARAM:
            param_bytes = num_params * _QUANT_BYTES_PER_PARAM[q]
        elif q:
            param_bytes = sum(f.stat().st_size for f in Path(self.source.path).glob("*.safetensors"))
        else:
            param_bytes = num_params * dtype_bytes(self.precision.dtype)
        return {"num_params": num_params, "param_bytes": param_bytes, "arch": arch}

    # -- memory and teardown ---------------------------------------------------------------
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


def vllm_version() -> Optional[str]:
    from lem.backends.vllm.setup import vllm_version as version

    return version()
