"""backend=tensorrt: its config section, checked against conf/backend/tensorrt.yaml."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from lem.backends.spec import BackendConfig


@dataclass
class TensorRTConfig(BackendConfig):
    """Options of TensorRT-LLM's `LLM` API (conf/backend/tensorrt.yaml). The model, dtype,
    quantization and tensor-parallel size come from lem's groups (model, precision, gpus)."""

    name: str = "tensorrt"
    # pytorch: tensorrt_llm.LLM, TensorRT-LLM's PyTorch runtime, nothing built ahead;
    # engine: a TensorRT engine built once (its own measured window) and cached
    workflow: str = "pytorch"
    max_batch_size: Optional[int] = None  # None: TensorRT-LLM's default
    max_num_tokens: Optional[int] = None  # most tokens in one engine step
    max_seq_len: Optional[int] = None  # prompt + output; None: the model's context length
    free_gpu_memory_fraction: float = 0.9  # share of free GPU memory the KV cache takes
    # off: every cycle repeats the same prompts, and reused KV blocks would skip prefill
    enable_block_reuse: bool = False
    trust_remote_code: bool = False
    detokenize: bool = True  # as a server would; token counts always come from token ids
    # any other LLM(...) keyword; keys that lem's groups own are refused (validate_tensorrt.py)
    llm_args: Any = field(default_factory=dict)
