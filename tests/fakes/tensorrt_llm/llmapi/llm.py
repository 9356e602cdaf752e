"""The stand-in's LLM classes and streaming outputs (see the package docstring: not TensorRT-LLM)."""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from tensorrt_llm.llmapi.sampling import SamplingParams

CALLS: list[tuple[str, dict[str, Any]]] = []  # (class name, constructor keywords), in order
BUILDS: list[dict[str, Any]] = []  # one per engine built from a checkpoint
STEP_S = 0.002  # stand-in time per decoding step

_COMMON = {"model", "tokenizer", "tokenizer_mode", "skip_tokenizer_init", "trust_remote_code",
           "tensor_parallel_size", "dtype", "revision", "tokenizer_revision", "pipeline_parallel_size",
           "kv_cache_config", "enable_chunked_prefill", "max_batch_size", "max_num_tokens",
           "max_seq_len", "max_beam_width", "return_perf_metrics", "backend"}
TORCH_FIELDS = _COMMON | {"load_format", "cuda_graph_config", "attn_backend",
                          "disable_overlap_scheduler", "print_iter_log", "enable_iter_perf_stats"}
TRT_FIELDS = _COMMON | {"build_config", "quant_config", "calib_config", "enable_build_cache",
                        "workspace", "fast_build"}


@dataclass
class CompletionOutput:
    index: int
    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    finish_reason: Optional[str] = None
    _last_token_ids_len: int = 0

    @property
    def length(self) -> int:
        return len(self.token_ids)

    @property
    def token_ids_diff(self) -> list[int]:
        return self.token_ids[self._last_token_ids_len:]


class _Tokenizer:
    def __init__(self, eos_token_id: int):
        self.eos_token_id = eos_token_id


class RequestOutput:
    """One request; `async for` yields this same object after each step (streaming) or once at
    the end (not streaming), as the real GenerationResult does."""

    def __init__(self, request_id: int, prompt_token_ids: list[int], params: SamplingParams,
                 streaming: bool, vocab_size: int):
        self.request_id = request_id
        self.prompt_token_ids = list(prompt_token_ids)
        self.sampling_params = params
        self._streaming = streaming
        self._plan = _plan_tokens(self.prompt_token_ids, params, vocab_size)
        self.outputs = [CompletionOutput(0)]
        self._done = False
        try:  # the real result only gets an async queue when made inside a running event loop
            asyncio.get_running_loop()
            self._async = True
        except RuntimeError:
            self._async = False

    @property
    def finished(self) -> bool:
        return self._done

    def __aiter__(self):
        return self

    async def __anext__(self):
        if self._done:
            raise StopAsyncIteration
        assert self._async, ("The asyncio event loop was not present during initialization, so "
                             "async operations are not available.")
        out = self.outputs[0]
        out._last_token_ids_len = len(out.token_ids)
        n = 1 if self._streaming else len(self._plan)
        await asyncio.sleep(STEP_S * n)
        out.token_ids.extend(self._plan[len(out.token_ids):len(out.token_ids) + n])
        if len(out.token_ids) >= len(self._plan):
            self._done = True
            out.finish_reason = "length" if len(self._plan) == self.sampling_params.max_tokens else "stop"
        return self

    async def aresult(self):
        while not self._done:
            await self.__anext__()
        return self


def _plan_tokens(prompt: list[int], p: SamplingParams, vocab: int) -> list[int]:
    """Made-up greedy tokens; without ignore_eos the end token comes at step 2..5 (not before
    min_tokens) and, as in TensorRT-LLM, is not part of the output."""
    stop_at = None if p.ignore_eos else max(p.min_tokens or 1, 2 + sum(prompt) % 4)
    tokens = []
    for i in range(p.max_tokens):
        if stop_at is not None and i + 1 == stop_at:
            break
        t = (sum(prompt) * 31 + 7 * i + 3) % vocab
        tokens.append(t + 1 if t == p.end_id else t)
    return tokens


class BaseLLM:
    FIELDS: set[str] = set()

    def __init__(self, model, tokenizer=None, tokenizer_mode="auto", skip_tokenizer_init=False,
                 trust_remote_code=False, tensor_parallel_size=1, dtype="auto", revision=None,
                 tokenizer_revision=None, **kwargs: Any) -> None:
        for key in kwargs:
            if key not in self.FIELDS:
                raise ValueError(f"{self.__class__.__name__} got invalid argument: {key}")
        self.args = dict(kwargs, model=model, tokenizer=tokenizer, skip_tokenizer_init=skip_tokenizer_init,
                         trust_remote_code=trust_remote_code, tensor_parallel_size=tensor_parallel_size,
                         dtype=dtype, revision=revision)
        CALLS.append((type(self).__name__, dict(self.args)))
        config_path = Path(model) / "config.json"
        if not config_path.is_file():
            raise ValueError(f"stand-in: {model} holds no config.json")
        self._config = json.loads(config_path.read_text())
        self._next_id = 0
        self._shut = False
        self._build_model()
        self.tokenizer = None if skip_tokenizer_init else _Tokenizer(self._config.get("eos_token_id", 2))

    def _build_model(self) -> None:
        pass

    def generate_async(self, inputs, sampling_params: Optional[SamplingParams] = None,
                       streaming: bool = False, **kwargs) -> RequestOutput:
        if self._shut:
            raise RuntimeError("LLM is shutting down")
        params = self._prepare_sampling_params(sampling_params)
        ids = inputs["prompt_token_ids"] if isinstance(inputs, dict) else list(inputs)
        max_seq_len = self.args.get("max_seq_len")
        if max_seq_len and len(ids) + params.max_tokens > max_seq_len:
            raise ValueError(f"prompt ({len(ids)}) + max_tokens ({params.max_tokens}) should not "
                             f"exceed max_seq_len ({max_seq_len})")
        self._next_id += 1
        pretrained = self._config.get("pretrained_config", {})  # an engine dir's config.json
        vocab = self._config.get("vocab_size") or pretrained.get("vocab_size", 1000)
        return RequestOutput(self._next_id, ids, params, streaming, vocab)

    def _prepare_sampling_params(self, p: Optional[SamplingParams]) -> SamplingParams:
        p = p or SamplingParams()
        if not isinstance(p, SamplingParams):
            raise TypeError(f"The sampling_params must be type SamplingParams or None, but got {type(p)}")
        if p.end_id is None:
            if self.tokenizer is None:
                raise ValueError("tokenizer is required to reset end_id if it is None, or you can "
                                 "explicitly specify the end_id for sampling_params")
            p.end_id = self.tokenizer.eos_token_id
            p.pad_id = p.end_id if p.pad_id is None else p.pad_id
        return p

    def shutdown(self) -> None:
        self._shut = True

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> bool:
        self.shutdown()
        return False


class _TorchLLM(BaseLLM):
    FIELDS = TORCH_FIELDS

    def __init__(self, model, *args, **kwargs):
        trt_only = [k for k in kwargs if k in TRT_FIELDS - TORCH_FIELDS]
        if trt_only:
            raise ValueError(f"The following arguments are specific to TensorRT backend and cannot "
                             f"be used with PyTorch backend: {trt_only}.")
        super().__init__(model, *args, **kwargs)


class _TrtLLM(BaseLLM):
    """Builds an 'engine' (a directory with config.json and one rankN.engine per TP rank) unless
    `model` already is one; `save` copies it."""

    FIELDS = TRT_FIELDS

    def _build_model(self) -> None:
        if (Path(self.args["model"]) / "rank0.engine").is_file():
            tp = self._config["pretrained_config"]["mapping"]["tp_size"]
            if tp != self.args["tensor_parallel_size"]:
                raise ValueError(f"engine built for tp_size={tp}, got tensor_parallel_size="
                                 f"{self.args['tensor_parallel_size']}")
            self._engine_dir = Path(self.args["model"])
            return
        self._workspace = tempfile.TemporaryDirectory(suffix="-llm-workspace")
        self._engine_dir = Path(self._workspace.name) / "engine"
        self._engine_dir.mkdir()
        BUILDS.append(dict(self.args))
        self._write_engine()

    def _write_engine(self) -> None:
        import tensorrt_llm

        bc, qc = self.args.get("build_config"), self.args.get("quant_config")
        algo = qc.quant_algo.value if qc is not None and qc.quant_algo is not None else None
        tp = self.args["tensor_parallel_size"]
        config = {"version": tensorrt_llm.__version__,
                  "pretrained_config": dict(self._config, dtype=self.args["dtype"],
                                            quantization={"quant_algo": algo},
                                            mapping={"tp_size": tp}),
                  "build_config": vars(bc) if bc is not None else {}}
        (self._engine_dir / "config.json").write_text(json.dumps(config))
        for rank in range(tp):
            (self._engine_dir / f"rank{rank}.engine").write_bytes(b"stand-in engine")

    def save(self, engine_dir: str) -> None:
        shutil.copytree(self._engine_dir, engine_dir, dirs_exist_ok=True)


class LLM(_TorchLLM):
    pass
