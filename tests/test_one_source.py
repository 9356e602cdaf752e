"""One source per fact (issue 18). Copies of a small helper drift apart: there were four `_plain`
converters (one converting dicts only), three dtype -> bytes tables (one without float32), two
J_PER_KWH and seven hand-written NVML inits. Each now lives in one module; a second site fails
here, naming the module to import from. And a machine without NVML reads the same everywhere."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from lem.machine import devices, environment, host, inventory
from lem.measure.energy import NvmlMeter
from lem.measure.sampler import Sampler, SamplerError

SRC = Path(__file__).resolve().parents[1] / "src" / "lem"

# pattern (a definition or a call that belongs to one module) -> the module that owns it
OWNERS = {
    r"\.nvmlInit\(": "machine/nvml.py",  # start() / session()
    r"^def _?plain\(": "config/plain.py",
    r"^J_PER_KWH\s*=": "units.py",
    r"[\"'](?:bfloat16|bf16)[\"']\s*:\s*2\b": "units.py",  # a dtype -> bytes table
}


def _sites(pattern: str) -> list[str]:
    found = re.compile(pattern, re.MULTILINE)
    return sorted(p.relative_to(SRC).as_posix() for p in SRC.rglob("*.py") if found.search(p.read_text()))


@pytest.mark.parametrize(("pattern", "owner"), OWNERS.items())
def test_each_fact_is_defined_once(pattern, owner):
    assert _sites(pattern) == [owner], f"{pattern!r} belongs in lem/{owner} alone: import it from there"


MISSING = "tests.fakes.no_such_nvml"  # a module that does not exist: NVML's library is missing


def test_a_missing_nvml_reads_the_same_at_every_call_site(monkeypatch):
    monkeypatch.setenv("LEM_NVML_MODULE", MISSING)
    reason = f"NVML unavailable (ModuleNotFoundError: No module named '{MISSING}')"
    assert host.probe_host().nvml_error == reason
    assert inventory.read_nvml().error == reason
    assert devices.wait_for_steady_temperature([0], max_s=1.0, range_c=1.0).reason == reason
    assert devices.foreign_gpu_processes([0]) is None  # "cannot tell", not a failure
    assert environment.snapshot([0])["gpus"] == []


def test_the_meter_and_the_sampler_still_refuse_to_run_without_nvml(monkeypatch):
    monkeypatch.setenv("LEM_NVML_MODULE", MISSING)
    with pytest.raises(RuntimeError, match=f"ModuleNotFoundError: No module named '{MISSING}'"):
        NvmlMeter([0])
    with pytest.raises(SamplerError, match=f"could not read NVML: ModuleNotFoundError: .*'{MISSING}'"):
        Sampler([0], period_s=0.1).start()
