"""A stand-in for TensorRT-LLM's Python `LLM` API, for contract tests of lem's tensorrt backend.

NOT TensorRT-LLM: no CUDA, no engine, no model. It reproduces the surface lem uses, as read in
NVIDIA/TensorRT-LLM's source (tensorrt_llm/llmapi/llm.py at 4c05a74891e4df8066f08ed4ce14b0972abe4e25,
executor/result.py at 005bc848893f575ec14b45d6b13139360d67c790, sampling_params.py at
000a01de66f0eab4ab05640711f0253f50f5209c, llmapi/__init__.py at 5ca85aff65b2c7d0ba06fb6c7d7c015ed78886f8)
and the 1.x API reference:

- `tensorrt_llm.LLM` is the PyTorch workflow; `tensorrt_llm._tensorrt_engine.LLM` the TensorRT
  engine workflow (build_config, quant_config, `save(engine_dir)`); each refuses keywords it does
  not know, and the PyTorch one refuses the engine workflow's keywords, as the real classes do.
- `generate_async(inputs, sampling_params, streaming=True)` returns a RequestOutput that is its
  own async iterator: each step yields the same object, `outputs[0].token_ids` cumulative,
  `token_ids_diff` the new ones, `finished` on the last.
- `SamplingParams` is keyword-only; without `end_id` and without a tokenizer it is refused.

Tokens are made up deterministically from the prompt; one token per step, a short sleep between.
Tests read what reached it from `CALLS` (constructor keywords) and `BUILDS` (engine builds).
"""

from tensorrt_llm.llmapi import LLM, SamplingParams  # noqa: F401
from tensorrt_llm.llmapi.llm import BUILDS, CALLS  # noqa: F401

__version__ = "1.0.0+lem.standin"  # a 1.x API; "lem.standin" says it is not the library
