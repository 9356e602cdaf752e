"""Real GPU checks (NVML and CUDA): run on the GPU machine with `python -m pytest -m gpu`."""

import json
import os
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.gpu


def _require_gpu():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU on this machine")
    return torch


def test_nvml_meter_counts_a_matmul_burst_at_plausible_power():
    torch = _require_gpu()
    from lem.measure.energy import NvmlMeter

    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    meter = NvmlMeter([0])
    meter.start()
    t_end = time.perf_counter() + 5.0
    while time.perf_counter() < t_end:
        a @ a
    torch.cuda.synchronize()
    reading = meter.stop()
    mean_w = reading.total_j / reading.duration_s
    assert reading.method == "nvml-counter"
    assert reading.devices[0].uuid.startswith("GPU-")
    assert 100 < mean_w < 1200, f"mean power {mean_w:.0f} W over a 5 s matmul burst"


def test_lem_tiny_on_gpu_measures_energy_and_memory(tmp_path):
    _require_gpu()
    out = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "lem", "gpus=[0]", "precision=bf16", "progress=false",
         "dataset.num_requests=64", "dataset.output_len=64", "batching.batch_size=16",
         f"hydra.run.dir={out}"], capture_output=True, text=True, timeout=600,
        env={**os.environ, "LEM_CACHE_DIR": str(tmp_path / "cache")})
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads((out / "result.json").read_text())
    s = r["summary"]
    assert r["status"] == "ok"
    assert s["energy_j"] > 0 and s["j_per_output_token"] > 0
    assert s["output_tokens"] == 3 * 64 * 64  # 3 cycles
    assert r["memory"]["gpus"][0]["peak_allocated_mb"] > 0
    assert 50 < s["idle_power_w"] < 300 and 50 < s["device_idle_power_w"] < 300
    assert s["dynamic_energy_j"] < s["energy_j"] and s["prefill_energy_j"] > 0
    assert r["timeseries"]["rows"] > 10 and (out / "timeseries.parquet").is_file()
    assert r["statistics"]["j_per_output_token"]["n"] == 3
    assert {c["name"] for c in r["validity"]["checks"]} >= {"counter_vs_integral", "throttling"}
    assert r["environment"]["gpus"][0]["uuid"].startswith("GPU-")
    assert r["precision"]["weight_dtype"] == "bfloat16"


def _require_gpus(n: int):
    torch = _require_gpu()
    if torch.cuda.device_count() < n:
        pytest.skip(f"needs {n} GPUs, this machine has {torch.cuda.device_count()}")
    return torch


@pytest.mark.parametrize("mode", ["data", "tensor"])
def test_two_gpu_parallel_run_measures_each_gpu(tmp_path, mode):
    _require_gpus(2)
    out = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "lem", "gpus=[0,1]", f"backend.parallel={mode}", "precision=bf16",
         "progress=false", "dataset.num_requests=64", "dataset.output_len=64",
         "batching.batch_size=8", f"hydra.run.dir={out}"], capture_output=True, text=True,
        timeout=600, env={**os.environ, "LEM_CACHE_DIR": str(tmp_path / "cache")})
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads((out / "result.json").read_text())
    assert r["status"] == "ok" and r["parallel"]["mode"] == mode
    assert [w["gpus"] for w in r["parallel"]["workers"]] == ([[0], [1]] if mode == "data"
                                                             else [[0, 1], [0, 1]])
    per_gpu = r["summary"]["energy_per_gpu_j"]
    assert set(per_gpu) == {"0", "1"} and all(v > 0 for v in per_gpu.values())
    assert {m["index"] for m in r["memory"]["gpus"]} == {0, 1}
    assert [g["index"] for g in r["environment"]["gpus"]] == [0, 1]
    assert all(g["uuid"].startswith("GPU-") for g in r["environment"]["gpus"])
    if mode == "data":
        assert sorted({q["worker"] for q in r["requests"]}) == [0, 1]
