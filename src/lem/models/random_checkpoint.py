"""A random-weight model written once as a checkpoint, for loaders that need one.

Tensor parallelism loads each rank's shard with transformers' `from_pretrained(tp_plan="auto")`,
which reads a checkpoint; a random-weight model is otherwise built in place on the GPU. So for
tensor-parallel runs the model is built once on the CPU (same init distribution, seeded, but the
CPU generator's stream: not the same numbers as the in-place GPU build) and saved under the cache
dir, keyed by architecture, seed and dtype; later runs reuse it. 8B in bf16 is 16 GB of disk.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path

log = logging.getLogger(__name__)


def random_checkpoint_dir(cache_dir: str | os.PathLike, arch: dict, seed: int, dtype: str) -> Path:
    key = hashlib.sha256(json.dumps({"arch": arch, "seed": seed, "dtype": dtype},
                                    sort_keys=True).encode()).hexdigest()[:16]
    out = Path(cache_dir) / "random-checkpoints" / key
    if (out / "config.json").is_file():
        return out
    tmp = out.with_name(f"{key}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    log.info("writing a random-weight checkpoint for tensor parallelism to %s (once)", out)
    _build(tmp, arch, seed, dtype)
    try:
        tmp.rename(out)
    except OSError:  # another process finished first: keep theirs
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _build(out: Path, arch: dict, seed: int, dtype: str) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from lem.backends.pytorch import _fill_random, _no_init_weights

    config = AutoConfig.for_model(**arch)
    torch.manual_seed(seed)
    with _no_init_weights():
        model = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, dtype))
    _fill_random(model, getattr(config, "initializer_range", 0.02), seed)
    model.save_pretrained(out)
