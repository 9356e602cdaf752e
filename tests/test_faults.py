"""The fault drill (issue 17): bad inputs refused clearly, nothing lost. Real processes through
`python -m lem`, real files. Sweep locking and signals: tests/test_faults_sweep.py; aggregation:
tests/test_faults_aggregate.py."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

FAST = ["progress=false", "measurement.cycles=1", "dataset.num_requests=2", "measurement.warmup_max_batches=1"]


def _refused(run_lem, tmp_path, *overrides: str) -> str:
    """The run exits 2 before any work, with lem's message, not a traceback."""
    p = run_lem(*FAST, *overrides, f"hydra.run.dir={tmp_path / 'job'}")
    assert p.returncode == 2, (p.returncode, p.stderr[-2000:])
    assert "Traceback" not in p.stderr, p.stderr[-2000:]
    return p.stderr


@pytest.mark.parametrize(("overrides", "needle"), [
    (["measurement.cycles=0"], "measurement.cycles=0 must be >= 1"),
    (["measurement.cycles=-1"], "measurement.cycles=-1 must be >= 1"),
    (["measurement.warmup_cv=-0.1"], "measurement.warmup_cv=-0.1 must be >= 0"),
    (["energy.sample_period_s=-1"], "energy.sample_period_s=-1.0 must be >= 0"),
    (["measurement.cooldown_max_s=-5"], "measurement.cooldown_max_s=-5.0 must be >= 0"),
    (["energy.cpu=bogus"], "energy.cpu=bogus is unknown"),
    (["shutdown_max_s=-1"], "shutdown_max_s=-1.0 must be >= 0"),
    (["+foo=1"], "foo is not a lem option"),
    (["gpus=abc"], "gpus=abc is not a list of GPU indices"),
])
def test_invalid_values_exit_2_naming_the_key(run_lem, tmp_path, overrides, needle):
    err = _refused(run_lem, tmp_path, *overrides)
    assert needle in err, err[-2000:]
    result = json.loads((tmp_path / "job" / "result.json").read_text())
    assert result["status"] == "failed" and result["error"]["type"] == "ConfigError"


def test_several_problems_come_at_once(run_lem, tmp_path):
    err = _refused(run_lem, tmp_path, "measurement.cycles=0", "energy.sample_period_s=-1", "+foo=1")
    assert "3 problem(s)" in err and "cycles" in err and "sample_period_s" in err and "foo" in err


def test_rapl_asked_for_where_it_cannot_be_read_fails_before_loading(run_lem, tmp_path):
    if Path("/sys/class/powercap/intel-rapl:0/energy_uj").exists():
        pytest.skip("this machine has readable RAPL")
    p = run_lem(*FAST, "energy.cpu=rapl", f"hydra.run.dir={tmp_path / 'job'}")
    assert p.returncode == 1 and "[rapl] energy.cpu=rapl but RAPL is unreadable" in p.stderr
    r = json.loads((tmp_path / "job" / "result.json").read_text())
    assert r["status"] == "failed" and r["error"]["type"] == "PreflightError"
    assert "model_load" not in r["phase_s"]


def test_result_files_follow_the_umask(run_lem, tmp_path):
    """On a shared cluster filesystem the group reads results: mode 0644 under umask 022."""
    old = os.umask(0o022)  # inherited by the child
    try:
        p = run_lem(*FAST, f"hydra.run.dir={tmp_path / 'job'}")
    finally:
        os.umask(old)
    assert p.returncode == 0, p.stderr[-2000:]
    mode = stat.S_IMODE((tmp_path / "job" / "result.json").stat().st_mode)
    assert mode == 0o644, oct(mode)


def test_an_interrupt_in_a_later_cycle_keeps_the_completed_cycles_requests(lem_cache, tmp_path):
    """SIGTERM (a SLURM preemption) during cycle 2 of 3: the `interrupted` result still holds every
    request record of cycle 1, which had completed."""
    import signal
    import subprocess
    import sys

    env = {**os.environ, "LEM_CACHE_DIR": str(lem_cache), "HF_HUB_OFFLINE": "1"}
    job = tmp_path / "job"
    p = subprocess.Popen([sys.executable, "-m", "lem", "measurement.cycles=3", "dataset.num_requests=12",
                          "batching.batch_size=1", "dataset.output_len=96", "measurement.warmup_max_batches=1",
                          "measurement.cooldown_max_s=0", f"hydra.run.dir={job}"],
                         cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True)
    seen = ""
    while "cycle 2/3" not in seen:  # tqdm's progress line of the second cycle
        chunk = p.stderr.read(64)
        assert chunk, f"lem ended before cycle 2: {seen[-2000:]}"
        seen += chunk
    p.send_signal(signal.SIGTERM)
    p.stderr.read()
    assert p.wait(timeout=120) != 0
    r = json.loads((job / "result.json").read_text())
    assert r["status"] == "interrupted"
    first = [q for q in r["requests"] if q["cycle"] == 0]
    assert len(first) == 12 and all(q["output_tokens"] == 96 for q in first)
    assert len(r["cycles"]) >= 1 and r["cycles"][0]["output_tokens"] == 12 * 96


@pytest.mark.parametrize(("overrides", "needle"), [
    (["backend=nope"], "backend=nope: no such option in group 'backend'; choose one of pytorch"),
    (["dataset.num_requests=abc"], "dataset.num_requests"),
    (["measurement.cycles=["], "no viable alternative"),
    (["foo=1"], "Key 'foo' not in 'LemConfig'"),
])
def test_errors_hydra_finds_exit_2_with_lems_message(run_lem, tmp_path, overrides, needle):
    p = run_lem(*FAST, *overrides, f"hydra.run.dir={tmp_path / 'job'}")
    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr[-2000:]
    assert p.stderr.startswith("lem: invalid configuration") and needle in p.stderr, p.stderr
    assert "_schema" not in p.stderr  # lem's internal schema entries are not options


def test_unknown_group_options_come_at_once_sweep_values_too(run_lem, tmp_path):
    p = run_lem("backend=nope", "model=nope2", "-m", "precision=fp16,zz", "dataset=tiny-ok-or-not",
                f"hydra.sweep.dir={tmp_path / 'sweep'}")
    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr[-2000:]
    for needle in ("backend=nope:", "model=nope2:", "precision=zz:", "dataset=tiny-ok-or-not:"):
        assert needle in p.stderr, (needle, p.stderr)
    assert "precision=fp16:" not in p.stderr and "4 problem(s)" in p.stderr
    assert not (tmp_path / "sweep").exists()  # refused before Hydra made anything


def test_an_option_in_the_user_config_dir_is_an_option(run_lem, tmp_path, monkeypatch):
    from lem.paths import conf_dir

    user = tmp_path / "userconf"
    (user / "model").mkdir(parents=True)
    (user / "model" / "mine.yaml").write_text((conf_dir() / "model" / "tiny.yaml").read_text())
    monkeypatch.setenv("LEM_CONFIG_DIR", str(user))
    p = run_lem("model=mine", "--cfg", "job")
    assert p.returncode == 0, p.stderr[-2000:]


def test_multirun_with_cfg_says_which_flag_to_drop(run_lem, tmp_path):
    p = run_lem("-m", "precision=fp16,bf16", "--cfg", "job")
    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr[-2000:]
    assert "drop -m" in p.stderr and "drop --cfg" in p.stderr


def test_malformed_local_settings_name_file_and_line(run_lem, tmp_path, monkeypatch):
    local = tmp_path / "cfg" / "local"
    local.mkdir(parents=True)
    (local / "default.yaml").write_text("output_root: /tmp\n  bad: [unclosed\n")
    monkeypatch.setenv("LEM_CONFIG_DIR", str(tmp_path / "cfg"))
    p = run_lem(*FAST)
    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr[-2000:]
    assert f"{local / 'default.yaml'}: not valid YAML: line 2, column 6" in p.stderr, p.stderr


def test_output_root_under_a_file_is_refused_naming_the_path(run_lem, tmp_path):
    (tmp_path / "afile").write_text("")
    p = run_lem(*FAST, f"output_root={tmp_path / 'afile' / 'sub'}")
    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr[-2000:]
    assert f"cannot create or write {tmp_path / 'afile' / 'sub'}" in p.stderr
    assert "Not a directory" in p.stderr and "output_root=" in p.stderr


def test_an_unwritable_output_root_is_refused_naming_the_path(run_lem, tmp_path):
    # sysfs refuses new directories even to root (CI runs as root, so a chmod'ed dir would not do)
    target = Path("/sys/lem-unwritable-test")
    if not Path("/sys").is_dir() or os.access("/sys", os.W_OK) and _can_mkdir(target):
        pytest.skip("no directory here that refuses mkdir to this user (/sys is Linux's)")
    p = run_lem(*FAST, f"output_root={target}")
    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr[-2000:]
    assert f"cannot create or write {target}" in p.stderr and "output_root=" in p.stderr


def _can_mkdir(path: Path) -> bool:
    try:
        path.mkdir()
    except OSError:
        return False
    path.rmdir()
    return True


def test_a_sweep_of_only_invalid_points_exits_2(run_lem, tmp_path):
    p = run_lem("-m", *FAST, "measurement.cycles=0,-1", f"hydra.sweep.dir={tmp_path / 'sweep'}")
    assert p.returncode == 2, p.stderr[-2000:]
    assert "2 skipped" in p.stdout and "measurement.cycles=0 must be >= 1" in p.stdout


def test_a_disk_that_fills_during_the_run_names_enospc_where_the_user_looks(lem_cache, tmp_path):
    """The disk fills while lem measures: the cause (ENOSPC) reaches the console, and the result
    once there is room again, not only lem.log."""
    import subprocess
    import sys

    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(disk)],
                             capture_output=True, text=True)
    if mounted.returncode:
        pytest.skip(f"cannot mount a small tmpfs here ({mounted.stderr.strip()}): needs root")
    try:
        env = {**os.environ, "LEM_CACHE_DIR": str(lem_cache), "HF_HUB_OFFLINE": "1"}
        args = ["measurement.cycles=2", "dataset.num_requests=8", "batching.batch_size=1",
                "dataset.output_len=96", "measurement.cooldown_max_s=0", "preflight.min_free_disk_mb=0",
                f"hydra.run.dir={disk / 'job'}"]
        p = subprocess.Popen([sys.executable, "-m", "lem", *args], cwd=tmp_path, env=env,
                             stderr=subprocess.PIPE, text=True)
        seen = ""
        while "cycle 1/2" not in seen:
            chunk = p.stderr.read(64)
            assert chunk, seen[-2000:]
            seen += chunk
        with open(disk / "filler", "wb") as f:  # fill the disk to the last byte
            try:
                while True:
                    f.write(b"\0" * 65536)
                    f.flush()
            except OSError:
                pass
        err = seen + p.stderr.read()
        assert p.wait(timeout=120) == 1
        assert "No space left on device" in err and "Traceback" not in err.split("cycle 1/2")[-1], err[-3000:]
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def test_the_sampler_process_dies_with_a_killed_run(tmp_path):
    """SIGKILL (the OOM killer) of the process that started the sampler leaves no orphan polling
    NVML on the GPUs the next run measures (replayed H200 NVML)."""
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    trace = Path(__file__).parent / "data" / "h200_nvml_trace_2026-11-29.csv"
    env = {**os.environ, "LEM_NVML_MODULE": "tests.fakes.replay_nvml",
           "LEM_REPLAY_TRACE": str(trace), "LEM_REPLAY_T0_NS": str(time.time_ns())}
    code = ("import time; from lem.measure.sampler import Sampler; s = Sampler([0], 0.05); s.start(); "
            "print(s._proc.pid, flush=True); time.sleep(60)")
    run = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env,
                           cwd=Path(__file__).parents[1])
    sampler_pid = int(run.stdout.readline())
    os.kill(sampler_pid, 0)  # alive while its parent is
    run.send_signal(signal.SIGKILL)
    run.wait(10)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _alive(sampler_pid):
        time.sleep(0.1)
    assert not _alive(sampler_pid), "the sampler outlived the run that started it"


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"  # a zombie has ended
    except FileNotFoundError:
        return False


SHUTDOWN_HOOK = '''
import os
if os.environ.get("LEM_TEST_SHUTDOWN"):
    import signal
    from lem.backends.pytorch.backend import PyTorchBackend

    def close(self):  # what a hung engine shutdown meets: the scheduler's SIGKILL, or an error
        how = os.environ["LEM_TEST_SHUTDOWN"]
        if how == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        if how == "hang":  # an engine core child that never stops, and a shutdown that waits for it
            import subprocess
            import time

            core = subprocess.Popen(["sleep", "3600"])
            with open(os.environ["LEM_TEST_CORE_PID"], "w") as f:
                f.write(str(core.pid))
            time.sleep(3600)
        raise RuntimeError("engine core did not stop")

    PyTorchBackend.close = close
'''


@pytest.mark.parametrize(("how", "isolate", "warning"), [
    ("kill", "true", "ended with signal 9 during engine shutdown, after its measurement was complete"),
    ("raise", "true", "engine shutdown failed after the measurement was complete and written: "
                      "RuntimeError: engine core did not stop"),
    ("kill", "false", None),  # one process, killed: what it wrote before the shutdown is all there is
])
def test_a_measurement_survives_an_engine_shutdown_that_dies(lem_cache, tmp_path, how, isolate, warning):
    """The result is written before the engine shuts down: a shutdown killed by the scheduler (vLLM's
    engine core has hung there until a time limit) or failing loses nothing measured."""
    import subprocess
    import sys

    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(SHUTDOWN_HOOK)  # runs in the spawned measuring child too
    src = Path(__file__).resolve().parents[1] / "src"
    env = {**os.environ, "LEM_CACHE_DIR": str(lem_cache), "HF_HUB_OFFLINE": "1", "LEM_TEST_SHUTDOWN": how,
           "PYTHONPATH": os.pathsep.join([str(hook), str(src), os.environ.get("PYTHONPATH", "")])}
    job = tmp_path / "job"
    p = subprocess.run([sys.executable, "-m", "lem", *FAST, f"isolate={isolate}", f"hydra.run.dir={job}"],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    r = json.loads((job / "result.json").read_text())
    assert r["status"] == "ok" and r["error"] is None, (p.returncode, p.stderr[-2000:])
    assert r["summary"]["output_tokens"] > 0 and len(r["requests"]) == 2 and r["finished_at"]
    if warning:
        assert p.returncode == 0 and any(warning in w for w in r["warnings"]), r["warnings"]
    else:
        assert p.returncode == -9


def test_a_hung_engine_shutdown_is_cut_short_with_its_children_after_the_result_is_written(lem_cache, tmp_path):
    """A shutdown that never returns (vLLM's engine core has hung there) would stall a sweep until
    the scheduler's time limit: lem kills the measuring process and its children shutdown_max_s
    after the measurement is written; the result stays ok, saying so, and the sweep goes on."""
    import subprocess
    import sys
    import time

    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(SHUTDOWN_HOOK)
    core_pid = tmp_path / "core.pid"
    src = Path(__file__).resolve().parents[1] / "src"
    env = {**os.environ, "LEM_CACHE_DIR": str(lem_cache), "HF_HUB_OFFLINE": "1", "LEM_TEST_SHUTDOWN": "hang",
           "LEM_TEST_CORE_PID": str(core_pid),
           "PYTHONPATH": os.pathsep.join([str(hook), str(src), os.environ.get("PYTHONPATH", "")])}
    t0 = time.monotonic()
    p = subprocess.run([sys.executable, "-m", "lem", "-m", *FAST, "shutdown_max_s=2", "seed=1,2",
                        f"hydra.sweep.dir={tmp_path / 'sweep'}"],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    assert time.monotonic() - t0 < 240  # never the hour the shutdown would have taken
    results = sorted((tmp_path / "sweep").glob("*/result.json"))
    assert len(results) == 2  # the second point ran after the first one's shutdown was cut short
    for path in results:
        r = json.loads(path.read_text())
        assert r["status"] == "ok" and r["summary"]["output_tokens"] > 0
        assert any("killed by lem: its engine's shutdown outlasted shutdown_max_s=2" in w
                   for w in r["warnings"]), r["warnings"]
    pid = int(core_pid.read_text())
    time.sleep(0.5)
    assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]
