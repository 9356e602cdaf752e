"""Conversion facts more than one part of lem relies on, defined once: energy units and the size of
one element of each floating-point dtype lem runs. Pure; importing it costs nothing."""

from __future__ import annotations

from typing import Optional

J_PER_KWH = 3.6e6

# Every spelling lem meets (config names, torch's, short names) -> the short name keying DTYPE_BYTES
# and the roofline's FLOP/s peaks. Quantized formats are not here: their bytes depend on the engine.
_DTYPE_NAMES = {"bfloat16": "bf16", "bf16": "bf16", "float16": "fp16", "fp16": "fp16", "half": "fp16",
                "float32": "fp32", "fp32": "fp32", "float": "fp32"}
DTYPE_BYTES = {"bf16": 2, "fp16": 2, "fp32": 4}


def normalise_dtype(dtype: Optional[str]) -> Optional[str]:
    """"bfloat16", "torch.bfloat16", "bf16" -> "bf16" (likewise fp16, fp32); None for anything else."""
    if dtype is None:
        return None
    return _DTYPE_NAMES.get(str(dtype).lower().removeprefix("torch."))


def dtype_bytes(dtype: Optional[str]) -> Optional[int]:
    """Bytes of one element of `dtype` in any spelling normalise_dtype knows; None for anything else."""
    return DTYPE_BYTES.get(normalise_dtype(dtype))
