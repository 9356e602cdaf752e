"""Sweeps on a real SLURM cluster through `hydra/launcher=slurm` (hydra-submitit-launcher).

Needs a cluster with accounting on this machine (`.ci/start-slurm.sh`, which `.ci/run` starts):
the jobs run here, with this interpreter (submitit submits `sys.executable`) and this environment
(sbatch exports it). Skips, saying why, where SLURM, its accounting or the launcher is missing.
Every wait is bounded; jobs a failing test leaves behind are cancelled by name.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

# small points: the tiny model on the CPU, short outputs (bf16 is slow on a CPU), one warmup batch,
# one measured cycle
SMALL = ["model=tiny", "gpus=[]", "dataset.num_requests=4", "dataset.input_len=16",
         "dataset.output_len=8", "measurement.cycles=1", "measurement.warmup_max_batches=1",
         "progress=false"]
LONG = 400  # requests of the point that gets killed: long enough to be killed mid-run
SWEEP_TIMEOUT_S = 150  # a whole `python -m lem -m ...` on SLURM
KILL_DETECT_S = 120  # from the kill to the sweep's non-zero exit (with accounting: ~25 s)


def _sh(*cmd: str, timeout: float = 15) -> subprocess.CompletedProcess:
    return subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout)


def _why_no_slurm() -> str | None:
    if importlib.util.find_spec("hydra_plugins.hydra_submitit_launcher") is None:
        return "hydra-submitit-launcher is not installed (pip install 'lem[slurm]')"
    if shutil.which("sinfo") is None:
        return "no SLURM here (sinfo is not on PATH); start one with .ci/start-slurm.sh"
    try:
        nodes = _sh("sinfo", "-h", "-o", "%T")
        if nodes.returncode != 0 or not set(nodes.stdout.split()) & {"idle", "mixed", "allocated"}:
            return f"the SLURM cluster is not up (sinfo: {(nodes.stdout + nodes.stderr).strip()!r})"
        acct = _sh("sacct", "-n", "-X", "-S", "now-1minutes", "-o", "JobID")
        if acct.returncode != 0:
            return (f"SLURM accounting is not up (sacct: {acct.stderr.strip()!r}); without it a job "
                    f"killed hard makes submitit wait forever")
    except subprocess.TimeoutExpired as exc:
        return f"the SLURM cluster does not answer ({exc})"
    return None


@pytest.fixture(scope="module")
def slurm():
    reason = _why_no_slurm()
    if reason:
        pytest.skip(reason)


@pytest.fixture
def job_name(slurm):
    """A name unique to this test for its SLURM jobs; whatever is left of them is cancelled."""
    name = f"lemtest-{uuid.uuid4().hex[:8]}"
    yield name
    _sh("scancel", "--full", "-n", name)


def _cmd(sweep_dir: Path, name: str, *overrides: str) -> list[str]:
    return [sys.executable, "-m", "lem", "-m", "hydra/launcher=slurm", *SMALL, *overrides,
            f"hydra.sweep.dir={sweep_dir}", f"hydra.launcher.name={name}"]


def _env(lem_cache: Path) -> dict[str, str]:
    return {**os.environ, "LEM_CACHE_DIR": str(lem_cache), "HF_HUB_OFFLINE": "1"}


def _results(sweep_dir: Path) -> dict[int, tuple[Path, dict]]:
    """(path, result) of each point, keyed by its dataset.num_requests."""
    out = {}
    for p in sorted(sweep_dir.glob("*/result.json")):
        r = json.loads(p.read_text())
        out[r["config"]["dataset"]["num_requests"]] = (p, r)
    return out


def _tail(text: str, n: int = 3000) -> str:
    return text[-n:]


def test_a_four_point_sweep_runs_as_slurm_jobs(job_name, lem_cache, tmp_path):
    sweep = tmp_path / "sweep"
    t0 = time.monotonic()
    p = subprocess.run(_cmd(sweep, job_name, "precision=fp32,bf16", "batching.batch_size=1,2"),
                       cwd=tmp_path, env=_env(lem_cache), capture_output=True, text=True,
                       timeout=SWEEP_TIMEOUT_S)
    print(f"4-point SLURM sweep: {time.monotonic() - t0:.1f} s")
    assert p.returncode == 0, _tail(p.stdout + p.stderr)
    results = [json.loads(f.read_text()) for f in sorted(sweep.glob("*/result.json"))]
    assert len(results) == 4, _tail(p.stdout + p.stderr)
    points = set()
    for r in results:
        assert r["status"] == "ok", r.get("error")
        env = r["environment"]["env"]
        points.add((r["config"]["precision"]["name"], r["config"]["batching"]["batch_size"],
                    env["SLURM_ARRAY_JOB_ID"], env["SLURM_ARRAY_TASK_ID"], env["SLURM_JOB_ID"]))
    assert {(prec, bs) for prec, bs, *_ in points} == {("fp32", 1), ("fp32", 2), ("bf16", 1), ("bf16", 2)}
    array_ids = {a for *_, a, _, _ in points}
    assert len(array_ids) == 1 and None not in array_ids, points  # one job array ...
    assert sorted(t for *_, t, _ in points) == ["0", "1", "2", "3"]  # ... one task per point
    assert len({j for *_, j in points if j}) == 4, points
    # one point at a time (array_parallelism: 1), no GPU asked for (gpus=[]), this interpreter
    (array_id,) = array_ids
    script = (sweep / ".submitit" / array_id / f"{array_id}_submission.sh").read_text()
    for line in ("#SBATCH --array=0-3%1", "#SBATCH --gpus-per-node=0", "#SBATCH --time=60",
                 f"{shlex.quote(sys.executable)} -u -m submitit.core._submit"):
        assert line in script, script
    want = [f"{array_id}_{i}|COMPLETED" for i in range(4)]
    for _ in range(50):  # accounting saw every task complete (slurmctld reports asynchronously)
        acct = _sh("sacct", "-n", "-X", "-P", "-j", array_id, "-o", "JobID,State").stdout.split()
        if acct == want:
            break
        time.sleep(0.2)
    assert acct == want


def test_the_gpu_list_is_the_gpu_request(job_name, tmp_path):
    """gpus=[0] asks SLURM for one GPU (--gpus-per-node=1); a node without GPUs refuses it at
    submission, and the sweep says so at once."""
    gres = _sh("sinfo", "-h", "-o", "%G").stdout.split()
    if any(g.startswith("gpu") for g in gres):
        pytest.skip(f"this cluster has GPUs ({gres}): the request would be granted")
    sweep = tmp_path / "sweep"
    p = subprocess.run([*_cmd(sweep, job_name, "gpus=[0]")], cwd=tmp_path, capture_output=True,
                       text=True, timeout=60)
    assert p.returncode != 0
    assert "Invalid generic resource (gres) specification" in p.stdout + p.stderr, _tail(p.stderr)
    (script,) = (sweep / ".submitit").glob(".submission_file_*.sh")
    assert "#SBATCH --gpus-per-node=1" in script.read_text()


def _start_and_wait_measuring(cmd, cwd: Path, env, name: str, point: str, log: Path, limit_s=90):
    """Start the sweep; once lem logs inside point `point`'s job: (process, job, numeric job id)."""
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        logs = list((cwd / "sweep").glob(f"{point}_*/lem.log"))
        if logs and logs[0].stat().st_size > 0:  # lem is under way in the point's job
            running = _sh("squeue", "-h", "-n", name, "-t", "RUNNING", "-o", "%i %A").stdout.split()
            if len(running) == 2:  # one job at a time (array_parallelism: 1): this point's
                return proc, running[0], running[1]
        if proc.poll() is not None:
            raise AssertionError(f"the sweep ended (rc {proc.returncode}) before point {point} ran:\n"
                                 + _tail(log.read_text()))
        time.sleep(0.2)
    proc.kill()
    raise AssertionError(f"point {point} of {name} not under way after {limit_s} s")


def _processes_of_job(job_id: str) -> list[int]:
    """Processes still alive with this SLURM job id in their environment."""
    marker, pids = f"SLURM_JOB_ID={job_id}".encode(), []
    for env in Path("/proc").glob("[0-9]*/environ"):
        try:
            if marker in env.read_bytes().split(b"\0"):
                pids.append(int(env.parent.name))
        except OSError:
            continue
    return pids


def _wait_exit(proc: subprocess.Popen, t_kill: float) -> tuple[int, float]:
    try:
        rc = proc.wait(timeout=KILL_DETECT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    return rc, time.monotonic() - t_kill


# test_b leaves its sweep for test_c (resume of the same sweep)
_KILLED: dict = {}


def test_b_a_job_killed_hard_fails_the_sweep_cleanly_and_keeps_the_other_point(job_name, lem_cache,
                                                                                tmp_path_factory):
    """SIGKILL to every process of the job (as the OOM killer would): nothing is written, the job
    FAILs, and submitit learns it from accounting (without it, it would wait forever)."""
    root = tmp_path_factory.mktemp("killed")
    cmd = _cmd(root / "sweep", job_name, f"dataset.num_requests=4,{LONG}")  # point 0 runs first
    log = root / "sweep.log"
    proc, job, job_id = _start_and_wait_measuring(cmd, root, _env(lem_cache), job_name, "1", log)
    pids = [line.split()[0] for line in _sh("scontrol", "listpids", job_id).stdout.splitlines()[1:]]
    t_kill = time.monotonic()
    for pid in pids:
        try:
            os.kill(int(pid), signal.SIGKILL)
        except ProcessLookupError:
            pass
    rc, detect_s = _wait_exit(proc, t_kill)
    text = log.read_text()
    print(f"job {job} killed hard ({len(pids)} processes): the sweep exited rc={rc} "
          f"{detect_s:.1f} s later")
    assert pids
    assert rc != 0, _tail(text)
    assert "UncompletedJobError" in text and f"Job {job} " in text and "FAILED" in text, _tail(text)
    assert _processes_of_job(job_id) == []
    results = _results(root / "sweep")
    assert results[4][1]["status"] == "ok", results[4][1].get("error")
    assert LONG not in results or results[LONG][1]["status"] != "ok"
    _KILLED.update(cmd=cmd, root=root, job=job, name=job_name)


def test_b_scancel_interrupts_the_point_and_fails_the_sweep(job_name, lem_cache, tmp_path):
    """`scancel --signal=KILL --full` goes through SLURM's cancel (SIGTERM, then SIGKILL after
    KillWait): lem records the point as `interrupted` and the sweep exits non-zero, saying so."""
    cmd = _cmd(tmp_path / "sweep", job_name, f"dataset.num_requests={LONG}")
    log = tmp_path / "sweep.log"
    proc, job, job_id = _start_and_wait_measuring(cmd, tmp_path, _env(lem_cache), job_name, "0", log)
    t_kill = time.monotonic()
    kill = _sh("scancel", "--signal=KILL", "--full", job)
    rc, detect_s = _wait_exit(proc, t_kill)
    text = log.read_text()
    print(f"job {job} scancelled: the sweep exited rc={rc} {detect_s:.1f} s later")
    assert kill.returncode == 0, kill.stderr
    assert rc != 0, _tail(text)
    assert "nterrupted" in text, _tail(text)
    assert _processes_of_job(job_id) == []
    (_, result), = _results(tmp_path / "sweep").values()
    assert result["status"] == "interrupted", result.get("error")


def test_c_rerun_of_the_killed_sweep_runs_only_the_killed_point(slurm, lem_cache):
    """Resume: a point whose config already has an ok result in the sweep dir is skipped (its job
    returns at once, its result.json is left untouched); the killed point runs again."""
    if not _KILLED:
        pytest.skip("needs the killed sweep of test_b_a_job_killed_hard_...")
    root, cmd = _KILLED["root"], _KILLED["cmd"]
    path4, _ = _results(root / "sweep")[4]
    bytes4, mtime4 = path4.read_bytes(), path4.stat().st_mtime_ns
    t0 = time.monotonic()
    try:
        p = subprocess.run(cmd, cwd=root, env=_env(lem_cache), capture_output=True, text=True,
                           timeout=SWEEP_TIMEOUT_S)
    finally:
        _sh("scancel", "--full", "-n", _KILLED["name"])
    print(f"resumed SLURM sweep: {time.monotonic() - t0:.1f} s")
    assert p.returncode == 0, _tail(p.stdout + p.stderr)
    assert path4.read_bytes() == bytes4 and path4.stat().st_mtime_ns == mtime4, \
        "the point that was already done ran again"
    results = _results(root / "sweep")
    assert results[LONG][1]["status"] == "ok", results[LONG][1].get("error")
    rerun_array = results[LONG][1]["environment"]["env"]["SLURM_ARRAY_JOB_ID"]
    assert rerun_array != _KILLED["job"].split("_")[0]  # measured by the re-run's job array
