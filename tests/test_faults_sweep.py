"""Sweeps under faults, for real (tiny model, CPU, `python -m lem` subprocesses, real signals):
two sweeps into one directory, a SIGKILLed sweep, Ctrl-C and SIGTERM in the middle of a sweep."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from omegaconf import OmegaConf

pytestmark = pytest.mark.slow
FAST = ["dataset.num_requests=4", "measurement.cycles=1", "progress=false"]
LONG = ["dataset.num_requests=4000", "measurement.cycles=1", "progress=false"]  # minutes: interrupted


def _start(tmp_path: Path, lem_cache: Path, *args: str) -> subprocess.Popen:
    """`python -m lem` in its own session, so that a signal to its process group spares pytest."""
    env = {**os.environ, "LEM_CACHE_DIR": str(lem_cache), "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen([sys.executable, "-m", "lem", *args], cwd=tmp_path, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)


def _wait_for(predicate, timeout_s: float = 60.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def _measuring(sweep: Path) -> bool:
    """A point's measuring process has started loading the model (its lem.log says so)."""
    return any("loading model" in log.read_text() for log in sweep.glob("*/lem.log"))


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"


def _children(pid: int) -> list[int]:
    """The spawned measuring processes of `pid` (not multiprocessing's resource tracker)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (stat.parent / "cmdline").read_text()
        except OSError:
            continue
        if ppid == pid and "spawn_main" in cmdline:
            out.append(int(stat.parent.name))
    return out


def _group(pgid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            out.append(int(stat.parent.name))
    return out


def _results(sweep: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in sorted(sweep.glob("*/result.json"))}


def test_a_second_sweep_into_a_busy_dir_fails_fast_and_the_first_keeps_its_results(
        run_lem, tmp_path, lem_cache):
    a = _start(tmp_path, lem_cache, "-m", "seed=0,1", "dataset.num_requests=16", "measurement.cycles=1",
               "progress=false", "hydra.sweep.dir=sweep")
    _wait_for(lambda: list((tmp_path / "sweep").glob("0_*")), what="sweep A's first job directory")
    started = time.monotonic()
    b = run_lem("-m", "seed=7", *FAST, "hydra.sweep.dir=sweep", timeout=60)
    assert a.poll() is None, "sweep A ended before B tried: the test proves nothing"
    assert b.returncode == 1 and time.monotonic() - started < 30, b.stderr[-2000:]
    assert "Traceback" not in b.stderr, b.stderr[-2000:]
    assert "sweep directory sweep is in use by another lem sweep" in b.stderr
    assert f"pid {a.pid}" in b.stderr and "hydra.sweep.dir=<another directory>" in b.stderr
    out, err = a.communicate(timeout=300)  # a bound against hangs: two points under CPU contention
    assert a.returncode == 0, err[-2000:]
    assert "lem sweep: 2 ok (0 from earlier runs), 0 failed" in out
    results = _results(tmp_path / "sweep")
    assert sorted(r["config"]["seed"] for r in results.values()) == [0, 1]
    assert all(r["status"] == "ok" and r["summary"]["num_requests"] == 16 for r in results.values())
    task = OmegaConf.load(tmp_path / "sweep" / "multirun.yaml").hydra.overrides.task
    assert "seed=0,1" in task and "seed=7" not in task  # B did not even rewrite the sweep's config


def test_a_sigkilled_sweeps_lock_is_freed_once_its_measuring_process_has_stopped(
        run_lem, tmp_path, lem_cache):
    a = _start(tmp_path, lem_cache, "-m", "seed=0,1", *LONG, "hydra.sweep.dir=sweep")
    _wait_for(lambda: _measuring(tmp_path / "sweep"), what="point 0 to load its model")
    (child,) = _children(a.pid)
    os.kill(child, signal.SIGSTOP)  # holds the orphan still while it has the lock
    os.kill(a.pid, signal.SIGKILL)
    a.wait(timeout=10)
    busy = run_lem("-m", "seed=0,1", *FAST, "hydra.sweep.dir=sweep", timeout=60)
    assert busy.returncode == 1, busy.stderr[-2000:]
    assert f"pid {a.pid}, which has ended; its measuring process pid {child}" in busy.stderr
    os.kill(child, signal.SIGCONT)  # its pending parent-death SIGTERM now stops it
    _wait_for(lambda: _state(child) in ("gone", "Z"), 30, "the orphaned measuring process to stop")
    (orphaned,) = _results(tmp_path / "sweep").values()
    assert orphaned["status"] == "interrupted" and orphaned["error"]["message"] == "signal 15 (SIGTERM)"
    again = run_lem("-m", "seed=0,1", *FAST, "hydra.sweep.dir=sweep", timeout=60)
    # exit 1: the summary counts the sweep directory's interrupted point of the killed sweep
    assert "lem sweep: 2 ok (0 from earlier runs), 0 failed, 0 skipped, 1 interrupted" in again.stdout, \
        again.stderr[-2000:]
    ran = [r for r in _results(tmp_path / "sweep").values() if r["summary"]["num_requests"] == 4]
    assert sorted(r["config"]["seed"] for r in ran) == [0, 1] and all(r["status"] == "ok" for r in ran)


@pytest.mark.parametrize(("sig", "to_group", "isolate"), [
    (signal.SIGINT, True, True),     # Ctrl-C: the terminal signals the whole foreground group
    (signal.SIGTERM, False, True),   # kill / SLURM: the sweep's own process
    (signal.SIGTERM, False, False),  # the same when the point is measured in the sweep's process
], ids=["ctrl-c-to-group", "sigterm-to-main", "sigterm-in-process"])
def test_an_interrupt_stops_the_sweep_after_recording_the_current_point(
        tmp_path, lem_cache, sig, to_group, isolate):
    sweep = tmp_path / "sweep"
    a = _start(tmp_path, lem_cache, "-m", "seed=0,1,2", *LONG, f"isolate={isolate}", "hydra.sweep.dir=sweep")
    _wait_for(lambda: _measuring(sweep), what="point 0 to load its model")
    time.sleep(1)  # into warmup
    (os.killpg if to_group else os.kill)(a.pid, sig)
    out, err = a.communicate(timeout=300)  # a bound against hangs: two points under CPU contention
    assert a.returncode == 128 + sig, err[-3000:]
    assert "lem sweep: 0 ok (0 from earlier runs), 0 failed, 0 skipped, 1 interrupted (sweep)" in out
    name = signal.Signals(sig).name
    assert f"lem: sweep stopped by {name}" in err and "hydra.sweep.dir=sweep" in err
    assert "Traceback" not in err, err[-3000:]
    # points 2 and 3 were never started: not even a job directory
    assert [p.name.split("_")[0] for p in sweep.iterdir() if p.is_dir()] == ["0"]
    (r,) = _results(sweep).values()
    assert r["status"] == "interrupted" and r["error"]["message"] == f"signal {sig} ({name})"
    assert r["error"]["type"] == ("KeyboardInterrupt" if isolate else "SignalInterrupt")
    assert r["finished_at"] and r["windows"][0]["name"] == "model_load"  # what was measured so far
    _wait_for(lambda: not _group(a.pid), 10, "every process of the sweep to end")
