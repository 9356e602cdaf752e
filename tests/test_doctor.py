"""`python -m lem.doctor` on a CPU machine, its inputs faked at the system boundary: NVML replays
an H200 (with MIG on, via tests/fakes/doctor_nvml.py), the CUDA probe and torch's build are
swapped, /dev/shm's size comes from a fake statvfs, RAPL from a fake powercap tree; and the
per-machine `local` config group it reports."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from tests.test_cpu_energy import zone
from tests.test_preflight import fake_statvfs, probe_answering, replay_h200

from lem import doctor
from lem.checks import preflight
from lem.config import local as local_config
from lem.machine import inventory

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def quick_slurm(monkeypatch):
    """`sinfo` waits for a controller (seconds) where none runs; doctor's answer is not the point."""
    monkeypatch.setattr(inventory, "_cluster", lambda: "controller not asked (test)")
    monkeypatch.delenv("LEM_CONFIG_DIR", raising=False)
    monkeypatch.setenv("HOME", "/nonexistent-home")


@pytest.fixture
def h200(monkeypatch, tmp_path):
    """A replayed H200 whose CUDA initialises and whose torch is a CUDA build."""
    replay_h200(monkeypatch)
    probe_answering(monkeypatch, tmp_path,
                    "print(json.dumps({'ok': True, 'devices': 1, 'driver_cuda': '13.0'}))\n")
    monkeypatch.setattr(preflight, "torch_build", lambda: ("2.11.0+cu130", "13.0"))
    return monkeypatch


def run_doctor(capsys, *overrides: str) -> tuple[int, str]:
    code = doctor.main(list(overrides))
    out = capsys.readouterr()
    return code, out.out + out.err


def test_cpu_machine_default_run_is_ready(capsys):
    code, out = run_doctor(capsys)
    assert code == 0, out
    assert "READY" in out and "NOT READY" not in out
    for item in ("local settings", "NVML", "CUDA init", "pytorch", "vllm", "tensorrt",
                 "RAPL (CPU energy)", "/dev/shm", "SLURM client", "launcher submitit_slurm"):
        assert item in out
    if "NVML unavailable" in out:  # a CPU machine: gpus=auto resolves to the CPU
        assert "What this run needs (gpus=[]" in out


def test_gpu_run_on_a_cpu_machine_is_not_ready_and_says_why(capsys, monkeypatch):
    monkeypatch.setattr(preflight, "torch_build", lambda: ("2.13.0+cpu", None))
    code, out = run_doctor(capsys, "gpus=[0]")
    assert code == 1
    assert "NOT READY" in out
    assert "FAIL     config" in out and "do not exist" in out  # validation: no GPU 0
    assert "FAIL     torch_cuda" in out and "fix: install a CUDA build of torch" in out


def test_replayed_h200_is_listed_with_its_sensors_and_ready(capsys, h200):
    code, out = run_doctor(capsys, "gpus=[0]")
    assert code == 0, out
    gpu_line = next(line for line in out.splitlines() if line.strip().startswith("GPU 0"))
    assert "NVIDIA H200" in gpu_line and "GPU-replay-0" in gpu_line and "cc 9.0" in gpu_line
    assert "MIG disabled" in gpu_line and "energy counter yes" in gpu_line
    assert "instant power yes" in gpu_line
    assert "580.159.04, supports CUDA <= 13.0" in out
    assert "PASS     cuda" in out and "PASS     foreign_processes" in out


def test_mig_gpu_has_no_energy_counter_and_doctor_warns(capsys, h200):
    h200.setenv("LEM_FAKE_MIG", "1")
    code, out = run_doctor(capsys, "gpus=[0]")
    assert code == 0  # energy goes null with a reason; the run itself can go
    gpu_line = next(line for line in out.splitlines() if line.strip().startswith("GPU 0"))
    assert "MIG enabled" in gpu_line and "energy counter NO" in gpu_line and " warn " in gpu_line
    assert "WARN     energy_counter" in out and "disable MIG" in out


def test_refused_foreign_process_makes_the_run_not_ready(capsys, h200):
    h200.setenv("LEM_FAKE_FOREIGN_PIDS", "4242")
    code, out = run_doctor(capsys, "gpus=[0]", "preflight.foreign_processes=refuse")
    assert code == 1 and "FAIL     foreign_processes" in out and "4242" in out


def test_small_shm_fails_an_engine_that_needs_it(capsys, monkeypatch):
    monkeypatch.setattr(preflight, "statvfs", fake_statvfs(64))
    # the shm rule applies to multi-process engines; pretend pytorch is one, so this test does
    # not depend on an engine being installed here
    monkeypatch.setattr(preflight, "SHM_BACKENDS", ("pytorch",))
    code, out = run_doctor(capsys, "gpus=[]")
    assert code == 1
    assert "/dev/shm" in out and "64 MiB free of 64 MiB" in out
    assert "FAIL     shm" in out and "--ipc=host" in out


def test_rapl_readable_from_a_fake_powercap_tree(capsys, monkeypatch, tmp_path):
    root = tmp_path / "powercap"
    zone(root, "intel-rapl:0", "package-0", 1_000_000)
    zone(root, "intel-rapl:0/intel-rapl:0:0", "dram", 500_000)
    monkeypatch.setattr("lem.measure.cpu_energy.POWERCAP_ROOT", str(root))
    code, out = run_doctor(capsys, "energy.cpu=rapl")
    assert code == 0, out
    rapl_line = next(line for line in out.splitlines() if "RAPL" in line)
    assert " ok " in rapl_line and "package-0" in rapl_line and "package-0/dram" in rapl_line


def test_rapl_required_but_absent_fails_with_the_fix(capsys, monkeypatch, tmp_path):
    monkeypatch.setattr("lem.measure.cpu_energy.POWERCAP_ROOT", str(tmp_path / "absent"))
    code, out = run_doctor(capsys, "energy.cpu=rapl")
    assert code == 1 and "FAIL     rapl" in out and "modprobe intel_rapl_msr" in out
    code, out = run_doctor(capsys, "energy.cpu=auto")
    assert code == 0


def test_slurm_launcher_needs_the_slurm_client(capsys, monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    code, out = run_doctor(capsys, "hydra/launcher=slurm", "gpus=[]")
    assert code == 1 and "FAIL     slurm" in out and "none of sbatch" in out


def test_overrides_that_do_not_compose_exit_2(capsys):
    code, out = run_doctor(capsys, "precision=fp33")
    assert code == 2 and "do not compose" in out and "fp33" in out
    code, out = run_doctor(capsys, "precision=fp32,bf16")
    assert code == 2 and "one value per key" in out


def test_help_explains_the_overrides(capsys):
    code, out = run_doctor(capsys, "--help")
    assert code == 0 and "python -m lem.doctor backend=vllm gpus=[0]" in out


# the per-machine `local` config group ---------------------------------------------------------

LOCAL = """# @package _global_
output_root: {root}
gpus: []
slurm_account: energy-lab
"""


def test_local_settings_from_the_user_config_dir_are_in_effect(capsys, monkeypatch, tmp_path):
    (tmp_path / "cfg" / "local").mkdir(parents=True)
    settings = tmp_path / "cfg" / "local" / "default.yaml"
    settings.write_text(LOCAL.format(root=tmp_path / "results"))
    monkeypatch.setenv("LEM_CONFIG_DIR", str(tmp_path / "cfg"))
    code, out = run_doctor(capsys)
    line = next(line for line in out.splitlines() if "local settings" in line)
    assert str(settings) in line and "slurm_account=energy-lab" in line
    assert f"output_root={tmp_path / 'results'}" in line
    assert str(tmp_path / "results" / "outputs") in out  # the disk check looks there
    assert code == 0


def test_local_settings_shape_runs_and_the_command_line_wins(compose, monkeypatch, tmp_path):
    (tmp_path / "local").mkdir()
    (tmp_path / "local" / "default.yaml").write_text(LOCAL.format(root=tmp_path / "r"))
    monkeypatch.setenv("LEM_CONFIG_DIR", str(tmp_path))
    cfg = compose([])
    assert cfg.output_root == str(tmp_path / "r") and cfg.slurm_account == "energy-lab"
    assert list(cfg.gpus) == []
    assert list(compose(["gpus=[1]"]).gpus) == [1]


@pytest.mark.skipif((ROOT / "conf" / "local" / "default.yaml").exists(),
                    reason="this checkout has its own conf/local/default.yaml")
def test_without_local_settings_nothing_changes_and_hydra_does_not_warn(compose, recwarn):
    assert local_config.searchpath_entry() == "pkg://lem"
    assert local_config.in_effect("default") is None
    cfg = compose([])
    assert cfg.output_root == "." and cfg.slurm_account is None and cfg.gpus == "auto"
    assert not [w for w in recwarn if "searchpath" in str(w.message)]


def test_slurm_launcher_takes_the_account_from_local_settings(compose, monkeypatch, tmp_path):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    import lem.paths

    (tmp_path / "local").mkdir()
    (tmp_path / "local" / "default.yaml").write_text(LOCAL.format(root=tmp_path))
    monkeypatch.setenv("LEM_CONFIG_DIR", str(tmp_path))
    compose([])  # registers lem's schemas and resolvers
    with initialize_config_dir(config_dir=str(lem.paths.conf_dir()), version_base="1.3"):
        cfg = hydra_compose("config", ["hydra/launcher=slurm"], return_hydra_config=True)
    assert cfg.hydra.launcher.account == "energy-lab"


def test_example_local_file_composes(compose, monkeypatch, tmp_path):
    (tmp_path / "local").mkdir()
    (tmp_path / "local" / "default.yaml").write_text((ROOT / "conf" / "local.example.yaml").read_text())
    monkeypatch.setenv("LEM_CONFIG_DIR", str(tmp_path))
    monkeypatch.setenv("USER", "alice")
    cfg = compose([])
    assert cfg.output_root == "/scratch/alice/lem-results" and list(cfg.gpus) == [0]


def test_doctor_imports_no_engine_and_no_torch():
    code = ("import sys, lem.doctor as d, lem.machine.inventory as i\n"
            "i._cluster = lambda: 'not asked'\n"
            "rc = d.main([])\n"
            "heavy = [m for m in ('torch', 'transformers', 'vllm', 'tensorrt_llm') if m in sys.modules]\n"
            "assert not heavy, heavy\n"
            "sys.exit(rc)\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       cwd=ROOT, env={**os.environ, "HOME": "/nonexistent-home"})
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    assert "READY" in p.stdout


def test_import_flag_catches_an_engine_that_is_installed_but_broken(capsys, monkeypatch, tmp_path):
    pkg = tmp_path / "lem_test_broken_engine"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(
        "raise ImportError('libcudart.so.12: cannot open shared object file')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    monkeypatch.setattr(inventory, "ENGINES", {"pytorch": ("lem_test_broken_engine", "lem-test"),
                                               "stdlib": ("json", "json")})
    code, out = run_doctor(capsys, "--import", "gpus=[]")
    assert code == 1
    assert "import lem_test_broken_engine" in out and "libcudart.so.12" in out
    assert "FAIL     engine_import" in out and "use its container" in out
    assert "import json" in out
    code, out = run_doctor(capsys, "gpus=[]")  # without --import nothing is imported
    assert code == 0 and "import lem_test_broken_engine" not in out
