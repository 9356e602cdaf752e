"""Validation of backend=tensorrt: what TensorRT-LLM can run, on which GPUs, with which precision.

Pure, like lem.config.validate (which calls these through the spec): reads the config and a
HostInfo, imports nothing heavy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the spec is imported by lem.machine.host itself
    from lem.machine.host import HostInfo

WORKFLOWS = ("pytorch", "engine")
# quantized while the engine is built (QuantConfig): the engine workflow only
TENSORRT_QUANTIZATIONS = (None, "fp8", "int8-weight-only", "int4-weight-only", "awq")
TENSORRT_DTYPES = ("float16", "bfloat16")
FP8_MIN_CC = (8, 9)  # FP8 tensor cores: Ada (8.9), Hopper (9.0) and later
# LLM(...) keywords that lem's own groups set: refused in backend.llm_args, with where they go
TENSORRT_OWNED_KEYS = {
    "model": "the model group (model=<preset>, model.hf_id=<org/name>)",
    "tokenizer": "the model group (the checkpoint's own tokenizer is used)",
    "skip_tokenizer_init": "model.source (set for random-weight models only)",
    "revision": "model.revision", "tokenizer_revision": "model.revision",
    "dtype": "the precision group (precision=fp16|bf16)",
    "quant_config": "the precision group (precision=fp8|int8-wo|int4-wo|awq)",
    "tensor_parallel_size": "gpus (tensor_parallel_size is len(gpus), e.g. gpus=[0,1])",
    "load_format": "model.source (source=random loads TensorRT-LLM's dummy weights)",
    "build_config": "backend.max_batch_size / max_num_tokens / max_seq_len",
    "kv_cache_config": "backend.free_gpu_memory_fraction / backend.enable_block_reuse",
    "max_batch_size": "backend.max_batch_size", "max_num_tokens": "backend.max_num_tokens",
    "max_seq_len": "backend.max_seq_len", "trust_remote_code": "backend.trust_remote_code",
    "backend": "backend.workflow (pytorch | engine)",
}
INSTALL_FIX = ("run in lem's tensorrt container (docker compose run --rm tensorrt python -m lem ...) "
               "or pip install 'lem[tensorrt]' on a Linux GPU host (NVIDIA's wheels, see README)")


def tensorrt_problems(cfg, host: HostInfo) -> list[str]:
    b, problems = cfg.backend, []
    if not host.packages.get("tensorrt_llm"):
        problems.append(f"backend=tensorrt needs the tensorrt_llm package: {INSTALL_FIX}")
    if not list(cfg.gpus):
        problems.append("backend=tensorrt runs on NVIDIA GPUs only (TensorRT-LLM has no CPU "
                        "runtime); set gpus=[0], or use backend=pytorch|vllm on the CPU")
    if b.workflow not in WORKFLOWS:
        problems.append(f"backend.workflow={b.workflow} is unknown; choose one of {WORKFLOWS}")
    if not 0 < b.free_gpu_memory_fraction <= 1:
        problems.append(f"backend.free_gpu_memory_fraction={b.free_gpu_memory_fraction} must be in "
                        f"(0, 1], e.g. 0.9")
    for key in ("max_batch_size", "max_num_tokens", "max_seq_len"):
        if b[key] is not None and b[key] < 1:
            problems.append(f"backend.{key}={b[key]} must be >= 1, or null for TensorRT-LLM's default")
    for key in sorted(b.llm_args or {}):
        if key in TENSORRT_OWNED_KEYS:
            problems.append(f"backend.llm_args.{key} is set by lem: it belongs to {TENSORRT_OWNED_KEYS[key]}")
    return problems


def tensorrt_precision_problems(cfg, host: HostInfo) -> list[str]:
    """dtype and quantization TensorRT-LLM can run on the run's GPUs (quantization: unknown or
    foreign names are caught by lem.config.validate before this)."""
    p, problems = cfg.precision, []
    if p.dtype not in TENSORRT_DTYPES:
        problems.append(f"precision={p.name} ({p.dtype}): lem runs TensorRT-LLM in float16 or "
                        f"bfloat16 only; use precision=fp16|bf16")
    if not p.quantization:
        return problems
    if cfg.backend.workflow == "pytorch":
        problems.append(f"precision={p.name} ({p.quantization}) is quantized while a TensorRT engine "
                        f"is built (QuantConfig); set backend.workflow=engine, or precision=fp16|bf16")
    if p.quantization == "fp8":
        old = [g.index for g in host.gpus if g.index in cfg.gpus and g.compute_capability < FP8_MIN_CC]
        if old:
            problems.append(f"precision={p.name}: GPU(s) {old} have compute capability < 8.9 and no "
                            f"FP8 tensor cores (Ada, Hopper or newer needed); use precision=int8-wo|bf16")
    return problems


def unsupported_precision(p, able: list[str]) -> str:
    return (f"precision={p.name} ({p.quantization}): backend=tensorrt cannot run it; "
            f"TensorRT-LLM (backend=tensorrt backend.workflow=engine) quantizes fp8, int8-wo, "
            f"int4-wo and awq; {' or '.join(f'backend={a}' for a in able)} can run {p.quantization}")
