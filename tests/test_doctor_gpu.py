"""Doctor and pre-flight on a real GPU (the H200): `python -m pytest -m gpu tests/test_doctor_gpu.py`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from lem.checks import preflight

pytestmark = pytest.mark.gpu


def test_doctor_reports_the_gpu_sensors_and_a_ready_gpu_run():
    p = subprocess.run([sys.executable, "-m", "lem.doctor", "gpus=[0]"], capture_output=True,
                       text=True, timeout=300)
    print(p.stdout)
    assert p.returncode == 0, p.stdout + p.stderr
    gpu = next(line for line in p.stdout.splitlines() if line.strip().startswith("GPU 0"))
    assert "energy counter yes" in gpu and "instant power yes" in gpu and "MIG " in gpu
    cuda = next(line for line in p.stdout.splitlines() if "CUDA init" in line)
    assert " ok " in cuda
    assert "PASS     cuda" in p.stdout and "PASS     torch_cuda" in p.stdout


def test_cuda_probe_passes_for_gpu_0_and_fails_for_a_gpu_that_is_not_there():
    assert preflight.check_cuda([0], 120).verdict == "pass"
    c = preflight.check_cuda([0, 97], 120)
    assert c.verdict == "fail" and "CUDA sees" in c.detail


def _cuda_holder(*launcher: str):
    return subprocess.Popen([*launcher, sys.executable, "-c", (
        "import os, time, torch\n"
        "x = torch.ones(1, device='cuda:0')\n"
        "print(os.getpid(), flush=True)\n"
        "time.sleep(120)\n")], stdout=subprocess.PIPE, text=True)


def test_a_foreign_cuda_context_is_seen_and_refused():
    # setsid -f: the holder leaves this process's tree, as a colleague's job would be outside it
    launcher = _cuda_holder("setsid", "-f")
    pid = int(launcher.stdout.readline())
    try:
        c = preflight.check_foreign_processes([0], "refuse")
        assert c.verdict == "fail" and str(pid) in c.detail, c.detail
        assert preflight.check_foreign_processes([0], "warn").verdict == "warn"
    finally:
        os.kill(pid, signal.SIGKILL)
        launcher.wait()


def test_a_cuda_context_of_lems_own_child_is_not_foreign():
    """vLLM's EngineCore is lem's child: its CUDA context must not make the run invalid."""
    child = _cuda_holder()
    try:
        assert int(child.stdout.readline()) == child.pid
        assert preflight.check_foreign_processes([0], "refuse").verdict == "pass"
    finally:
        child.kill()
        child.wait()


def test_a_gpu_run_passes_its_preflight(tmp_path):
    p = subprocess.run([sys.executable, "-m", "lem", "gpus=[0]", "precision=bf16", "progress=false",
                        "measurement.cycles=1", "dataset.num_requests=4", f"hydra.run.dir={tmp_path}"],
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    r = json.loads((tmp_path / "result.json").read_text())
    assert r["status"] == "ok" and "preflight" in r["phase_s"] and r["phase_s"]["preflight"] < 5
    assert not [w for w in r["warnings"] if w.startswith("[")], r["warnings"]
