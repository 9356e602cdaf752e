"""TensorRT-LLM backend on its `LLM` API, in either of its two workflows (backend.workflow):

- pytorch: `tensorrt_llm.LLM`, TensorRT-LLM's PyTorch runtime; nothing is compiled ahead.
- engine: `tensorrt_llm._tensorrt_engine.LLM`; a TensorRT engine is built from the checkpoint
  once (BuildConfig limits, QuantConfig quantization), saved under the engine cache
  (lem.backends.tensorrt.engine) and loaded from there. The runner calls `engine_build` before
  `load`: on a cache miss the build runs in its own measured window (`engine_build`), so its time
  and energy are never mixed into model load; a hit skips it.

Every request is submitted through `generate_async(..., streaming=True)` on an event loop this
backend owns; each streamed step is stamped with time.perf_counter() when it reaches lem, so TTFT
and ITL are measured. Tokens are counted from the cumulative `outputs[0].token_ids`; two tokens
arriving in one step share that step's time. Output lengths are forced with `ignore_eos` +
`min_tokens` = `max_tokens`; decoding is greedy (`top_k=1`). With batching=continuous, requests
are submitted at their arrival times (at most max_concurrency in flight) and TensorRT-LLM batches
them in flight; its scheduler state is not sampled, so serving results carry no engine state and
no steady-state span (their reasons say so).

Random-weight models: the PyTorch workflow loads them as TensorRT-LLM's dummy weights
(`load_format="dummy"`) from a directory holding only their config; the engine workflow needs a
checkpoint to build from, so one is written once under the cache dir (lem.models.random_checkpoint),
outside any measured window and only when the engine is not cached yet.

Written against TensorRT-LLM's source and 1.x docs, and tested only against a stand-in of its API
(tests/fakes/tensorrt_llm): it has not run against the real library or on a GPU (see README).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any, Optional

from lem.backends.base import NO_RUN, BatchRecord, PrecisionInfo, RunContext
from lem.backends.scheduler import schedule
from lem.backends.tensorrt import engine as engines
from lem.config.plain import plain
from lem.models.source import ModelSource
from lem.units import dtype_bytes
from lem.workload.requests import Request

log = logging.getLogger(__name__)
_QUANT_BYTES_PER_PARAM = {"fp8": 1, "int8-weight-only": 1, "int4-weight-only": 0.5, "awq": 0.5}
NO_END_ID = -1  # random-weight models have no tokenizer to name an end token: none ever ends


def runtime_kwargs(c, precision, gpus: list[int], model_dir: str, random_weights: bool) -> dict[str, Any]:
    """LLM(...) keywords of the PyTorch workflow (model_dir: the checkpoint) or of the engine
    workflow's runtime (model_dir: the built engine), without the KV-cache config object."""
    kwargs: dict[str, Any] = {"model": model_dir, "tensor_parallel_size": max(1, len(gpus)),
                              "trust_remote_code": c.trust_remote_code}
    if random_weights:
        kwargs["skip_tokenizer_init"] = True
        if c.workflow == "pytorch":
            kwargs["load_format"] = "dummy"
    if c.workflow == "pytorch":
        kwargs["dtype"] = precision.dtype
        for key in ("max_batch_size", "max_num_tokens", "max_seq_len"):  # engine: fixed at build
            if c[key] is not None:
                kwargs[key] = c[key]
    kwargs.update(plain(c.llm_args) or {})
    return kwargs


def build_kwargs(c, precision, gpus: list[int], checkpoint: str, random_weights: bool) -> dict[str, Any]:
    """The engine workflow's build: LLM(...) keywords except the BuildConfig/QuantConfig objects."""
    kwargs: dict[str, Any] = {"model": checkpoint, "tensor_parallel_size": max(1, len(gpus)),
                              "dtype": precision.dtype, "trust_remote_code": c.trust_remote_code}
    if random_weights:
        kwargs["skip_tokenizer_init"] = True
    kwargs.update(plain(c.llm_args) or {})
    return kwargs


def build_limits(c) -> dict[str, int]:
    return {key: c[key] for key in ("max_batch_size", "max_num_tokens", "max_seq_len") if c[key] is not None}


def sampling_kwargs(r: Request, forced: bool, detokenize: bool, end_id: Optional[int]) -> dict[str, Any]:
    """Greedy, as the other backends; forced lengths ignore EOS until the target length."""
    kwargs: dict[str, Any] = {"max_tokens": r.output_len, "min_tokens": r.output_len if forced else None,
                              "ignore_eos": forced, "top_k": 1, "detokenize": detokenize}
    if end_id is not None:  # else TensorRT-LLM reads it from the tokenizer
        kwargs.update(end_id=end_id, pad_id=end_id)
    return kwargs


class TensorRTBackend:
    def __init__(self, backend_cfg, run: Optional[RunContext] = None):
        self.cfg = backend_cfg
        self.run = run or NO_RUN
        self.cache_dir = self.run.cache_dir or "."
        self.llm = None
        self.loop: Optional[asyncio.AbstractEventLoop] = None
        self.gpus: list[int] = []
        self.source: Optional[ModelSource] = None
        self.precision = None
        self.plan: Optional[engines.EnginePlan] = None
        self.cache_hit: Optional[bool] = None
        self.version: Optional[str] = None

    # -- engine build (workflow=engine) --------------------------------------------------
    def engine_build(self, source: ModelSource, precision, gpus: list[int]) -> Optional[Callable[[], None]]:
        """The build the runner measures in its own window, or None: the PyTorch workflow builds
        nothing, and a cached engine is loaded as it is."""
        if self.cfg.workflow != "engine":
            return None
        import tensorrt_llm

        self.version = tensorrt_llm.__version__
        inputs = engines.key_inputs(source, precision, self.cfg, max(1, len(gpus)), self.version,
                                    engines.gpu_arch(gpus))
        self.plan = engines.plan_engine(engines.engine_root(self.cache_dir), inputs)
        self.cache_hit = self.plan.cached
        if self.cache_hit:
            log.info("TensorRT engine %s found in the cache: no build", self.plan.key)
            return None
        checkpoint = self._checkpoint(source, precision)  # random weights: written before the window
        random_weights = source.kind == "random"

        def build() -> None:
            engines.build_engine(self.plan, lambda: self._build_llm(precision, gpus, checkpoint,
                                                                   random_weights))

        return build

    def _build_llm(self, precision, gpus: list[int], checkpoint: str, random_weights: bool):
        from tensorrt_llm._tensorrt_engine import LLM
        from tensorrt_llm.llmapi import BuildConfig, QuantAlgo, QuantConfig

        kwargs = build_kwargs(self.cfg, precision, gpus, checkpoint, random_weights)
        kwargs["build_config"] = BuildConfig(**build_limits(self.cfg))
        if precision.quantization:
            algo = getattr(QuantAlgo, engines.QUANT_ALGOS[precision.quantization])
            kwargs["quant_config"] = QuantConfig(quant_algo=algo)
        log.info("TensorRT-LLM engine build: %s", kwargs)
        return LLM(**kwargs)

    def _checkpoint(self, source: ModelSource, precision) -> str:
        if source.path is not None:
            return source.path
        from lem.models.random_checkpoint import random_checkpoint_dir

        return str(random_checkpoint_dir(self.cache_dir, source.config, source.seed, precision.dtype))

    # -- loading ---------------------------------------------------------------------------
    def load(self, source: ModelSource, precision, gpus: list[int]) -> PrecisionInfo:
        import tensorrt_llm
        from tensorrt_llm.llmapi import KvCacheConfig

        self.version = tensorrt_llm.__version__
        self.gpus, self.source, self.precision = list(gpus), source, precision
        random_weights = source.kind == "random"
        kwargs = runtime_kwargs(self.cfg, precision, gpus, self._model_dir(source), random_weights)
        if self.cfg.workflow == "engine" and not random_weights:
            kwargs["tokenizer"] = source.path  # the checkpoint's, whatever the engine dir holds
        kwargs["kv_cache_config"] = KvCacheConfig(
            free_gpu_memory_fraction=self.cfg.free_gpu_memory_fraction,
            enable_block_reuse=self.cfg.enable_block_reuse)
        log.info("TensorRT-LLM LLM args (%s workflow): %s", self.cfg.workflow, kwargs)
        self.loop = asyncio.new_event_loop()
        self.llm = self._llm_class()(**kwargs)
        return self._precision_info()

    def _llm_class(self):
        if self.cfg.workflow == "engine":
            from tensorrt_llm._tensorrt_engine import LLM
        else:
            from tensorrt_llm import LLM
        return LLM

    def _model_dir(self, source: ModelSource) -> str:
        if self.cfg.workflow == "engine":
            if self.plan is None or not self.plan.cached:
                raise RuntimeError("backend=tensorrt backend.workflow=engine: the engine is not built; "
                                   "engine_build() runs (and is measured) before load()")
            return str(self.plan.engine_dir)
        if source.path is not None:
            return source.path
        from lem.backends.vllm.setup import config_only_dir  # config.json only: dummy weights

        return config_only_dir(source, self.cache_dir)

    def _precision_info(self) -> PrecisionInfo:
        p = self.precision
        algo = engines.QUANT_ALGOS.get(p.quantization)
        return PrecisionInfo(weight_dtype=p.quantization or p.dtype, activation_dtype=p.dtype,
                             compute_dtype=p.dtype, quantization=algo)

    def engine_info(self) -> dict[str, Any]:
        """For result.engine: which workflow ran, and where its engine came from."""
        info: dict[str, Any] = {"backend": "tensorrt", "workflow": self.cfg.workflow,
                                "tensorrt_llm_version": self.version,
                                "tensor_parallel_size": max(1, len(self.gpus))}
        if self.cfg.max_batch_size is not None:  # its scheduler's limit (TensorRT-LLM's default unread)
            info["max_seqs_per_step"] = self.cfg.max_batch_size
        if self.plan is None:
            return dict(info, engine_dir=None, reason="the PyTorch workflow builds no engine")
        marker = engines.read_marker(self.plan) or {}
        return dict(info, engine_dir=str(self.plan.engine_dir), cache_key=self.plan.key,
                    cache_hit=self.cache_hit, key_inputs=self.plan.inputs,
                    built_at=marker.get("built_at"), build_s=marker.get("build_s"))

    # -- generation ------------------------------------------------------------------------
    def sampling_params(self, r: Request, forced: bool):
        from tensorrt_llm.llmapi import SamplingParams

        random_weights = self.source.kind == "random"
        end_id = self.source.config.get("eos_token_id", NO_END_ID) if random_weights else None
        if isinstance(end_id, list):
            end_id = end_id[0]
        detok = self.cfg.detokenize and not random_weights
        return SamplingParams(**sampling_kwargs(r, forced, detok, end_id))

    def generate(self, batch: list[Request], force_output_len: bool) -> BatchRecord:
        return self.loop.run_until_complete(self._batch(batch, force_output_len))

    async def _batch(self, batch: list[Request], forced: bool) -> BatchRecord:
        """Offline: the whole batch at once. Serving (batching=continuous): each request at its
        arrival time, at most max_concurrency in flight; TensorRT-LLM batches them in flight."""
        b, serving = self.run.batching, self.run.serving
        t0, streams = await schedule(batch, b, lambda r: self._tokens(r, forced))
        return BatchRecord(t0, [len(ids) for _, (ids, _) in streams], [t for _, (_, t) in streams],
                           request_submit_s=[s for s, _ in streams] if serving else None,
                           per_token=True, token_ids=[ids for _, (ids, _) in streams])

    async def _tokens(self, r: Request, forced: bool) -> tuple[list[int], list[float]]:
        out = self.llm.generate_async({"prompt_token_ids": r.prompt_ids},
                                      sampling_params=self.sampling_params(r, forced), streaming=True)
        ids: list[int] = []
        times: list[float] = []
        async for step in out:
            now = time.perf_counter()
            new = list(step.outputs[0].token_ids[len(ids):])  # token_ids are cumulative
            ids += new
            times += [now] * len(new)
        return ids, times

    def model_info(self) -> dict[str, Any]:
        """Parameters counted on the meta device from the architecture; bytes as stored (dtype
        size, or the quantized weight size for TensorRT-LLM's quantization)."""
        from lem.backends.vllm.setup import count_params

        arch, num_params = count_params(self.source)
        per = _QUANT_BYTES_PER_PARAM.get(self.precision.quantization, dtype_bytes(self.precision.dtype))
        return {"num_params": num_params, "param_bytes": int(num_params * per), "arch": arch}

    # -- memory and teardown ---------------------------------------------------------------
    def close(self) -> None:
        if self.llm is not None:
            self.llm.shutdown()
        self.llm = None
        if self.loop is not None:
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            self.loop.close()
        self.loop = None
