"""Sweeps for real (tiny model, CPU, subprocesses): failure isolation, skipped points, resume,
dry run, interruption and a killed measuring process."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
FAST = ["dataset.num_requests=4", "measurement.cycles=1", "progress=false"]


def _results(sweep: Path) -> dict[str, dict]:
    return {str(p.parent): json.loads(p.read_text()) for p in sorted(sweep.rglob("result.json"))}


def _jsonl(path: Path, valid: bool) -> Path:
    path.write_text('{"prompt": "a fine prompt"}\n' + ('{"prompt": "ok"}\n' if valid else "{oops\n"))
    return path


def test_a_failing_point_does_not_stop_the_sweep_and_resume_reruns_only_it(run_lem, tmp_path):
    good, bad = _jsonl(tmp_path / "good.jsonl", True), _jsonl(tmp_path / "bad.jsonl", False)
    args = ["-m", "dataset=jsonl", f"dataset.path={good},{bad}", *FAST, "hydra.sweep.dir=sweep"]
    first = run_lem(*args)
    assert first.returncode == 1, first.stderr[-2000:]  # a failed point: the sweep exits non-zero
    assert "lem sweep: 1 ok (0 from earlier runs), 1 failed, 0 skipped" in first.stdout
    results = _results(tmp_path / "sweep")
    by_status = {r["status"]: name for name, r in results.items()}
    assert set(by_status) == {"ok", "failed"}
    assert results[by_status["failed"]]["error"]["type"] == "WorkloadError"
    ok_file = Path(by_status["ok"]) / "result.json"
    ok_bytes, ok_mtime = ok_file.read_bytes(), ok_file.stat().st_mtime
    _jsonl(bad, True)  # fix the data, run the same command again
    second = run_lem(*args)
    assert second.returncode == 0, second.stderr[-2000:]
    assert "lem [done]" in second.stdout and "1 ok (1 from earlier runs)" not in second.stdout
    assert "lem sweep: 2 ok (1 from earlier runs), 0 failed" in second.stdout
    assert ok_file.read_bytes() == ok_bytes and ok_file.stat().st_mtime == ok_mtime
    assert all(r["status"] == "ok" for r in _results(tmp_path / "sweep").values())


def test_impossible_points_are_skipped_with_the_reason_and_dry_run_writes_nothing(run_lem, tmp_path):
    dry = run_lem("-m", "dry_run=true", "precision=fp32,int8", *FAST, "hydra.sweep.dir=sweep")
    assert dry.returncode == 0, dry.stderr[-2000:]
    assert "lem dry run: 1 to run, 1 to skip, 0 already done" in dry.stdout
    assert _results(tmp_path / "sweep") == {}
    real = run_lem("-m", "precision=fp32,int8", *FAST, "hydra.sweep.dir=sweep")
    assert real.returncode == 0, real.stderr[-2000:]
    results = _results(tmp_path / "sweep")
    skipped = [r for r in results.values() if r["status"] == "skipped"]
    assert len(results) == 2 and len(skipped) == 1
    assert "bitsandbytes" in skipped[0]["error"]["message"]
    again = run_lem("-m", "dry_run=true", "precision=fp32,int8", *FAST, "hydra.sweep.dir=sweep")
    assert "lem dry run: 0 to run, 1 to skip, 1 already done" in again.stdout


def _start(tmp_path: Path, lem_cache: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, "LEM_CACHE_DIR": str(lem_cache)}
    return subprocess.Popen([sys.executable, "-m", "lem", *args], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(predicate, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and "spawn_main" in (stat.parent / "cmdline").read_text():
            out.append(int(stat.parent.name))
    return out


LONG = ["dataset.num_requests=4000", "progress=false", "hydra.run.dir=out"]


def test_sigterm_leaves_an_interrupted_result_and_no_partial_files(tmp_path, lem_cache):
    proc = _start(tmp_path, lem_cache, *LONG)
    log = tmp_path / "out" / "lem.log"
    _wait_for(lambda: log.is_file() and "loading model" in log.read_text())
    time.sleep(3)  # into warmup or the cycles
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode != 0
    r = json.loads((tmp_path / "out" / "result.json").read_text())
    assert r["status"] == "interrupted" and "signal" in r["error"]["message"]
    assert r["finished_at"] and r["windows"][0]["name"] == "model_load"  # what was measured so far
    assert not list((tmp_path / "out").glob(".*tmp")), "a half-written file was left behind"


def test_a_killed_measuring_process_still_leaves_a_failed_result(tmp_path, lem_cache):
    proc = _start(tmp_path, lem_cache, *LONG)
    _wait_for(lambda: _children(proc.pid))
    time.sleep(2)
    for child in _children(proc.pid):
        os.kill(child, signal.SIGKILL)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1
    r = json.loads((tmp_path / "out" / "result.json").read_text())
    assert r["status"] == "failed" and r["error"]["type"] == "ChildProcessDied"
    assert "SIGKILL" in r["error"]["message"] and len(r["config_hash"]) == 16


def test_objective_is_the_metric_or_the_penalty_beyond_the_latency_bound():
    from omegaconf import OmegaConf

    from lem.job.point import objective
    from lem.result.schema import Result

    result = Result.from_dict({"summary": {"j_per_output_token": 0.5, "ttft_s": {"p99": 0.2}}})
    cfg = OmegaConf.create({"objective": {"metric": "j_per_output_token", "max_ttft_p99_s": None,
                                          "penalty": 1e9}})
    assert objective(result, cfg) == 0.5
    cfg.objective.max_ttft_p99_s = 0.1
    assert objective(result, cfg) == 1e9
    cfg.objective.max_ttft_p99_s = 1.0
    assert objective(result, cfg) == 0.5
    assert objective(Result.from_dict({"summary": {"j_per_output_token": None, "ttft_s": {}}}),
                     OmegaConf.create({"objective": {"metric": "j_per_output_token",
                                                     "max_ttft_p99_s": None, "penalty": 1e9}})) is None
