"""backend=pytorch: its config section, checked against conf/backend/pytorch.yaml."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from lem.backends.spec import BackendConfig


@dataclass
class PyTorchConfig(BackendConfig):
    """Options passed to transformers' `from_pretrained` / `generate` (conf/backend/pytorch.yaml)."""

    name: str = "pytorch"
    attn_implementation: Optional[str] = None  # eager | sdpa | flash_attention_2; None: library default
    device_map: Optional[Any] = None  # None: the run's first GPU (or CPU); "auto" shards over gpus
    # e.g. {0: 70GiB, cpu: 200GiB}; typed Any because OmegaConf cannot merge a dict override
    # into a null typed-dict node (backend.max_memory={0:70GiB} would crash)
    max_memory: Optional[Any] = None
    low_cpu_mem_usage: bool = True
    # compile generate's decode step (transformers' compile_config); needs a static cache.
    # false: eager, even with a static cache (where transformers would compile unasked)
    torch_compile: bool = False
    compile_mode: str = "reduce-overhead"  # torch.compile mode: default | reduce-overhead | max-autotune...
    cache_implementation: Optional[str] = None  # None (dynamic) | static | offloaded ...
    # generate: transformers' loop (the host waits for the device every step); lem: lem's greedy
    # loop over the same model and static cache, no wait while lengths are forced (decode.py)
    decode_loop: str = "generate"
    trust_remote_code: bool = False
    # None: one process; data: one worker per GPU, batches dealt out; tensor: tp_plan="auto"
    parallel: Optional[str] = None
    parallel_size: Optional[int] = None  # workers on the CPU (gpus=[]); GPU runs: len(gpus)
