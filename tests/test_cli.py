"""`python -m lem` for real: the tiny model through transformers on the CPU, in a subprocess."""

import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def _results(root: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(root.rglob("result.json"))]


def test_default_run_measures_the_tiny_model_and_writes_a_complete_result(run_lem, tmp_path):
    proc = run_lem("progress=false", "hydra.run.dir=out")
    assert proc.returncode == 0, proc.stderr[-2000:]
    r = json.loads((tmp_path / "out" / "result.json").read_text())
    s = r["summary"]
    assert r["status"] == "ok" and r["error"] is None
    # 3 measured cycles of 16 requests, pooled
    assert (s["cycles"], s["num_requests"], s["output_tokens"]) == (3, 48, 48 * 32)
    assert [c["output_tokens"] for c in r["cycles"]] == [16 * 32] * 3
    assert s["output_tokens_per_s"] > 0 and 0 < s["ttft_s"]["mean"] <= s["e2e_s"]["mean"]
    assert s["itl_s"]["n"] == 48 * 31 and s["itl_s"]["p50"] > 0
    assert r["statistics"]["output_tokens_per_s"]["n"] == 3
    assert r["statistics"]["output_tokens_per_s"]["ci95_low"] <= r["statistics"]["output_tokens_per_s"]["mean"]
    assert r["warmup"]["batches"] >= 3 and r["warmup"]["stop_reason"] in ("converged", "max_batches",
                                                                         "time_limit")
    assert r["validity"]["valid"] is True
    assert {c["name"]: c["verdict"] for c in r["validity"]["checks"]}["tokens"] == "pass"
    assert [w["name"] for w in r["windows"]] == ["model_load", "warmup", "cycle_0", "cycle_1", "cycle_2"]
    # CPU run: no GPU energy, and the result says why instead of inventing a number
    assert s["energy_j"] is None and s["j_per_output_token"] is None
    assert "gpus=[]" in r["null_reasons"]["summary.energy_j"]
    for key in ("idle_power_w", "dynamic_energy_j", "prefill_energy_j", "cpu_energy_j", "mbu"):
        assert s[key] is None and r["null_reasons"][f"summary.{key}"]
    assert r["config"]["gpus"] == [] and len(r["config_hash"]) == 16
    assert r["environment"]["libraries"]["torch"] and r["environment"]["python"]
    assert r["precision"]["weight_dtype"] == "float32"
    req = r["requests"][0]
    assert len(req["token_times_s"]) == req["output_tokens"] == 32
    assert req["token_times_s"] == sorted(req["token_times_s"])
    assert "status" in proc.stdout and "out tok/s" in proc.stdout  # the console summary


def test_multirun_with_m_in_the_middle_runs_each_point(run_lem, tmp_path):
    proc = run_lem("backend=pytorch", "model=tiny", "-m", "precision=fp32,bf16",
                   "dataset.num_requests=4", "progress=false", "hydra.sweep.dir=sweep")
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = _results(tmp_path / "sweep")
    assert sorted(r["config"]["precision"]["name"] for r in results) == ["bf16", "fp32"]
    assert {r["precision"]["weight_dtype"] for r in results} == {"float32", "bfloat16"}
    assert all(r["status"] == "ok" and r["summary"]["output_tokens"] == 3 * 4 * 32 for r in results)
    assert len({r["config_hash"] for r in results}) == 2


def test_invalid_config_fails_before_loading_with_every_problem(run_lem, tmp_path):
    proc = run_lem("gpus=[7]", "batching.batch_size=0", "hydra.run.dir=out")
    assert proc.returncode == 2
    assert "gpus=[7]" in proc.stderr and "batching.batch_size=0" in proc.stderr
    r = json.loads((tmp_path / "out" / "result.json").read_text())
    assert r["status"] == "failed" and r["error"]["type"] == "ConfigError"
    assert r["summary"]["duration_s"] is None and "summary" in r["null_reasons"]


def test_unknown_key_is_rejected_by_the_schema(run_lem):
    proc = run_lem("backend.atn_implementation=sdpa")
    assert proc.returncode != 0 and "atn_implementation" in proc.stderr


def test_a_run_that_raises_writes_a_failed_result(run_lem, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "fine"}\n{"prompt": \n')
    proc = run_lem("dataset=jsonl", f"dataset.path={bad}", "hydra.run.dir=out")
    assert proc.returncode == 1
    assert f"{bad}:2" in proc.stderr
    r = json.loads((tmp_path / "out" / "result.json").read_text())
    assert r["status"] == "failed" and r["error"]["type"] == "WorkloadError"
    assert "Traceback" in r["error"]["traceback"]


def test_jsonl_dataset_honours_per_record_output_lengths(run_lem, tmp_path):
    proc = run_lem("dataset=jsonl", "dataset.num_requests=8", "progress=false", "hydra.run.dir=out")
    assert proc.returncode == 0, proc.stderr[-2000:]
    r = json.loads((tmp_path / "out" / "result.json").read_text())
    lines = [json.loads(x) for x in
             (Path(__file__).parents[1] / "src/lem/data/sample_prompts.jsonl").read_text().splitlines()]
    expected = [rec.get("output_len") or 32 for rec in lines[:8]]
    assert [q["output_tokens"] for q in r["requests"] if q["cycle"] == 0] == expected


def test_help_lists_groups_and_cfg_job_imports_no_torch(run_lem):
    help_proc = run_lem("--help")
    assert help_proc.returncode == 0
    for group in ("backend", "model", "dataset", "precision", "batching", "energy"):
        assert f"{group}:" in help_proc.stdout
    assert "llama3-8b-random" in help_proc.stdout and "sorted" in help_proc.stdout
    assert "backend: pytorch, pytorch_fast, tensorrt, vllm" in help_proc.stdout
    assert "_schema" not in help_proc.stdout  # type-checking schemas are not options to pick
    import subprocess
    import sys

    code = ("import atexit, runpy, sys; "
            "atexit.register(lambda: print('TORCH_LOADED', 'torch' in sys.modules)); "
            "sys.argv = ['lem', '--cfg', 'job']; runpy.run_module('lem', run_name='__main__')")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "model:" in proc.stdout and "TORCH_LOADED False" in proc.stdout


def _hf_cache_with(hf_home: Path, repo_id: str, checkpoint: Path) -> None:
    """Lay a checkpoint out the way huggingface_hub caches a download."""
    import shutil

    repo = hf_home / "hub" / f"models--{repo_id.replace('/', '--')}"
    commit = "0" * 40
    shutil.copytree(checkpoint, repo / "snapshots" / commit)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)


def test_hub_model_loads_from_the_local_cache_without_network(run_lem, tmp_path, tiny_dir,
                                                              monkeypatch):
    _hf_cache_with(tmp_path / "hf", "lem-test/tiny-cached", tiny_dir)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    proc = run_lem("model=llama3", "model.hf_id=lem-test/tiny-cached", "model.max_len=2048",
                   "dataset.num_requests=4", "progress=false", "hydra.run.dir=out")
    assert proc.returncode == 0, proc.stderr[-2000:]
    r = json.loads((tmp_path / "out" / "result.json").read_text())
    assert r["status"] == "ok" and r["summary"]["output_tokens"] == 3 * 4 * 32


def test_hub_model_missing_from_the_cache_fails_with_the_fix(run_lem, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-hf"))
    proc = run_lem("model=qwen2.5-0.5b", "gpus=[]", "hydra.run.dir=out")
    assert proc.returncode == 1
    assert "model.hf_id=Qwen/Qwen2.5-0.5B-Instruct" in proc.stderr and "hf download" in proc.stderr
    r = json.loads((tmp_path / "out" / "result.json").read_text())
    assert r["status"] == "failed" and r["error"]["type"] == "ModelNotAvailable"
