"""Result schema and the atomic result.json writer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lem.analysis.attribution import Attribution
from lem.analysis.metrics import Percentiles
from lem.analysis.roofline import Roofline
from lem.analysis.serving import ServingSummary
from lem.analysis.stats import CycleStats
from lem.analysis.validity import Check, Validity
from lem.backends.base import GpuMemory, ParallelInfo, PrecisionInfo, WorkerInfo
from lem.machine.devices import ThermalGap
from lem.measure.baseline import Baseline, Settle
from lem.measure.cpu_energy import CpuEnergyReading
from lem.measure.instruments import TimeseriesInfo
from lem.measure.warmup import WarmupReport
from lem.measure.windows import GpuWindow, Window
from lem.result.schema import (
    RESULT_FILE,
    SCHEMA_VERSION,
    Memory,
    Result,
    ResultError,
    Summary,
    load_result,
    write_json_atomic,
    write_result,
)

SCALAR_SUMMARY_KEYS = (
    "cycles", "num_requests", "input_tokens", "output_tokens", "duration_s", "output_tokens_per_s",
    "total_tokens_per_s", "requests_per_s", "energy_j", "energy_per_gpu_j",
    "j_per_output_token", "j_per_request", "output_tokens_per_j", "idle_power_w", "idle_power_std_w",
    "device_idle_power_w", "dynamic_energy_j", "dynamic_j_per_output_token", "prefill_energy_j",
    "decode_energy_j", "cpu_energy_j", "cpu_energy_method", "co2_kg", "mbu", "mfu", "model_load_s",
    "model_load_energy_j",
)
STATS_SUMMARY_KEYS = ("ttft_s", "itl_s", "tpot_s", "e2e_s")
STATS_KEYS = ("n", "mean", "p50", "p90", "p95", "p99")


def test_write_json_atomic_round_trips_and_leaves_no_temp_file(tmp_path):
    path = tmp_path / "sub" / "result.json"  # the directory is created
    data = Result(status="ok", summary=Summary(num_requests=3, energy_j=1.5)).to_dict()
    write_json_atomic(path, data)
    assert [p.name for p in path.parent.iterdir()] == ["result.json"]
    assert load_result(path) == data


def test_write_result_replaces_an_earlier_result(tmp_path):
    write_result(Result(), tmp_path)
    path = write_result(Result(status="ok", wall_s=2.0), tmp_path)
    assert path == tmp_path / RESULT_FILE
    assert load_result(path)["status"] == "ok" and load_result(path)["wall_s"] == 2.0
    assert [p.name for p in tmp_path.iterdir()] == [RESULT_FILE]


def test_failed_dump_keeps_the_previous_file_and_leaves_no_temp_file(tmp_path):
    path = tmp_path / "result.json"
    write_json_atomic(path, {"status": "ok"})
    before = path.read_bytes()
    with pytest.raises(ValueError):
        write_json_atomic(path, {"status": "ok", "energy_j": float("nan")})  # allow_nan=False
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]


def test_failed_first_dump_leaves_nothing(tmp_path):
    with pytest.raises(ValueError):
        write_json_atomic(tmp_path / "result.json", {"x": float("inf")})
    assert list(tmp_path.iterdir()) == []


def test_unserialisable_values_are_written_as_strings(tmp_path):
    path = tmp_path / "r.json"
    write_json_atomic(path, {"path": tmp_path})
    assert load_result(path) == {"path": str(tmp_path)}


def test_default_result_has_every_summary_key_null():
    summary = Result().to_dict()["summary"]
    assert set(summary) == set(SCALAR_SUMMARY_KEYS) | set(STATS_SUMMARY_KEYS)
    assert all(summary[k] is None for k in SCALAR_SUMMARY_KEYS)
    for key in STATS_SUMMARY_KEYS:
        assert summary[key] == {"n": 0, **{k: None for k in STATS_KEYS[1:]}}


def test_default_result_has_every_top_level_key():
    d = Result().to_dict()
    assert set(d) == {
        "schema_version", "status", "error", "started_at", "finished_at", "wall_s", "phase_s", "job_gap",
        "config_hash", "overrides", "config", "environment", "precision", "summary", "statistics",
        "validity", "baseline", "warmup", "cycles", "windows", "attribution", "roofline",
        "timeseries", "memory", "requests", "serving", "parallel", "engine", "null_reasons", "warnings",
    }
    assert d["schema_version"] == SCHEMA_VERSION and d["status"] == "running"
    json.dumps(d, allow_nan=False)  # a default result is valid strict JSON


# Result.read: the typed tree back from result.json

REAL = Path(__file__).resolve().parent / "data" / "h100_vllm_results"


def typed_result() -> Result:
    """A finished run as lem.job.phases builds it: every typed block filled, values as measured."""
    gpu = GpuWindow(0, 812.5, 809.9, 348.2, 41, 0.998, temperature_max_c=48, clock_event_reasons=4)
    cpu = CpuEnergyReading("rapl", 2.33, 101.0, 12.5, 113.5, {"package-0": 101.0, "package-0/dram": 12.5})
    return Result(
        status="ok", started_at="2026-12-07T10:00:00+00:00", finished_at="2026-12-07T10:03:00+00:00",
        wall_s=180.5, phase_s={"model_load": 21.0, "cycles": 7.0},
        job_gap=ThermalGap(3.2, True, [41], "range <= 1.0 C over 2.0 s, at most 60 s"),
        config_hash="0123456789abcdef", overrides=["batching.batch_size=8"],
        config={"backend": {"name": "vllm"}, "batching": {"batch_size": 8}, "gpus": [0]},
        environment={"gpus": [{"name": "NVIDIA H100", "index": 0}], "libraries": {"vllm": "0.32.0"}},
        precision=PrecisionInfo("bfloat16", "bfloat16", "bfloat16", None, {"bfloat16": 1.0}),
        summary=Summary(cycles=3, num_requests=24, input_tokens=6144, output_tokens=3072, duration_s=7.0,
                        output_tokens_per_s=438.9, ttft_s=Percentiles(24, 0.05, 0.04, 0.08, 0.09, 0.1),
                        energy_j=2437.5, energy_per_gpu_j={"0": 2437.5}, j_per_output_token=0.79,
                        cpu_energy_j=340.5, cpu_energy_method="rapl"),
        statistics={"j_per_output_token": CycleStats(3, 0.79, 0.01, 0.013, 0.77, 0.81, "bootstrap BCa")},
        validity=Validity(True, [], [Check("coverage", "pass", "99.8 % of every window sampled")]),
        baseline=Baseline("engine-ready", 120.3, {"0": 120.3}, 1.2, 10.0, Settle(True, 4.0, 60.0, "flat")),
        warmup=WarmupReport(4, 3.1, True, 0.02, "converged", "CV < 0.05 over 3", 1.2, [0.7, 0.6, 0.6]),
        cycles=[{"cycle": 0, "energy_j": 812.5, "attribution": {"reason": "continuous batching"}}],
        windows=[Window("model_load", 0, 21_000_000_000, 21.0),
                 Window("cycle_0", 30_000_000_000, 32_333_000_000, 2.333, [gpu], 812.5, cpu=cpu)],
        attribution=Attribution(reason="continuous batching"),
        roofline=Roofline(mbu=0.41, mfu=0.02, method="decode roofline", bytes_per_step=16_000_000_000),
        timeseries=TimeseriesInfo("timeseries.parquet", 1200, 0.01, {"0": "instant"}),
        memory=Memory([GpuMemory(0, None, None)], {"0": 71234.0}, 2048.5),
        requests=[{"cycle": 0, "index": 0, "output_tokens": 128, "ttft_s": 0.05,
                   "token_times_s": [0.05, 0.06, 0.07]}],
        serving=ServingSummary(cycles=1, requests=8, requests_ok=8, goodput_rps=3.1),
        parallel=ParallelInfo(mode="data", size=2, workers=[WorkerInfo(0, [0], 11), WorkerInfo(1, [1], 12)],
                              dealing="round-robin", local_param_elements_per_worker=[8, 8]),
        engine={"workflow": "async", "version": "0.32.0"},
        null_reasons={"summary.co2_kg": "no grid intensity"}, warnings=["one GPU throttled once"])


def test_a_written_result_reads_back_equal_with_every_block_typed(tmp_path):
    result = typed_result()
    back = Result.read(write_result(result, tmp_path))
    assert back == result
    assert isinstance(back.windows[1].gpus[0], GpuWindow) and isinstance(back.windows[1].cpu, CpuEnergyReading)
    assert isinstance(back.statistics["j_per_output_token"], CycleStats)
    assert isinstance(back.baseline.settle, Settle) and isinstance(back.job_gap, ThermalGap)
    assert back.summary.ttft_s.p99 == 0.1 and back.validity.checks[0].verdict == "pass"
    assert isinstance(back.serving, ServingSummary) and isinstance(back.parallel.workers[1], WorkerInfo)


@pytest.mark.parametrize("name", ["bs1", "bs8"])
def test_real_results_read_typed_and_write_back_the_same_json(tmp_path, name):
    raw = json.loads((REAL / f"{name}.result.json").read_text())
    result = Result.read(REAL / f"{name}.result.json")
    assert result.summary.num_requests == len(result.requests) and result.windows[0].name == "model_load"
    assert load_result(write_result(result, tmp_path)) == raw  # nothing lost, nothing added


def test_a_missing_key_takes_the_field_default(tmp_path):
    data = Result(status="ok", summary=Summary(energy_j=3.0)).to_dict()
    del data["engine"], data["summary"]["energy_j"], data["memory"]["gpus"], data["warnings"]
    data["baseline"] = {"state": "not measured"}  # an older 2.x result: fields added since are absent
    result = Result.from_dict(data)
    assert result.engine is None and result.summary.energy_j is None and result.memory.gpus == []
    assert result.warnings == [] and result.baseline == Baseline("not measured")
    assert Result.from_dict({}) == Result()


def _written(tmp_path, data) -> Path:
    path = tmp_path / RESULT_FILE
    path.write_text(json.dumps(data))
    return path


def _set(data: dict, keys: tuple, value) -> dict:
    parent = data
    for key in keys[:-1]:
        parent = parent[key]
    parent[keys[-1]] = value
    return data


@pytest.mark.parametrize("keys,value,what", [
    (("summary", "duration_s"), "fast", "summary.duration_s is a string ('fast'), expected a number or null"),
    (("summary", "energy_j"), True, "summary.energy_j is a boolean (true), expected a number or null"),
    (("summary", "cycles"), 2.5, "summary.cycles is a number (2.5), expected a whole number or null"),
    (("summary", "ttft_s", "n"), None, "summary.ttft_s.n is null, expected a number"),
    (("status",), {"ok": True}, "status is an object, expected a string"),
    (("windows", 1, "gpus", 0, "energy_j"), "812", "windows[1].gpus[0].energy_j is a string ('812'), expected "
     "a number or null"),
    (("statistics", "j_per_output_token"), 0.79, "statistics.j_per_output_token is a number (0.79), expected "
     "an object"),
    (("validity", "reasons"), "none", "validity.reasons is a string ('none'), expected an array"),
    (("config",), [], "config is an array, expected an object"),
])
def test_a_wrong_typed_field_is_an_error_naming_the_file_and_key(tmp_path, keys, value, what):
    path = _written(tmp_path, _set(typed_result().to_dict(), keys, value))
    with pytest.raises(ResultError) as info:
        Result.read(path)
    assert info.value.what == what
    assert str(info.value) == f"{path}: {what} (schema_version 2.0); fix the field or rerun the job"


def test_a_required_field_missing_is_an_error_naming_it(tmp_path):
    data = typed_result().to_dict()
    del data["windows"][1]["start_ns"]
    with pytest.raises(ResultError, match=r"windows\[1\]\.start_ns is missing, and the field has no default"):
        Result.read(_written(tmp_path, data))


def test_an_unknown_key_of_a_newer_schema_is_an_error_naming_file_key_and_version(tmp_path):
    data = {**typed_result().to_dict(), "schema_version": "2.1"}
    data["summary"]["water_l"] = 0.2
    path = _written(tmp_path, data)
    with pytest.raises(ResultError) as info:
        Result.read(path)
    assert str(info.value) == (
        f"{path}: summary.water_l is not a field of the result schema (Summary has no 'water_l') "
        "(schema_version 2.1); this lem reads schema 2.0: read the file with the lem that wrote it")
    data["schema_version"] = "2.0"  # the same version: edited, or written by another tool
    with pytest.raises(ResultError, match="remove the key or rerun the job"):
        Result.read(_written(tmp_path, data))


def test_another_major_version_or_not_json_is_an_error_naming_the_file(tmp_path):
    path = _written(tmp_path, {"schema_version": "3.0", "status": "ok"})
    with pytest.raises(ResultError, match=f"{path}: schema_version is '3.0', this lem reads 2.x results"):
        Result.read(path)
    path.write_text('{"schema_version": "2.0", "stat')
    with pytest.raises(ResultError, match=f"{path}: not JSON .*rerun the job"):
        Result.read(path)
    path.write_text("[1, 2]")
    with pytest.raises(ResultError, match="the file is an array, expected an object"):
        Result.read(path)


def test_aggregation_checks_the_same_types_as_the_typed_reader():
    """lem.aggregate.shape reads its types off the schema: both name the same field the same way."""
    from lem.aggregate.shape import wrong_type

    for keys, value in ((("summary", "duration_s"), "fast"), (("windows", 0, "start_ns"), "0"),
                        (("statistics", "j_per_output_token", "ci95_low"), [2.7]),
                        (("windows", 1, "cpu", "zones", "package-0"), "x"), (("job_gap", "steady"), 1)):
        data = _set(typed_result().to_dict(), keys, value)
        with pytest.raises(ResultError) as info:
            Result.from_dict(data)
        assert wrong_type(data, deep=True) == info.value.what.removesuffix(" or null") + " or null"


# the readers of result.json: the typed Result, attribute by attribute

def test_the_console_summary_of_a_real_result_reads_its_typed_fields():
    from lem.result.console import summary_table

    table = summary_table(Result.read(REAL / "bs8.result.json"), "x").splitlines()
    assert table[:5] == [
        "  status          ok, valid=True",
        "  warnings        counter_vs_integral, throttling (result.validity.checks says why)",
        "  run             backend=vllm model=llama3-8b-random precision=bf16 batch=8 gpus=[0]",
        "  requests        144 over 3 cycle(s) (36864 in / 18432 out tokens)",
        "  throughput      1.14e+03 out tok/s (95% CI 1.14e+03-1.14e+03, CV 0.00132)"]
    assert "  energy          7.52e+03 J total, 0.408 J/out token (95% CI 0.404-0.41 J, CV 0.0087)" in table
    assert "  MBU / MFU       0.736 / 0.0197" in table


def test_the_sweep_summary_counts_a_result_of_the_wrong_shape_as_unreadable(tmp_path):
    from lem.job.callbacks import count_results

    ok = typed_result().to_dict()
    for name, data in (("0_ok", ok), ("1_failed", {**ok, "status": "failed"}),
                       ("2_wrong_type", _set(typed_result().to_dict(), ("summary", "duration_s"), "fast")),
                       ("3_not_json", "{")):
        (tmp_path / name).mkdir()
        (tmp_path / name / RESULT_FILE).write_text(data if isinstance(data, str) else json.dumps(data))
    counts, earlier = count_results(tmp_path, since=4e9)  # 2096: the ok one finished earlier
    assert counts == {"ok": 1, "failed": 1, "corrupt": 2} and earlier == 1


def test_resume_finds_the_typed_ok_result_of_the_same_config_and_skips_unreadable_ones(tmp_path):
    from lem.job.point import find_done

    sweep = tmp_path / "sweep"
    for name, data in (("0", _set(typed_result().to_dict(), ("summary", "cycles"), "3")),
                       ("1", typed_result().to_dict())):
        (sweep / name).mkdir(parents=True)
        (sweep / name / RESULT_FILE).write_text(json.dumps(data))
    done = find_done(sweep, sweep / "2", "0123456789abcdef")
    assert done == typed_result() and find_done(sweep, sweep / "2", "other") is None
