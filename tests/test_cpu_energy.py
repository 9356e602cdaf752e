"""CpuEnergyMeter against fake powercap trees: real files in tmp_path, read by the meter itself."""

from __future__ import annotations

import os
import sys
import time
import types
from pathlib import Path

import pytest

from lem.measure.cpu_energy import CpuEnergyMeter, discover_rapl_zones

MAX_UJ = 262_143_328_850  # the common package range, ~262 kJ


def zone(root: Path, entry: str, name: str, energy_uj: int | None, max_uj: int | None = MAX_UJ) -> Path:
    """A powercap zone directory `root/entry`; energy_uj=None leaves the counter file out."""
    d = root / entry
    d.mkdir(parents=True)
    (d / "name").write_text(f"{name}\n")
    if energy_uj is not None:
        (d / "energy_uj").write_text(f"{energy_uj}\n")
    if max_uj is not None:
        (d / "max_energy_range_uj").write_text(f"{max_uj}\n")
    return d


def set_uj(zone_dir: Path, energy_uj: int) -> None:
    (zone_dir / "energy_uj").write_text(f"{energy_uj}\n")


def measure(root: Path, ends: dict[Path, int], **kwargs):
    """start(), move each zone's counter to its end value, stop()."""
    meter = CpuEnergyMeter(powercap_root=root, **kwargs)
    meter.start()
    for d, uj in ends.items():
        set_uj(d, uj)
    return meter.stop()


# --- RAPL: what is summed --------------------------------------------------------------------

def test_package_and_dram(tmp_path):
    pkg = zone(tmp_path, "intel-rapl:0", "package-0", 1_000_000)
    dram = zone(tmp_path, "intel-rapl:0:0", "dram", 500_000)
    r = measure(tmp_path, {pkg: 51_000_000, dram: 10_500_000})
    assert r.method == "rapl"
    assert r.package_j == pytest.approx(50.0)
    assert r.dram_j == pytest.approx(10.0)
    assert r.total_j == pytest.approx(60.0)
    assert r.zones == pytest.approx({"package-0": 50.0, "package-0/dram": 10.0})
    assert r.reason is None
    assert r.co2_kg is None and r.co2_method is None
    assert r.duration_s >= 0


def test_core_and_uncore_are_reported_but_not_added(tmp_path):
    pkg = zone(tmp_path, "intel-rapl:0", "package-0", 0)
    core = zone(tmp_path, "intel-rapl:0:0", "core", 0)
    uncore = zone(tmp_path, "intel-rapl:0:1", "uncore", 0)
    r = measure(tmp_path, {pkg: 40_000_000, core: 30_000_000, uncore: 5_000_000})
    assert r.method == "rapl"
    assert r.package_j == pytest.approx(40.0)
    assert r.total_j == pytest.approx(40.0)  # core (30 J) and uncore (5 J) are inside the package
    assert r.zones["package-0/core"] == pytest.approx(30.0)
    assert r.zones["package-0/uncore"] == pytest.approx(5.0)
    assert r.dram_j is None
    assert "no dram RAPL zone" in r.reason and "total_j is the package alone" in r.reason


def test_two_sockets_are_summed(tmp_path):
    p0 = zone(tmp_path, "intel-rapl:0", "package-0", 0)
    d0 = zone(tmp_path, "intel-rapl:0:0", "dram", 0)
    p1 = zone(tmp_path, "intel-rapl:1", "package-1", 7_000_000)
    d1 = zone(tmp_path, "intel-rapl:1:0", "dram", 0)
    r = measure(tmp_path, {p0: 50_000_000, d0: 10_000_000, p1: 47_000_000, d1: 5_000_000})
    assert r.package_j == pytest.approx(90.0)
    assert r.dram_j == pytest.approx(15.0)
    assert r.total_j == pytest.approx(105.0)
    assert set(r.zones) == {"package-0", "package-0/dram", "package-1", "package-1/dram"}
    assert r.zones["package-1/dram"] == pytest.approx(5.0)


def test_psys_is_not_added(tmp_path):
    pkg = zone(tmp_path, "intel-rapl:0", "package-0", 0)
    psys = zone(tmp_path, "intel-rapl:1", "psys", 0)
    r = measure(tmp_path, {pkg: 20_000_000, psys: 35_000_000})
    assert r.package_j == pytest.approx(20.0)
    assert r.total_j == pytest.approx(20.0)
    assert r.zones["psys"] == pytest.approx(35.0)


def test_mmio_duplicate_of_the_package_is_not_counted_twice(tmp_path):
    pkg = zone(tmp_path, "intel-rapl:0", "package-0", 0)
    mmio = zone(tmp_path, "intel-rapl-mmio:0", "package-0", 0)
    r = measure(tmp_path, {pkg: 20_000_000, mmio: 20_000_000})
    assert r.package_j == pytest.approx(20.0)
    assert list(r.zones) == ["package-0"]


@pytest.mark.parametrize("control_type", ["amd-rapl", "intel-rapl-mmio"])
def test_other_control_types_are_read_when_alone(tmp_path, control_type):
    pkg = zone(tmp_path, f"{control_type}:0", "package-0", 0)
    r = measure(tmp_path, {pkg: 12_000_000})
    assert r.method == "rapl"
    assert r.package_j == pytest.approx(12.0)


def test_subzone_only_nested_inside_its_zone(tmp_path):
    pkg = zone(tmp_path, "intel-rapl:0", "package-0", 0)
    dram = zone(pkg, "intel-rapl:0:0", "dram", 0)  # no top-level entry for the subzone
    r = measure(tmp_path, {pkg: 3_000_000, dram: 1_000_000})
    assert r.dram_j == pytest.approx(1.0)
    assert r.total_j == pytest.approx(4.0)


def test_discover_orders_zones_numerically(tmp_path):
    for i in (10, 2, 0):
        zone(tmp_path, f"intel-rapl:{i}", f"package-{i}", 0)
    zone(tmp_path, "intel-rapl:2:0", "dram", 0)
    keys = [z.key for z in discover_rapl_zones(tmp_path)]
    assert keys == ["package-0", "package-2", "package-2/dram", "package-10"]


# --- RAPL: wraparound ------------------------------------------------------------------------

def test_wraparound_uses_max_energy_range(tmp_path):
    pkg = zone(tmp_path, "intel-rapl:0", "package-0", MAX_UJ - 2_000_000)
    dram = zone(tmp_path, "intel-rapl:0:0", "dram", 100, max_uj=65_532_610_987)
    r = measure(tmp_path, {pkg: 3_000_000, dram: 1_000_100})  # package wrapped, dram did not
    assert r.package_j == pytest.approx(5.0)  # end + max - start
    assert r.dram_j == pytest.approx(1.0)
    assert r.total_j == pytest.approx(6.0)


def test_checkpoint_keeps_two_wraps_exact(tmp_path):
    pkg = zone(tmp_path, "intel-rapl:0", "package-0", 10_000_000, max_uj=100_000_000)
    meter = CpuEnergyMeter(powercap_root=tmp_path, fallback="none")
    meter.start()
    set_uj(pkg, 5_000_000)  # wrapped once: +95 J
    meter.checkpoint()
    set_uj(pkg, 2_000_000)  # wrapped again: +97 J
    r = meter.stop()
    assert r.package_j == pytest.approx(192.0)  # without the checkpoint only -8 J + 100 J = 92 J


def test_wrap_without_max_range_is_not_measured(tmp_path):
    pkg = zone(tmp_path, "intel-rapl:0", "package-0", 9_000_000, max_uj=None)
    r = measure(tmp_path, {pkg: 1_000_000}, fallback="none")
    assert r.method is None
    assert r.total_j is None and r.package_j is None
    assert "max_energy_range_uj is unreadable" in r.reason


def test_meter_is_reusable_for_a_second_window(tmp_path):
    pkg = zone(tmp_path, "intel-rapl:0", "package-0", 0)
    meter = CpuEnergyMeter(powercap_root=tmp_path)
    meter.start()
    set_uj(pkg, 4_000_000)
    first = meter.stop()
    meter.start()
    set_uj(pkg, 5_000_000)
    second = meter.stop()
    assert (first.package_j, second.package_j) == pytest.approx((4.0, 1.0))


# --- RAPL unreadable -------------------------------------------------------------------------

def test_energy_uj_is_a_directory(tmp_path):
    pkg = zone(tmp_path, "intel-rapl:0", "package-0", None)
    (pkg / "energy_uj").mkdir()
    r = CpuEnergyMeter(powercap_root=tmp_path, fallback="none")
    r.start()
    reading = r.stop()
    assert reading.method is None
    assert reading.package_j is None and reading.dram_j is None and reading.total_j is None
    assert str(pkg / "energy_uj") in reading.reason and "unreadable" in reading.reason
    assert "fallback=none" in reading.reason


def test_energy_uj_missing(tmp_path):
    zone(tmp_path, "intel-rapl:0", "package-0", 0)
    zone(tmp_path, "intel-rapl:0:0", "dram", None)  # a counted zone without a counter
    r = measure(tmp_path, {}, fallback="none")
    assert r.method is None and r.total_j is None
    assert "intel-rapl:0:0/energy_uj does not exist" in r.reason


def test_unreadable_uncounted_zone_does_not_void_the_package(tmp_path):
    pkg = zone(tmp_path, "intel-rapl:0", "package-0", 0)
    core = zone(tmp_path, "intel-rapl:0:0", "core", None)
    (core / "energy_uj").mkdir()
    r = measure(tmp_path, {pkg: 8_000_000})
    assert r.method == "rapl"
    assert r.total_j == pytest.approx(8.0)
    assert "package-0/core" not in r.zones
    assert "zones not read" in r.reason and "package-0/core" in r.reason


def test_counter_disappearing_before_stop(tmp_path):
    pkg = zone(tmp_path, "intel-rapl:0", "package-0", 0)
    meter = CpuEnergyMeter(powercap_root=tmp_path)
    meter.start()
    (pkg / "energy_uj").unlink()
    r = meter.stop()
    assert r.method is None and r.total_j is None
    assert "does not exist" in r.reason


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0,
                    reason="running as root: chmod 000 does not stop root from reading")
def test_chmod_000_names_the_fix(tmp_path):
    pkg = zone(tmp_path, "intel-rapl:0", "package-0", 0)
    (pkg / "energy_uj").chmod(0)
    r = measure(tmp_path, {}, fallback="none")
    assert r.method is None
    assert "permission denied" in r.reason and "chmod a+r" in r.reason and "root" in r.reason


def test_permission_denied_names_the_fix(tmp_path, monkeypatch):
    # as root chmod cannot make a file unreadable, so the kernel's answer is injected here
    zone(tmp_path, "intel-rapl:0", "package-0", 0)
    real_read_text = Path.read_text

    def read_text(self, *args, **kwargs):
        if self.name == "energy_uj":
            raise PermissionError(13, "Permission denied", str(self))
        return real_read_text(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", read_text)
    r = measure(tmp_path, {}, fallback="none")
    assert r.method is None and r.total_j is None
    assert "permission denied" in r.reason
    assert f"sudo chmod a+r {tmp_path}/intel-rapl:*/energy_uj" in r.reason
    assert "run as root" in r.reason and "udev" in r.reason


def test_no_powercap_directory(tmp_path):
    missing = tmp_path / "powercap"
    r = measure(missing, {}, fallback="none")
    assert r.method is None and r.total_j is None
    assert f"{missing} does not exist" in r.reason and "modprobe intel_rapl_msr" in r.reason


def test_powercap_without_rapl_zones(tmp_path):
    (tmp_path / "dtpm").mkdir()
    r = measure(tmp_path, {}, fallback="none")
    assert r.method is None
    assert "no RAPL zones" in r.reason


def test_unknown_fallback_is_refused():
    with pytest.raises(ValueError, match="'codecarbon'.*'none'"):
        CpuEnergyMeter(fallback="guess")


# --- CodeCarbon fallback ---------------------------------------------------------------------

def test_codecarbon_not_installed_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "codecarbon", None)  # import codecarbon -> ImportError
    r = measure(tmp_path / "absent", {}, fallback="codecarbon")
    assert r.method is None
    assert r.package_j is None and r.dram_j is None and r.total_j is None and r.co2_kg is None
    assert "pip install 'lem[codecarbon]'" in r.reason
    assert "RAPL unreadable" in r.reason and "does not exist" in r.reason


class _FakeTracker:
    """Stands in for codecarbon.OfflineEmissionsTracker (2.x signature: save_to_file)."""

    created: list[dict] = []

    def __init__(self, project_name=None, measure_power_secs=None, save_to_file=None, log_level=None,
                 tracking_mode=None, country_iso_code=None):
        _FakeTracker.created.append(dict(project_name=project_name, measure_power_secs=measure_power_secs,
                                         save_to_file=save_to_file, log_level=log_level,
                                         tracking_mode=tracking_mode, country_iso_code=country_iso_code))
        self.started = False

    def start(self):
        self.started = True

    def stop(self):
        assert self.started
        # kWh, as CodeCarbon reports them; energy_consumed also holds 1.5e-5 kWh of GPU energy
        self.final_emissions_data = types.SimpleNamespace(
            cpu_energy=1e-5, ram_energy=5e-6, gpu_energy=1.5e-5, energy_consumed=3e-5,
            country_iso_code="FRA")
        return 0.002


def test_codecarbon_estimate_is_labelled_and_converted(tmp_path, monkeypatch):
    fake = types.ModuleType("codecarbon")
    fake.OfflineEmissionsTracker = _FakeTracker
    monkeypatch.setitem(sys.modules, "codecarbon", fake)
    _FakeTracker.created.clear()
    r = measure(tmp_path / "absent", {}, fallback="codecarbon", country_iso_code="FRA")
    assert _FakeTracker.created == [dict(project_name="lem", measure_power_secs=1, save_to_file=False,
                                         log_level="error", tracking_mode="machine",
                                         country_iso_code="FRA")]
    assert r.method == "estimate"
    assert r.package_j == pytest.approx(36.0)  # 1e-5 kWh
    assert r.dram_j == pytest.approx(18.0)
    assert r.total_j == pytest.approx(54.0)
    assert r.zones == pytest.approx({"cpu": 36.0, "ram": 18.0})
    assert r.co2_kg == pytest.approx(0.001)  # the CPU+RAM half of 0.002 kg, not the GPU's share
    assert "FRA" in r.co2_method
    assert r.reason.startswith("estimate, not a measurement")
    assert "TDP" in r.reason and "RAPL unreadable" in r.reason


def test_rapl_wins_over_an_installed_codecarbon(tmp_path, monkeypatch):
    fake = types.ModuleType("codecarbon")
    fake.OfflineEmissionsTracker = _FakeTracker
    monkeypatch.setitem(sys.modules, "codecarbon", fake)
    _FakeTracker.created.clear()
    pkg = zone(tmp_path, "intel-rapl:0", "package-0", 0)
    r = measure(tmp_path, {pkg: 2_000_000}, fallback="codecarbon")
    assert r.method == "rapl" and r.co2_kg is None
    assert _FakeTracker.created == []


def test_real_codecarbon_estimate(tmp_path, monkeypatch):
    pytest.importorskip("codecarbon", reason="codecarbon is not installed (pip install 'lem[codecarbon]'); "
                                             "the estimate path is covered here by a fake tracker")
    monkeypatch.chdir(tmp_path)  # should it write emissions.csv after all, it lands here
    meter = CpuEnergyMeter(powercap_root=tmp_path / "absent", fallback="codecarbon", country_iso_code="USA")
    meter.start()
    t_end = time.perf_counter() + 1.0
    while time.perf_counter() < t_end:
        sum(range(1000))
    r = meter.stop()
    assert r.method == "estimate", r.reason
    assert r.package_j > 0 and r.dram_j >= 0
    assert r.total_j == pytest.approx(r.package_j + r.dram_j)
    assert r.co2_kg is not None and r.co2_kg >= 0
    assert r.reason.startswith("estimate, not a measurement")
    assert not (tmp_path / "emissions.csv").exists()


def test_codecarbon_broken_install_is_not_called_missing(tmp_path, monkeypatch):
    pkg = tmp_path / "site" / "codecarbon"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("import pkg_resources_missing_for_this_test\n")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.delitem(sys.modules, "codecarbon", raising=False)
    r = measure(tmp_path / "absent", {}, fallback="codecarbon")
    assert r.method is None and r.total_j is None
    assert "installed but failed to import" in r.reason
    assert "pkg_resources_missing_for_this_test" in r.reason
    assert "pip install 'lem[codecarbon]'" not in r.reason
