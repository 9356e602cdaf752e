"""Pre-flight checks with their inputs faked at the system boundary: statvfs of /dev/shm, the CUDA
probe command, disk usage, torch's version.py, and NVML (a replayed H200 through LEM_NVML_MODULE).
One test runs `python -m lem` end to end to show a failing check stops the run before the model."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from lem.backends.tensorrt import preflight as trt_preflight
from lem.checks import preflight
from lem.machine import devices
from lem.machine.host import GpuInfo, HostInfo

TRACE = Path(__file__).parent / "data" / "h200_nvml_trace_2026-11-29.csv"
MIB = 2**20


def fake_statvfs(free_mb: float, size_mb: float | None = None):
    size_mb = free_mb if size_mb is None else size_mb
    return lambda path: SimpleNamespace(f_frsize=4096, f_bavail=int(free_mb * MIB / 4096),
                                        f_blocks=int(size_mb * MIB / 4096))


@pytest.fixture
def replayed_h200(monkeypatch):
    return replay_h200(monkeypatch)


def replay_h200(monkeypatch):
    """NVML answers as the H200 of the recorded trace (tests/fakes/doctor_nvml.py adds MIG and
    foreign processes on request)."""
    monkeypatch.setenv("LEM_NVML_MODULE", "tests.fakes.doctor_nvml")
    monkeypatch.setenv("LEM_REPLAY_TRACE", str(TRACE))
    monkeypatch.setenv("LEM_REPLAY_T0_NS", str(time.time_ns()))
    import tests.fakes.replay_nvml as replay

    monkeypatch.setattr(replay, "_trace", None)
    return monkeypatch


def probe_answering(monkeypatch, tmp_path, body: str):
    """Make the CUDA probe a script (it sees the probe's environment)."""
    script = tmp_path / "probe.py"
    script.write_text("import json, os, sys, time\n" + body)
    monkeypatch.setattr(preflight, "CUDA_PROBE", [sys.executable, str(script)])


# /dev/shm ------------------------------------------------------------------------------------

def test_docker_default_shm_fails_a_vllm_run_with_the_fix(monkeypatch):
    monkeypatch.setattr(preflight, "statvfs", fake_statvfs(64))
    c = preflight.check_shm("vllm", 1024)
    assert c.verdict == "fail"
    assert "64 MiB free" in c.detail and "preflight.min_shm_mb" in c.detail
    assert "--ipc=host" in c.fix and "shm_size" in c.fix


def test_large_shm_passes_and_single_process_backends_skip(monkeypatch):
    monkeypatch.setattr(preflight, "statvfs", fake_statvfs(16384, 32768))
    assert preflight.check_shm("tensorrt", 1024).verdict == "pass"
    assert "16384 MiB free of 32768 MiB" in preflight.check_shm("vllm", 1024).detail
    monkeypatch.setattr(preflight, "statvfs", fake_statvfs(1))
    assert preflight.check_shm("pytorch", 1024).verdict == "skipped"


def test_pytorch_workers_need_shm_too(monkeypatch, compose):
    monkeypatch.setattr(preflight, "statvfs", fake_statvfs(64))
    c = preflight.check_shm("pytorch", 1024, "tensor")
    assert c.verdict == "fail" and "backend.parallel=tensor" in c.detail
    cfg = compose(["gpus=[]", "backend.parallel=data"])
    checks = {c.name: c for c in preflight.run_checks(cfg, HostInfo(), Path("."))}
    assert checks["shm"].verdict == "fail" and "backend.parallel=data" in checks["shm"].detail


def test_free_shm_counts_not_its_size(monkeypatch):
    """A big tmpfs filled by leftover segments is as bad as a small one."""
    monkeypatch.setattr(preflight, "statvfs", fake_statvfs(100, 65536))
    assert preflight.check_shm("vllm", 1024).verdict == "fail"


def test_missing_shm_mount_fails(monkeypatch):
    def no_shm(path):
        raise FileNotFoundError(2, "No such file or directory")

    monkeypatch.setattr(preflight, "statvfs", no_shm)
    c = preflight.check_shm("vllm", 1024)
    assert c.verdict == "fail" and "No such file" in c.detail and "--shm-size" in c.fix


# CUDA ----------------------------------------------------------------------------------------

def test_cuda_probe_that_hangs_is_reported_as_hung(monkeypatch, tmp_path):
    probe_answering(monkeypatch, tmp_path, "time.sleep(30)\n")
    t0 = time.monotonic()
    c = preflight.check_cuda([0], timeout_s=1.0)
    assert time.monotonic() - t0 < 10
    assert c.verdict == "fail" and "hung" in c.detail
    assert "preflight.cuda_init_timeout_s" in c.fix and "--gpus all" in c.fix


def test_cuda_probe_sees_exactly_the_requested_gpus(monkeypatch, tmp_path):
    probe_answering(monkeypatch, tmp_path, (
        "v = os.environ['CUDA_VISIBLE_DEVICES']\n"
        "print(json.dumps({'ok': True, 'devices': 1, 'driver_cuda': '13.0', 'visible': v}))\n"))
    c = preflight.check_cuda([2, 3], timeout_s=30)
    assert c.verdict == "fail"
    assert "CUDA sees 1 of them" in c.detail and "CUDA_VISIBLE_DEVICES='2,3'" in c.detail


def test_cuda_probe_with_enough_devices_passes(monkeypatch, tmp_path):
    probe_answering(monkeypatch, tmp_path,
                    "print(json.dumps({'ok': True, 'devices': 2, 'driver_cuda': '13.0'}))\n")
    c = preflight.check_cuda([0, 1], timeout_s=30)
    assert c.verdict == "pass" and "13.0" in c.detail


def test_cuda_probe_crash_is_a_failure_not_an_exception(monkeypatch, tmp_path):
    probe_answering(monkeypatch, tmp_path, "sys.exit('segfault-ish')\n")
    c = preflight.check_cuda([0], timeout_s=30)
    assert c.verdict == "fail" and "crashed" in c.detail and "segfault-ish" in c.detail


@pytest.mark.skipif(Path("/dev/nvidiactl").exists(), reason="this machine has an NVIDIA driver")
def test_real_probe_on_a_machine_without_driver_names_the_library():
    c = preflight.check_cuda([0], timeout_s=30)
    assert c.verdict == "fail" and "libcuda.so.1" in c.detail


def test_cpu_runs_skip_cuda_checks():
    assert preflight.check_cuda([], timeout_s=0.001).verdict == "skipped"
    assert preflight.check_torch_cuda([]).verdict == "skipped"


def test_torch_build_is_read_without_importing_torch(tmp_path):
    cpu = tmp_path / "cpu.py"
    cpu.write_text("__version__ = '2.13.0+cpu'\ndebug = False\ncuda: Optional[str] = None\n")
    gpu = tmp_path / "gpu.py"
    gpu.write_text("__version__ = '2.11.0+cu130'\ncuda: Optional[str] = '13.0'\n")
    old = tmp_path / "old.py"
    old.write_text("__version__ = '2.4.0'\ncuda = '12.1'\n")
    assert preflight.parse_torch_version(cpu) == ("2.13.0+cpu", None)
    assert preflight.parse_torch_version(gpu) == ("2.11.0+cu130", "13.0")
    assert preflight.parse_torch_version(old) == ("2.4.0", "12.1")
    assert preflight.parse_torch_version(tmp_path / "absent.py") == (None, None)


def test_cpu_only_torch_fails_a_gpu_run(monkeypatch):
    monkeypatch.setattr(preflight, "torch_build", lambda: ("2.13.0+cpu", None))
    c = preflight.check_torch_cuda([0])
    assert c.verdict == "fail" and "CPU-only" in c.detail and "constraints.txt" in c.fix
    monkeypatch.setattr(preflight, "torch_build", lambda: ("2.11.0+cu130", "13.0"))
    assert preflight.check_torch_cuda([0]).verdict == "pass"


# GPUs, disk -------------------------------------------------------------------------

def host_with(*ccs) -> HostInfo:
    return HostInfo(gpus=[GpuInfo(i, "GPU", f"GPU-{i}", cc, 1000.0) for i, cc in enumerate(ccs)])


def test_tensorrt_refuses_gpus_older_than_ampere():
    c = trt_preflight.check_tensorrt_arch("tensorrt", [0, 1], host_with((9, 0), (7, 5)))
    assert c.verdict == "fail" and "{1: (7, 5)}" in c.detail and "backend=vllm" in c.fix


def test_tensorrt_warns_on_unlisted_and_passes_hopper():
    assert trt_preflight.check_tensorrt_arch("tensorrt", [0], host_with((8, 6))).verdict == "warn"
    assert trt_preflight.check_tensorrt_arch("tensorrt", [0], host_with((9, 0))).verdict == "pass"
    # only the run's GPUs count, and other backends are not TensorRT-LLM's business
    assert trt_preflight.check_tensorrt_arch("tensorrt", [0], host_with((9, 0), (6, 0))).verdict == "pass"
    assert trt_preflight.check_tensorrt_arch("vllm", [0], host_with((7, 0))).verdict == "skipped"


def test_a_backend_in_another_engines_container_is_routed_to_its_own(monkeypatch):
    monkeypatch.setenv("LEM_CONTAINER", "pytorch")
    c = preflight.check_container("vllm")
    assert c.verdict == "warn" and "lem-pytorch" in c.detail
    assert "docker compose run --rm vllm python -m lem backend=vllm" in c.fix
    assert preflight.check_container("pytorch").verdict == "pass"
    monkeypatch.delenv("LEM_CONTAINER")
    assert preflight.check_container("vllm").verdict == "skipped"


def test_full_disk_fails_naming_the_key_and_output_root(monkeypatch, tmp_path):
    monkeypatch.setattr(preflight, "disk_usage", lambda p: SimpleNamespace(free=100 * MIB))
    c = preflight.check_disk(tmp_path / "outputs" / "2026-11-30" / "job", 1024)
    assert c.verdict == "fail"
    assert "100 MiB free" in c.detail and str(tmp_path) in c.detail
    assert "preflight.min_free_disk_mb" in c.detail and "output_root" in c.fix


def test_disk_is_read_where_the_job_dir_will_be(tmp_path):
    assert preflight.existing_ancestor(tmp_path / "a" / "b") == tmp_path
    assert preflight.check_disk(tmp_path / "a", 0.001).verdict == "pass"


# foreign processes (NVML: the replayed H200) ---------------------------------------------------

@pytest.mark.parametrize(("policy", "verdict"), [("warn", "warn"), ("refuse", "fail"),
                                                 ("ignore", "skipped")])
def test_foreign_processes_follow_the_configured_policy(replayed_h200, policy, verdict):
    replayed_h200.setenv("LEM_FAKE_FOREIGN_PIDS", "4242")
    c = preflight.check_foreign_processes([0], policy)
    assert c.verdict == verdict
    if verdict != "skipped":
        assert "4242" in c.detail and "preflight.foreign_processes=refuse" in c.fix


def test_idle_gpu_passes_and_unknown_policy_fails(replayed_h200):
    assert preflight.check_foreign_processes([0], "warn").verdict == "pass"
    c = preflight.check_foreign_processes([0], "maybe")
    assert c.verdict == "fail" and "preflight.foreign_processes=maybe" in c.detail


# the whole pre-flight of a composed config ---------------------------------------------------

def test_enforce_lists_every_failure_at_once(compose, monkeypatch, tmp_path):
    monkeypatch.setattr(preflight, "disk_usage", lambda p: SimpleNamespace(free=1 * MIB))
    monkeypatch.setattr(preflight, "torch_build", lambda: ("2.13.0+cpu", None))
    probe_answering(monkeypatch, tmp_path, "time.sleep(30)\n")
    cfg = compose(["gpus=[0]", "preflight.min_free_disk_mb=50", "preflight.cuda_init_timeout_s=0.5"])
    with pytest.raises(preflight.PreflightError) as err:
        preflight.enforce(cfg, HostInfo(), tmp_path)
    assert [c.name for c in err.value.failed] == ["torch_cuda", "cuda", "disk"]
    msg = str(err.value)
    assert "[torch_cuda]" in msg and "[cuda]" in msg and "[disk]" in msg and msg.count("fix:") == 3
    assert "python -m lem.doctor" in msg


def test_enforce_returns_warnings(compose, replayed_h200, monkeypatch, tmp_path):
    replayed_h200.setenv("LEM_FAKE_FOREIGN_PIDS", "4242")
    monkeypatch.setattr(preflight, "torch_build", lambda: ("2.11.0+cu130", "13.0"))
    probe_answering(monkeypatch, tmp_path,
                    "print(json.dumps({'ok': True, 'devices': 1, 'driver_cuda': '13.0'}))\n")
    cfg = compose(["gpus=[0]"])
    warnings = preflight.enforce(cfg, host_with((9, 0)), tmp_path)
    assert len(warnings) == 1 and "[foreign_processes]" in warnings[0] and "4242" in warnings[0]


@pytest.mark.slow
def test_a_failing_check_stops_the_run_before_the_model_loads(run_lem, tmp_path):
    """End to end: result.json says failed with the check and the fix; nothing was loaded."""
    p = run_lem("preflight.min_free_disk_mb=1e12", "progress=false", f"hydra.run.dir={tmp_path}/run")
    assert p.returncode == 1, p.stderr[-2000:]
    r = json.loads((tmp_path / "run" / "result.json").read_text())
    assert r["status"] == "failed" and r["error"]["type"] == "PreflightError"
    assert "[disk]" in r["error"]["message"] and "preflight.min_free_disk_mb" in r["error"]["message"]
    assert "model_load" not in r["phase_s"] and "instruments_start" not in r["phase_s"]
    assert "PreflightError" in p.stderr


def test_preflight_keys_do_not_change_the_config_hash(compose):
    from omegaconf import OmegaConf

    from lem.config.schema import config_hash

    a = OmegaConf.to_container(compose(["gpus=[]"]), resolve=True)
    b = OmegaConf.to_container(compose(["gpus=[]", "preflight.foreign_processes=refuse",
                                        "output_root=/elsewhere"]), resolve=True)
    assert a != b and config_hash(a) == config_hash(b)


def test_probe_module_answers_json_on_this_machine():
    import subprocess

    p = subprocess.run([sys.executable, "-m", "lem.machine.cuda_probe"], capture_output=True, text=True,
                       timeout=60, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    answer = json.loads(p.stdout)
    assert answer["ok"] in (True, False) and ("devices" in answer or "error" in answer)


# lem's own process tree is not foreign (vLLM's EngineCore is a child of lem) ---------------------

def _sleeper_with_grandchild():
    """A real child that starts a real grandchild and prints its pid."""
    child = subprocess.Popen([sys.executable, "-c", (
        "import subprocess, sys, time\n"
        "g = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        "print(g.pid, flush=True)\n"
        "time.sleep(60)\n")], stdout=subprocess.PIPE, text=True)
    return child, int(child.stdout.readline())


def _detached_sleeper() -> int:
    """A real process started from here that left the tree (setsid -f: re-parented to init)."""
    launcher = subprocess.Popen(["setsid", "-f", sys.executable, "-c",
                                 "import os, time; print(os.getpid(), flush=True); time.sleep(60)"],
                                stdout=subprocess.PIPE, text=True)
    pid = int(launcher.stdout.readline())  # the pipe stays open in the detached process
    launcher.wait(timeout=30)
    launcher.stdout.close()
    return pid


def test_children_and_grandchildren_are_own_and_a_detached_process_is_not():
    child, grandchild = _sleeper_with_grandchild()
    detached = _detached_sleeper()
    try:
        tree = devices.own_process_tree()
        assert {os.getpid(), child.pid, grandchild} <= tree
        assert detached not in tree and 1 not in tree
    finally:
        for pid in (grandchild, detached):
            os.kill(pid, signal.SIGKILL)
        child.kill()
        child.wait()


def test_foreign_check_names_only_processes_outside_lems_tree(replayed_h200):
    child, grandchild = _sleeper_with_grandchild()
    detached = _detached_sleeper()
    try:
        # NVML (the replayed H200) lists compute contexts of lem's child and grandchild (its vLLM
        # EngineCore and a worker, say) and of a process outside lem's tree
        replayed_h200.setenv("LEM_FAKE_FOREIGN_PIDS", f"{child.pid},{grandchild},{detached}")
        assert devices.foreign_gpu_processes([0]) == {"0": [detached]}
        c = preflight.check_foreign_processes([0], "refuse")
        assert c.verdict == "fail" and str(detached) in c.detail and str(child.pid) not in c.detail
    finally:
        for pid in (grandchild, detached):
            os.kill(pid, signal.SIGKILL)
        child.kill()
        child.wait()
