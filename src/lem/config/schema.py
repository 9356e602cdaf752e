"""Structured-config schema: one dataclass per config group, registered in Hydra's ConfigStore.

Pure: no I/O and no imports of torch or engines, so `--help` and `--cfg job` stay fast.
Unknown keys are rejected by OmegaConf's struct mode, so a misspelt option is an error,
never silently ignored.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from lem.backends.spec import BackendConfig
from lem.config.not_measured import NOT_MEASURED_KEYS, not_measured_overrides


@dataclass
class ModelConfig:
    name: str = MISSING
    # tiny: generated locally; random: real architecture shape with random weights; hub: checkpoint
    source: str = MISSING
    hf_id: Optional[str] = None  # hub checkpoint (source=hub)
    revision: Optional[str] = None
    seed: int = 0  # random weights and the tiny tokenizer
    # architecture of a tiny/random model: kwargs for transformers' AutoConfig.for_model
    config: dict[str, Any] = field(default_factory=dict)
    max_len: Optional[int] = None  # longest prompt + output the model accepts; None: from config


@dataclass
class DatasetConfig:
    name: str = MISSING
    kind: str = MISSING  # synthetic | jsonl | hf
    num_requests: int = 16
    seed: int = 0
    # synthetic: token lengths; *_len_dist: fixed | uniform | normal (seeded, clipped to >= 1)
    input_len: int = 64
    output_len: Optional[int] = 32  # jsonl/hf: default output length when a record has none
    input_len_dist: str = "fixed"
    output_len_dist: str = "fixed"
    input_len_spread: int = 0  # uniform: +-spread; normal: std
    output_len_spread: int = 0
    # False: generation stops at EOS (natural lengths); output_len is then the cap
    force_output_len: bool = True
    # jsonl: one JSON object per line with `text_field` (and optionally `output_len`)
    path: Optional[str] = None
    text_field: str = "prompt"
    # hf: a datasets hub id or a save_to_disk directory, read from the local cache
    hf_name: Optional[str] = None
    split: str = "train"


@dataclass
class PrecisionConfig:
    name: str = MISSING
    dtype: str = MISSING  # float32 | float16 | bfloat16: weights (unquantized) and compute
    # None | bnb-int8 | bnb-int4 (pytorch) | fp8 | int8-weight-only | awq | gptq | compressed-tensors
    quantization: Optional[str] = None


@dataclass
class BatchingConfig:
    name: str = MISSING
    strategy: str = "static"  # static | sorted (batches of similar prompt length) | continuous
    batch_size: int = 4


@dataclass
class ContinuousBatchingConfig(BatchingConfig):
    """Serving-style load (conf/batching/continuous.yaml): requests arrive on a schedule and the
    engine batches them as they come; batch_size is not used."""

    name: str = "continuous"
    strategy: str = "continuous"
    arrival: str = "all_at_once"  # all_at_once | fixed_rate | poisson
    rate_rps: Optional[float] = None  # requests per second (fixed_rate, poisson)
    max_concurrency: Optional[int] = None  # at most this many requests in flight (None: no bound)
    arrival_seed: int = 0  # poisson gaps
    # goodput: requests meeting every bound that is set, per second
    slo_ttft_s: Optional[float] = None
    slo_tpot_s: Optional[float] = None
    slo_e2e_s: Optional[float] = None


@dataclass
class EnergyConfig:
    name: str = MISSING
    meter: str = MISSING  # nvml | none
    sample_period_s: float = 0.1  # GPU time series (separate process); 0 disables the sampler
    device_idle_s: float = 1.0  # sample device idle before lem creates a CUDA context
    baseline_s: float = 3.0  # engine-ready idle measured after the model is loaded
    settle_max_s: float = 15.0  # wait at most this long for steady temperature and power
    settle_window_s: float = 1.0
    settle_temp_range_c: float = 1.0
    settle_power_cv: float = 0.05
    cpu: str = "auto"  # auto: RAPL, else CodeCarbon's estimate if installed | rapl | none
    country_iso_code: Optional[str] = None  # CO2 estimate (CodeCarbon, offline), e.g. FRA


@dataclass
class MeasurementConfig:
    cycles: int = 3  # measured windows over the whole workload; statistics across them
    cooldown_max_s: float = 10.0  # between cycles: wait until back within the temperature band
    cooldown_temp_band_c: float = 2.0  # ... of the baseline's temperature
    warmup_k: int = 3  # stability: CV of the last k warmup batch latencies
    warmup_cv: float = 0.05
    warmup_max_batches: int = 20
    warmup_max_s: float = 60.0
    warmup_output_len: Optional[int] = 32  # tokens per stability batch (None: the dataset's)
    max_temperature_c: float = 85.0  # validity: hotter samples are flagged
    # thermal gap before each job: wait (at most this long) until GPU temperature is steady
    job_gap_max_s: float = 0.0
    job_gap_temp_range_c: float = 1.0  # steady: range over the last 2 s


@dataclass
class ObjectiveConfig:
    """What the task function returns to a sweeper (e.g. Optuna) for minimisation."""

    metric: str = "j_per_output_token"  # a summary field
    max_ttft_p99_s: Optional[float] = None  # latency bound: points above it return `penalty`
    penalty: float = 1.0e9


@dataclass
class PreflightConfig:
    """Checks of this machine before a run loads anything (lem.checks.preflight; python -m lem.doctor)."""

    foreign_processes: str = "warn"  # other processes on the run's GPUs: warn | refuse | ignore
    min_shm_mb: float = 1024.0  # free /dev/shm that vllm and tensorrt need (Docker's default: 64)
    min_free_disk_mb: float = 1024.0  # free space where the results go
    cuda_init_timeout_s: float = 60.0  # a CUDA initialisation taking longer is reported as hung


@dataclass
class LemConfig:
    backend: BackendConfig = MISSING
    model: ModelConfig = MISSING
    dataset: DatasetConfig = MISSING
    precision: PrecisionConfig = MISSING
    batching: BatchingConfig = MISSING
    energy: EnergyConfig = MISSING
    measurement: MeasurementConfig = field(default_factory=MeasurementConfig)
    # physical GPU indices (as nvidia-smi numbers them); [] runs on the CPU; "auto": GPU 0 if any
    gpus: Any = "auto"
    seed: int = 0
    cache_dir: str = MISSING  # generated models and tokenizers
    progress: bool = True
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    isolate: bool = True  # run the measurement in a spawned child process
    # isolate=true: once the measurement is written, the engine's shutdown may take this long; then
    # the measuring process and its children are killed (a hung shutdown never stalls a sweep)
    shutdown_max_s: float = 120.0
    resume: bool = True  # in a sweep, skip points with an ok result of the same config hash
    dry_run: bool = False  # validate and print the plan; load nothing
    preflight: PreflightConfig = field(default_factory=PreflightConfig)
    # per-machine settings, usually set in the optional `local` group (lem.config.local)
    output_root: str = "."  # outputs/ and multirun/ are created under it
    slurm_account: Optional[str] = None  # sbatch --account for hydra/launcher=slurm*
    # at the end of a sweep, compare output token counts per request across backends (lem.analysis.parity)
    parity: bool = False


BATCHING_SCHEMAS: dict[str, type] = {"continuous": ContinuousBatchingConfig}  # by strategy
GROUP_SCHEMAS: dict[str, type] = {"model": ModelConfig, "dataset": DatasetConfig,
                                  "precision": PrecisionConfig, "batching": BatchingConfig,
                                  "energy": EnergyConfig, "measurement": MeasurementConfig,
                                  "objective": ObjectiveConfig}


def gpu_count(gpus: Any) -> int:
    """GPUs a run asks for, for a launcher's request: a list's length; `auto` asks for none
    (set gpus=[0] explicitly on a cluster so the scheduler allocates the GPU)."""
    if gpus in (None, "auto"):
        return 0
    if isinstance(gpus, int):
        return 1
    return len(list(gpus))


def config_groups() -> str:
    """--help's listing of the config groups and their options, as Hydra's own $APP_CONFIG_GROUPS
    but without the `*_schema` entries (they type-check the YAMLs; choosing one runs nothing)."""
    from hydra.core.global_hydra import GlobalHydra

    if not GlobalHydra.instance().is_initialized():  # resolved outside `--help`: nothing to list
        return "(the config groups: conf/ and `python -m lem --help`)"
    loader = GlobalHydra.instance().config_loader()
    lines = []
    for group in sorted(loader.list_groups("")):
        if group == "hydra":
            continue
        options = [o for o in loader.get_group_options(group) if not o.endswith("_schema")]
        lines.append(f"{group}: {', '.join(options)}")
    return "\n".join(lines)


def register_configs() -> None:
    """Register the schemas so each group's YAML is type-checked against them, and lem's resolvers
    (`${lem.gpu_count:${gpus}}` maps the run's GPU list to a launcher's GPU request)."""
    if not OmegaConf.has_resolver("lem.gpu_count"):
        OmegaConf.register_new_resolver("lem.gpu_count", gpu_count)
    if not OmegaConf.has_resolver("lem.config_groups"):
        OmegaConf.register_new_resolver("lem.config_groups", config_groups)
    if not OmegaConf.has_resolver("lem.not_measured_overrides"):
        OmegaConf.register_new_resolver("lem.not_measured_overrides", not_measured_overrides)
    if not OmegaConf.has_resolver("lem.config_dir"):
        from lem.config.local import searchpath_entry

        OmegaConf.register_new_resolver("lem.config_dir", searchpath_entry)
    cs = ConfigStore.instance()
    cs.store(name="lem_schema", node=LemConfig)
    from lem.backends.registry import SPECS

    for name, spec in SPECS.items():
        cs.store(group="backend", name=f"{name}_schema", node=spec.schema)
    for name, schema in BATCHING_SCHEMAS.items():
        cs.store(group="batching", name=f"{name}_schema", node=schema)
    for group, schema in [
        ("model", ModelConfig),
        ("dataset", DatasetConfig),
        ("precision", PrecisionConfig),
        ("batching", BatchingConfig),
        ("energy", EnergyConfig),
    ]:
        cs.store(group=group, name=f"{group}_schema", node=schema)




def config_hash(cfg: DictConfig | dict) -> str:
    """Stable short hash of what a run measures (used to match results across sweeps)."""
    data = cfg if isinstance(cfg, dict) else OmegaConf.to_container(cfg, resolve=True)
    data = {k: v for k, v in data.items() if k not in NOT_MEASURED_KEYS and k != "hydra"}
    blob = json.dumps(data, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]
