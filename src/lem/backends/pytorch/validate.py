"""Validation of backend=pytorch: its config section and the precisions it loads (bitsandbytes).

Pure, like lem.config.validate (which calls these through the spec): reads the config and a HostInfo.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the spec is imported by lem.machine.host itself
    from lem.machine.host import HostInfo

ATTN_IMPLEMENTATIONS = (None, "eager", "sdpa", "flash_attention_2", "flex_attention")


COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def problems(cfg, host: HostInfo) -> list[str]:
    b, problems = cfg.backend, []
    if b.attn_implementation not in ATTN_IMPLEMENTATIONS:
        problems.append(f"backend.attn_implementation={b.attn_implementation} is unknown; "
                        f"choose one of {ATTN_IMPLEMENTATIONS}")
    if b.attn_implementation == "flash_attention_2":
        if not cfg.gpus:
            problems.append("backend.attn_implementation=flash_attention_2 needs a GPU; "
                            "set gpus=[0] or use sdpa")
        if not host.packages.get("flash_attn"):
            problems.append("backend.attn_implementation=flash_attention_2 needs the flash-attn "
                            "package; pip install flash-attn, or use sdpa")
    problems += _compile(b)
    if b.max_memory is not None and b.device_map is None:
        problems.append("backend.max_memory only applies with backend.device_map (e.g. auto); "
                        "set both or neither")
    if b.device_map is not None and cfg.model.source == "random":
        problems.append("backend.device_map cannot place a random-weight model (it is built in "
                        "place on gpus[0]); leave backend.device_map=null")
    return problems + _parallel(cfg)


def _compile(b) -> list[str]:
    """transformers compiles generate's decode step only over a static KV cache."""
    problems = []
    if b.compile_mode not in COMPILE_MODES:
        problems.append(f"backend.compile_mode={b.compile_mode} is unknown; choose one of "
                        f"{COMPILE_MODES}")
    if b.torch_compile and b.cache_implementation != "static":
        problems.append(f"backend.torch_compile=true compiles the decode step over a static KV "
                        f"cache, but backend.cache_implementation={_yaml(b.cache_implementation)}; add "
                        f"backend.cache_implementation=static (or use backend=pytorch_fast)")
    return problems + _decode_loop(b)


DECODE_LOOPS = ("generate", "lem")


def _decode_loop(b) -> list[str]:
    """lem's loop decodes over a static KV cache only (it never grows a cache)."""
    if b.decode_loop not in DECODE_LOOPS:
        return [f"backend.decode_loop={b.decode_loop} is unknown; choose one of {DECODE_LOOPS}"]
    if b.decode_loop == "lem" and b.cache_implementation != "static":
        return [f"backend.decode_loop=lem decodes over a static KV cache, but "
                f"backend.cache_implementation={_yaml(b.cache_implementation)}; add "
                f"backend.cache_implementation=static"]
    return []


PARALLEL_MODES = (None, "data", "tensor")


def _parallel(cfg) -> list[str]:
    """backend.parallel: the GPU list decides the number of workers; on the CPU parallel_size."""
    b, gpus = cfg.backend, list(cfg.gpus)
    if b.parallel not in PARALLEL_MODES:
        return [f"backend.parallel={b.parallel} is unknown; choose one of {PARALLEL_MODES}"]
    if b.parallel is None:
        return [] if b.parallel_size is None else [
            "backend.parallel_size only applies with backend.parallel=data|tensor; unset it"]
    problems = []
    if b.device_map is not None:
        problems.append(f"backend.parallel={b.parallel} places the model itself; leave "
                        "backend.device_map=null")
    if gpus and len(gpus) < 2:
        problems.append(f"backend.parallel={b.parallel} needs at least two GPUs, got gpus={gpus}; "
                        "list them (gpus=[0,1]) or set backend.parallel=null")
    if gpus and b.parallel_size not in (None, len(gpus)):
        problems.append(f"backend.parallel_size={b.parallel_size} but gpus={gpus}: on GPUs the "
                        "GPU list sets the size; leave backend.parallel_size=null")
    if not gpus and (b.parallel_size or 0) < 2:
        problems.append(f"backend.parallel={b.parallel} on the CPU (gpus=[]) needs "
                        "backend.parallel_size >= 2 (the number of worker processes)")
    return problems


def precision_problems(cfg, host: HostInfo) -> list[str]:
    """bitsandbytes (precision=int8|int4) quantizes while loading, on a GPU."""
    if not cfg.precision.quantization:
        return []
    p, problems = cfg.precision, []
    if not host.packages.get("bitsandbytes"):
        problems.append(f"precision={p.name} ({p.quantization}) needs bitsandbytes; "
                        f"pip install 'lem[quant]', or choose precision=fp16/bf16")
    if not cfg.gpus:
        problems.append(f"precision={p.name} ({p.quantization}) runs on a GPU only; "
                        f"set gpus=[0] or choose precision=fp32/bf16 on the CPU")
    return problems


def unsupported_precision(p, able: list[str]) -> str:
    return (f"precision={p.name} ({p.quantization}): backend=pytorch cannot load it; "
            f"{' or '.join(f'backend={a}' for a in able)} can, or use precision=int8/int4 (bitsandbytes) here")


def _yaml(value) -> str:
    """A value as the user writes it on the command line (None is YAML's null)."""
    return "null" if value is None else str(value)
