"""backend=vllm: its config section, checked against conf/backend/vllm.yaml."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from lem.backends.spec import BackendConfig


@dataclass
class VllmConfig(BackendConfig):
    """Options of vLLM's engine (conf/backend/vllm.yaml). The model, its dtype and quantization,
    and the tensor-parallel size come from lem's own groups (model, precision, gpus)."""

    name: str = "vllm"
    gpu_memory_utilization: float = 0.9  # share of each GPU's memory vLLM may take (KV cache)
    kv_cache_memory_bytes: Optional[int] = None  # fixed KV-cache size; set, it replaces the share
    max_model_len: Optional[int] = None  # None: the model's context length
    max_num_seqs: Optional[int] = None  # most sequences in one engine step (None: vLLM's default)
    max_num_batched_tokens: Optional[int] = None
    enforce_eager: bool = False  # True: no CUDA graphs / torch.compile (faster start, slower steps)
    kv_cache_dtype: str = "auto"  # auto | fp8 | fp8_e4m3 | fp8_e5m2 ...
    block_size: Optional[int] = None
    # off by default: every cycle repeats the same prompts, and cached prefixes would skip prefill
    enable_prefix_caching: bool = False
    enable_chunked_prefill: Optional[bool] = None
    seed: int = 0
    trust_remote_code: bool = False
    in_process: bool = False  # engine core in lem's process (VLLM_ENABLE_V1_MULTIPROCESSING=0)
    per_token_timestamps: bool = True  # stream: a timestamp per token; False: first/last from metrics
    detokenize: bool = True  # detokenize outputs as a server would (token counts never use text)
    engine_state_period_s: float = 0.05  # sample running/waiting/KV-cache use at most this often
    # any other vllm.EngineArgs keyword; keys that lem's groups own are refused (validate.py)
    engine_args: Any = field(default_factory=dict)
