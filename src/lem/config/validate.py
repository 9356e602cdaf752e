"""Cross-field validation: every problem of a composed config in one error, before anything loads.

Each problem names the config key and the fix. Pure: it reads the config and a `HostInfo`.
"""

from __future__ import annotations

import dataclasses

from omegaconf import DictConfig

from lem.backends.registry import SPECS
from lem.config.schema import BATCHING_SCHEMAS, GROUP_SCHEMAS
from lem.machine.host import HostInfo

DTYPES = ("float32", "float16", "bfloat16")
# every precision.quantization some backend accepts (each spec says which it runs)
QUANTIZATIONS = tuple(dict.fromkeys(q for s in SPECS.values() for q in s.quantizations))
ARRIVALS = ("all_at_once", "fixed_rate", "poisson")
MODEL_SOURCES = ("tiny", "random", "hub")
DATASET_KINDS = ("synthetic", "jsonl", "hf")
LENGTH_DISTS = ("fixed", "uniform", "normal")
ENERGY_METERS = ("nvml", "none")


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
    spec = SPECS.get(cfg.backend.name)
    schemas = dict(GROUP_SCHEMAS, backend=spec.schema if spec else None)
    schemas["batching"] = BATCHING_SCHEMAS.get(cfg.batching.get("name"), schemas["batching"])
    problems = []
    for group, schema in schemas.items():
        if schema is None or group not in cfg:
            continue
        known = {f.name for f in dataclasses.fields(schema)}
        for key in sorted(set(cfg[group].keys()) - known):
            if group == "backend" and key in spec.owned_keys:
                problems.append(f"backend.{key} is not a backend option: it belongs to "
                                f"{spec.owned_keys[key]}")
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
    if (cfg.get("shutdown_max_s") or 0) < 0:
        problems.append(f"shutdown_max_s={cfg.shutdown_max_s} must be >= 0 (seconds the engine's "
                        "shutdown may take after the result is written)")
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
    if b.name not in SPECS:
        return [f"backend={b.name} is unknown; choose one of {sorted(SPECS)}"]
    return SPECS[b.name].validate(cfg, host)


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
    elif (spec := SPECS.get(cfg.backend.name)) is None:
        pass  # an unknown backend is reported once, by _backend
    elif p.quantization not in spec.quantizations:
        problems.append(_unsupported_quantization(p, spec))
    else:
        problems += spec.validate_precision(cfg, host)
    if p.dtype == "bfloat16":
        old = [g.index for g in host.gpus if g.index in cfg.gpus and g.compute_capability < (8, 0)]
        if old:
            problems.append(f"precision={p.name}: GPU(s) {old} have compute capability < 8.0 and "
                            f"no bfloat16; use precision=fp16")
    return problems


def _unsupported_quantization(p, spec) -> str:
    able = [s.name for s in SPECS.values() if p.quantization in s.quantizations]
    if spec.unsupported_precision is not None:
        return spec.unsupported_precision(p, able)
    return (f"precision={p.name} ({p.quantization}): backend={spec.name} cannot run it; "
            f"{' or '.join(f'backend={a}' for a in able)} can")


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
    spec = SPECS.get(cfg.backend.name)
    supported = spec.batching if spec else ()
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
