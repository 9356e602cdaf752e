"""Configuration objects of the stand-in (the real ones are pydantic models; keyword-only here)."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Optional


@dataclass(kw_only=True)
class KvCacheConfig:
    enable_block_reuse: bool = True
    max_tokens: Optional[int] = None
    free_gpu_memory_fraction: Optional[float] = 0.9

    def __post_init__(self):
        f = self.free_gpu_memory_fraction
        if f is not None and not 0 <= f <= 1:  # the real field: Ge(0), Le(1)
            raise ValueError(f"free_gpu_memory_fraction={f} must be in [0, 1]")


@dataclass(kw_only=True)
class BuildConfig:
    max_input_len: int = 1024
    max_seq_len: Optional[int] = None
    max_batch_size: int = 2048
    max_num_tokens: int = 8192
    max_beam_width: int = 1


class QuantAlgo(enum.Enum):
    W8A16 = "W8A16"
    W4A16 = "W4A16"
    W4A16_AWQ = "W4A16_AWQ"
    FP8 = "FP8"


@dataclass(kw_only=True)
class QuantConfig:
    quant_algo: Optional[QuantAlgo] = None
    kv_cache_quant_algo: Optional[QuantAlgo] = None
