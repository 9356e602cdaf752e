"""A random-weight model written once as a checkpoint, for loaders that need one.

Tensor parallelism loads each rank's shard with transformers' `from_pretrained(tp_plan="auto")`,
which reads a checkpoint; a random-weight model is otherwise built in place on the GPU. So for
tensor-parallel runs the model is built once (same init distribution, seeded) and saved under the
cache dir, keyed by architecture, seed and dtype; later runs reuse it. 8B in bf16 is 16 GB of disk.
Build it on a GPU where there is one: on an H200 host the CPU fill and write of 8B took ~255 s,
the GPU build and write 30 s (benchmarks/results/2026-11-30_h200x2_parallel.md).
The numbers differ between devices (each generator's own stream), not their distribution.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Optional

log = logging.getLogger(__name__)


def random_checkpoint_dir(cache_dir: str | os.PathLike, arch: dict, seed: int, dtype: str) -> Path:
    """The checkpoint's dir, built on the CPU if it is not there yet."""
    return ensure_random_checkpoint(cache_dir, arch, seed, dtype)[0]


def ensure_random_checkpoint(cache_dir: str | os.PathLike, arch: dict, seed: int, dtype: str,
                             device: str = "cpu") -> tuple[Path, Optional[float]]:
    """The checkpoint's dir, and the seconds spent writing it (None: an earlier run's, reused)."""
    key = hashlib.sha256(json.dumps({"arch": arch, "seed": seed, "dtype": dtype},
                                    sort_keys=True).encode()).hexdigest()[:16]
    out = Path(cache_dir) / "random-checkpoints" / key
    if (out / "config.json").is_file():
        return out, None
    tmp = out.with_name(f"{key}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    log.info("writing a random-weight checkpoint to %s (once; built on %s)", out, device)
    t0 = time.perf_counter()
    _build(tmp, arch, seed, dtype, device)
    written_s = time.perf_counter() - t0
    log.info("random-weight checkpoint written in %.1f s", written_s)
    try:
        tmp.rename(out)
    except OSError:  # another process finished first: keep theirs
        shutil.rmtree(tmp, ignore_errors=True)
    return out, written_s


def _build(out: Path, arch: dict, seed: int, dtype: str, device: str) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from lem.backends.pytorch.backend import _fill_random, _no_init_weights

    config = AutoConfig.for_model(**arch)
    torch.manual_seed(seed)
    with _no_init_weights(), torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, dtype))
    _fill_random(model, getattr(config, "initializer_range", 0.02), seed)
    model.save_pretrained(out)
    del model
    if device.startswith("cuda"):
        torch.cuda.empty_cache()  # the caller loads its own shard on this GPU next
