"""Result schema and the atomic result.json writer."""

from __future__ import annotations

import json

import pytest

from lem.result.schema import (
    RESULT_FILE,
    SCHEMA_VERSION,
    Result,
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
