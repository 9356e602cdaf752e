"""TensorRT-LLM's engine workflow: built engines cached on disk, keyed by what shapes them.

An engine is compiled for one model checkpoint, dtype and quantization, tensor-parallel size,
batch/sequence limits, TensorRT-LLM release and GPU architecture; change any of them and it must
be built again; extra `backend.llm_args` also reach the build, so they are in the key too.
Everything else (KV-cache share, block reuse, sampling) is runtime, so it is left out of the key
and never forces a rebuild. The build writes into a staging directory renamed into
place at the end, so an interrupted build never leaves a half engine that a later run would load.
TensorRT-LLM's LLM API has no build-only call: its engine-workflow `LLM(...)` builds and then
starts the engine (executor, KV cache), so a build's time and energy include that first start.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from lem.config.plain import plain
from lem.models.source import ModelSource

log = logging.getLogger(__name__)
MARKER = "lem-engine.json"  # written last: an engine directory without it is not an engine
ENGINE_DIR_ENV = "LEM_ENGINE_CACHE_DIR"
# precision.quantization -> TensorRT-LLM's QuantAlgo member (quantized during the build)
QUANT_ALGOS = {"fp8": "FP8", "int8-weight-only": "W8A16", "int4-weight-only": "W4A16",
               "awq": "W4A16_AWQ"}


def engine_root(cache_dir: str) -> Path:
    """$LEM_ENGINE_CACHE_DIR (lem's tensorrt container mounts one), else <cache_dir>/tensorrt-engines."""
    env = os.environ.get(ENGINE_DIR_ENV)
    return Path(env).expanduser() if env else Path(cache_dir).expanduser() / "tensorrt-engines"


def gpu_arch(gpus: list[int]) -> list[str]:
    """Name and compute capability of each GPU of the run, read through NVML (no CUDA context)."""
    from lem.machine.host import probe_host

    found = {g.index: g for g in probe_host().gpus}
    return [f"{found[i].name} sm_{found[i].compute_capability[0]}{found[i].compute_capability[1]}"
            if i in found else f"gpu {i}: unknown" for i in gpus]


def key_inputs(source: ModelSource, precision, cfg, tp_size: int, version: str,
               arch: list[str]) -> dict[str, Any]:
    """Everything that shapes a built engine (and nothing that does not)."""
    return {
        "model": {"name": source.name, "kind": source.kind, "path": source.path,
                  "revision": source.revision, "config": source.config, "seed": source.seed},
        "dtype": precision.dtype, "quantization": precision.quantization,
        "tensor_parallel_size": tp_size, "max_batch_size": cfg.max_batch_size,
        "max_num_tokens": cfg.max_num_tokens, "max_seq_len": cfg.max_seq_len,
        "tensorrt_llm": version, "gpu_arch": arch,
        # extra LLM(...) keywords reach the build too and may shape it: on the safe side, all count
        "llm_args": plain(cfg.llm_args) or {},
    }


def engine_key(inputs: dict[str, Any]) -> str:
    blob = json.dumps(inputs, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:20]


@dataclass
class EnginePlan:
    key: str
    inputs: dict[str, Any]
    engine_dir: Path

    @property
    def cached(self) -> bool:
        return (self.engine_dir / MARKER).is_file()


def plan_engine(root: Path, inputs: dict[str, Any]) -> EnginePlan:
    key = engine_key(inputs)
    return EnginePlan(key, inputs, root / key)


def build_engine(plan: EnginePlan, make_llm: Callable[[], Any]) -> float:
    """Build with `make_llm()` (TensorRT-LLM's engine-workflow LLM on the checkpoint), save the
    engine into a staging directory, mark it and move it into place. Returns the build's seconds."""
    plan.engine_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = plan.engine_dir.with_name(f".building-{plan.key}-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    t0 = time.perf_counter()
    llm = make_llm()
    try:
        llm.save(str(staging))
    except BaseException:  # failed or interrupted: no half engine left behind
        shutil.rmtree(staging, ignore_errors=True)
        raise
    finally:
        llm.shutdown()  # the build's GPU memory goes back before the engine is loaded to run
    build_s = time.perf_counter() - t0
    marker = dict(key=plan.key, inputs=plan.inputs, build_s=build_s,
                  built_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    (staging / MARKER).write_text(json.dumps(marker, indent=2, default=str))
    try:
        os.replace(staging, plan.engine_dir)
    except OSError:  # another run finished the same engine first: keep theirs
        shutil.rmtree(staging, ignore_errors=True)
    log.info("TensorRT engine %s built in %.1f s: %s", plan.key, build_s, plan.engine_dir)
    return build_s


def read_marker(plan: EnginePlan) -> Optional[dict[str, Any]]:
    path = plan.engine_dir / MARKER
    return json.loads(path.read_text()) if path.is_file() else None
