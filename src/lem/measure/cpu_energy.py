"""CPU and DRAM energy: two verbs, start() and stop() -> CpuEnergyReading, joules per RAPL zone.

Measured: the RAPL energy counters the Linux powercap driver exposes under /sys/class/powercap,
read at the window's edges (and at checkpoint(), which the runner may call at batch edges so that a
long window cannot hide more than one counter wraparound). `package_j` sums the `package-N` zones,
`dram_j` their `dram` subzones; `core` and `uncore` sit inside the package and are reported per zone
only, never added, and so is `psys` (the whole platform, which contains the package).

One control type is read: `intel-rapl` (the MSR interface; Intel, and AMD Zen through the same
driver, whose zones are also named intel-rapl:N), else `amd-rapl`, else `intel-rapl-mmio`. Never two:
on Intel client CPUs intel-rapl-mmio:0 is a second view of the same package counter as intel-rapl:0,
and adding both would count the package twice.

Estimated, and labelled so: when the counters cannot be read and `fallback="codecarbon"`, CodeCarbon's
OfflineEmissionsTracker models CPU energy from the CPU's TDP and RAM energy from the installed RAM
size. That is `method="estimate"`, never "rapl". CodeCarbon is an optional extra, imported lazily.
"""

from __future__ import annotations

import inspect
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from lem.units import J_PER_KWH

POWERCAP_ROOT = "/sys/class/powercap"
CONTROL_TYPES = ("intel-rapl", "amd-rapl", "intel-rapl-mmio")  # first one present wins
COUNTED_KINDS = ("package", "dram")  # the zones that make up total_j; a failure to read one is fatal
# A counter can only be unwrapped once between two reads. At this (generous) power one socket's
# counter needs max_energy_range_uj / 1e6 / 500 s to wrap (~520 s for the common 262 kJ range).
_WRAP_CHECK_W = 500.0


@dataclass
class CpuEnergyReading:
    method: Optional[str]  # "rapl", "estimate" (CodeCarbon), or None when nothing was measured
    duration_s: float
    package_j: Optional[float] = None  # sum of the package-N zones (estimate: CodeCarbon's cpu_energy)
    dram_j: Optional[float] = None  # sum of the dram subzones (estimate: CodeCarbon's ram_energy)
    total_j: Optional[float] = None  # package_j + dram_j (package_j alone where there is no dram zone)
    zones: dict[str, float] = field(default_factory=dict)  # "package-0", "package-0/dram", ...
    reason: Optional[str] = None  # why a value is null, or what the estimate is
    co2_kg: Optional[float] = None  # only with method="estimate"
    co2_method: Optional[str] = None


@dataclass
class RaplZone:
    key: str  # "package-0" for a zone, "package-0/dram" for a subzone
    kind: str  # "package", "dram", "core", "uncore", "psys", or the zone's own name
    path: Path  # the zone's directory
    control_type: str  # "intel-rapl", "amd-rapl" or "intel-rapl-mmio"
    max_energy_range_uj: Optional[int]  # None when unreadable: a wrapped counter is then not unwrapped


class RaplUnavailable(Exception):
    """RAPL cannot be read here; the message says why and how to fix it."""


def discover_rapl_zones(powercap_root: str | Path = POWERCAP_ROOT) -> list[RaplZone]:
    """The RAPL zones under `powercap_root`, packages first; RaplUnavailable (with the fix) if none."""
    root = Path(powercap_root)
    if not root.is_dir():
        raise RaplUnavailable(
            f"{root} does not exist: this kernel exposes no powercap interface (not Linux, a VM or "
            f"container without it, or the RAPL driver is not loaded: `sudo modprobe intel_rapl_msr`)")
    for control_type in CONTROL_TYPES:
        tops = _numbered(root, control_type)
        if tops:
            zones = [z for top in tops for z in _zone_and_subzones(root, top, control_type)]
            if not any(z.kind == "package" for z in zones):
                raise RaplUnavailable(f"no package-N zone among {[z.path.name for z in zones]} under {root}")
            return zones
    raise RaplUnavailable(
        f"no RAPL zones ({'/'.join(CONTROL_TYPES)}:N) under {root}: load the driver "
        f"(`sudo modprobe intel_rapl_msr`; Intel, and AMD Zen on Linux >= 5.8), or the CPU has no RAPL")


def _numbered(parent: Path, prefix: str) -> list[Path]:
    """Entries of `parent` named exactly `<prefix>:<N>`, in numeric order."""
    pattern = re.compile(rf"^{re.escape(prefix)}:(\d+)$")
    found = [(int(m.group(1)), p) for p in parent.iterdir() if (m := pattern.match(p.name))]
    return [p for _, p in sorted(found)]


def _zone_and_subzones(root: Path, top: Path, control_type: str) -> list[RaplZone]:
    name = _read_name(top)
    zone = RaplZone(name, "package" if name.startswith("package") else name, top, control_type,
                    _read_max_range(top))
    # sysfs lists subzones both at the top (symlinks) and inside their zone; take each name once
    subdirs = {p.name: p for p in _numbered(top, top.name)}
    subdirs.update({p.name: p for p in _numbered(root, top.name)})
    subs = [_subzone(name, subdirs[n], control_type) for n in sorted(subdirs, key=_index_key)]
    return [zone, *subs]


def _subzone(parent_name: str, path: Path, control_type: str) -> RaplZone:
    name = _read_name(path)
    return RaplZone(f"{parent_name}/{name}", name, path, control_type, _read_max_range(path))


def _index_key(name: str) -> tuple[int, ...]:
    return tuple(int(part) for part in name.split(":")[1:])


def _read_name(zone_dir: Path) -> str:
    try:
        return (zone_dir / "name").read_text().strip() or zone_dir.name
    except OSError:
        return zone_dir.name


def _read_max_range(zone_dir: Path) -> Optional[int]:
    try:
        return int((zone_dir / "max_energy_range_uj").read_text().strip())
    except (OSError, ValueError):
        return None


def _read_uj(zone: RaplZone) -> int:
    """energy_uj of `zone`; RaplUnavailable saying why and how to fix it."""
    path = zone.path / "energy_uj"
    try:
        return int(path.read_text().strip())
    except PermissionError:
        glob = f"{zone.path.parent}/{zone.control_type}:*/energy_uj"
        raise RaplUnavailable(
            f"{path}: permission denied (energy_uj is root-only since Linux 5.10, CVE-2020-8694); fix: "
            f"run as root, or on a dedicated benchmark host `sudo chmod a+r {glob}` (lasts until "
            f"reboot; a udev rule makes it permanent: SUBSYSTEM==\"powercap\", ACTION==\"add\", "
            f"RUN+=\"/bin/chmod a+r /sys%p/energy_uj\")") from None
    except FileNotFoundError:
        raise RaplUnavailable(f"{path} does not exist (a zone without an energy counter, or a "
                              f"container that hides it: mount the host's /sys read-only)") from None
    except OSError as exc:
        raise RaplUnavailable(f"{path} is unreadable: {exc.strerror or exc}") from None
    except ValueError:
        raise RaplUnavailable(f"{path} does not hold an integer") from None


def _delta_uj(start_uj: int, end_uj: int, max_range_uj: Optional[int]) -> Optional[int]:
    """Energy between two reads of one counter, unwrapping one wraparound; None if it cannot."""
    if end_uj >= start_uj:
        return end_uj - start_uj
    if max_range_uj is None:
        return None
    return end_uj + max_range_uj - start_uj


class _RaplCounters:
    """Accumulates every zone's energy over successive reads (begin, then advance at each edge)."""

    def __init__(self, zones: list[RaplZone]):
        self.zones = zones
        self.skipped: list[str] = []  # uncounted zones (core, uncore, psys) that could not be read
        self.failure: Optional[str] = None  # why the sum is unknown
        self.max_gap_s = 0.0
        self._last: dict[str, int] = {}
        self._acc_uj: dict[str, int] = {}
        self._t_last = 0.0

    def begin(self) -> None:
        kept = []
        for zone in self.zones:
            try:
                self._last[zone.key] = _read_uj(zone)
            except RaplUnavailable:
                if zone.kind in COUNTED_KINDS:
                    raise
                self.skipped.append(zone.key)
                continue
            kept.append(zone)
            self._acc_uj[zone.key] = 0
        self.zones = kept
        self._t_last = time.perf_counter()

    def advance(self) -> None:
        if self.failure:
            return
        now = time.perf_counter()
        self.max_gap_s = max(self.max_gap_s, now - self._t_last)
        self._t_last = now
        try:
            for zone in self.zones:
                self._advance_zone(zone, _read_uj(zone))
        except RaplUnavailable as exc:
            self.failure = str(exc)

    def _advance_zone(self, zone: RaplZone, now_uj: int) -> None:
        delta = _delta_uj(self._last[zone.key], now_uj, zone.max_energy_range_uj)
        if delta is None:
            raise RaplUnavailable(f"{zone.path}/energy_uj went backwards (wrapped) and its "
                                  f"max_energy_range_uj is unreadable, so it cannot be unwrapped")
        self._acc_uj[zone.key] += delta
        self._last[zone.key] = now_uj

    def joules(self) -> dict[str, float]:
        return {key: uj / 1e6 for key, uj in self._acc_uj.items()}

    def wrap_s(self) -> Optional[float]:
        """Shortest time any zone's counter could take to wrap at _WRAP_CHECK_W."""
        ranges = [z.max_energy_range_uj for z in self.zones if z.max_energy_range_uj]
        return min(ranges) / 1e6 / _WRAP_CHECK_W if ranges else None


class CpuEnergyMeter:
    """CPU package and DRAM energy from RAPL; CodeCarbon's estimate (labelled so) when RAPL is unreadable.

    start() at the window's start, stop() at its end; checkpoint() in between (e.g. at batch edges)
    keeps windows longer than a counter's wrap time (~9 min at 500 W) exact. Reusable: every start()
    opens a new window.
    """

    def __init__(self, powercap_root: str | Path = POWERCAP_ROOT, fallback: str = "codecarbon",
                 country_iso_code: Optional[str] = None, measure_power_secs: int = 1):
        if fallback not in ("codecarbon", "none"):
            raise ValueError(f"fallback={fallback!r}: use 'codecarbon' (estimate when RAPL is "
                             f"unreadable) or 'none' (report null)")
        self.powercap_root = Path(powercap_root)
        self.fallback = fallback
        self.country_iso_code = country_iso_code
        self.measure_power_secs = measure_power_secs
        self._rapl: Optional[_RaplCounters] = None
        self._tracker = None
        self._rapl_why: Optional[str] = None
        self._reason: Optional[str] = None
        self._t0 = 0.0

    def start(self) -> None:
        self._rapl, self._tracker, self._rapl_why, self._reason = None, None, None, None
        try:
            counters = _RaplCounters(discover_rapl_zones(self.powercap_root))
            counters.begin()
            self._rapl = counters
        except RaplUnavailable as exc:
            self._rapl_why = str(exc)
            self._start_fallback()
        self._t0 = time.perf_counter()

    def checkpoint(self) -> None:
        """Read the counters without ending the window (cheap: one small sysfs read per zone)."""
        if self._rapl is not None:
            self._rapl.advance()

    def stop(self) -> CpuEnergyReading:
        duration_s = time.perf_counter() - self._t0
        if self._rapl is not None:
            self._rapl.advance()
            return _rapl_reading(self._rapl, duration_s)
        if self._tracker is not None:
            return self._stop_codecarbon(duration_s)
        return CpuEnergyReading(None, duration_s, reason=self._reason)

    def _start_fallback(self) -> None:
        why = f"RAPL unreadable: {self._rapl_why}"
        if self.fallback == "none":
            self._reason = f"not measured: {why}; fallback=none, so no estimate either"
            return
        try:
            from codecarbon import OfflineEmissionsTracker
        except ImportError as exc:
            self._reason = f"not measured: {why}; " + _import_failure(exc)
            return
        try:
            tracker = OfflineEmissionsTracker(**_tracker_kwargs(
                OfflineEmissionsTracker, self.country_iso_code, self.measure_power_secs))
            tracker.start()
        except Exception as exc:  # CodeCarbon's own failure must not fail the run
            self._reason = f"not measured: {why}; CodeCarbon failed to start: {exc!r}"
            return
        self._tracker = tracker

    def _stop_codecarbon(self, duration_s: float) -> CpuEnergyReading:
        why = f"RAPL unreadable: {self._rapl_why}"
        try:
            emissions_kg = self._tracker.stop()
            data = getattr(self._tracker, "final_emissions_data", None)
        except Exception as exc:
            return CpuEnergyReading(None, duration_s, reason=f"not measured: {why}; CodeCarbon's "
                                    f"stop() failed: {exc!r}")
        finally:
            self._tracker = None
        if data is None or emissions_kg is None:
            return CpuEnergyReading(None, duration_s, reason=f"not measured: {why}; CodeCarbon "
                                    f"returned no data (it logs its errors at level 'error')")
        return _estimate_reading(data, emissions_kg, duration_s, why, self.country_iso_code)


def _rapl_reading(counters: _RaplCounters, duration_s: float) -> CpuEnergyReading:
    if counters.failure:
        return CpuEnergyReading(None, duration_s, reason=f"not measured: {counters.failure}")
    zones = counters.joules()
    kinds = {z.key: z.kind for z in counters.zones}
    package_j = sum(j for k, j in zones.items() if kinds[k] == "package")
    drams = [j for k, j in zones.items() if kinds[k] == "dram"]
    dram_j = sum(drams) if drams else None
    notes = []
    if dram_j is None:
        notes.append("dram_j: no dram RAPL zone on this CPU (usual on AMD and client Intel); "
                     "total_j is the package alone")
    if counters.skipped:
        notes.append(f"zones not read (not part of total_j): {counters.skipped}")
    wrap_s = counters.wrap_s()
    if wrap_s is not None and counters.max_gap_s > wrap_s:
        notes.append(f"counters were read {counters.max_gap_s:.0f} s apart, longer than the {wrap_s:.0f} s "
                     f"a counter can take to wrap at {_WRAP_CHECK_W:.0f} W; if one wrapped twice the "
                     f"energy is undercounted: call checkpoint() more often")
    return CpuEnergyReading("rapl", duration_s, package_j, dram_j, package_j + (dram_j or 0.0), zones,
                            "; ".join(notes) or None)


def _import_failure(exc: ImportError) -> str:
    if exc.name == "codecarbon":
        return "the estimate fallback needs CodeCarbon: pip install 'lem[codecarbon]'"
    return f"CodeCarbon is installed but failed to import: {exc} (codecarbon 2.x needs setuptools < 81)"


def _tracker_kwargs(tracker_cls, country_iso_code: Optional[str], measure_power_secs: int) -> dict:
    """OfflineEmissionsTracker arguments: quiet, machine-wide, no emissions.csv, valid on 2.5 to 3.x."""
    accepted = set()
    for klass in tracker_cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is not None:
            accepted |= set(inspect.signature(init).parameters)
    kwargs = {"project_name": "lem", "measure_power_secs": measure_power_secs, "log_level": "error",
              "tracking_mode": "machine"}
    if country_iso_code:
        kwargs["country_iso_code"] = country_iso_code
    if "output_methods" in accepted:  # codecarbon >= 3.3 deprecates save_to_file
        kwargs["output_methods"] = []
    else:
        kwargs["save_to_file"] = False
    if "allow_multiple_runs" in accepted:  # 2.8 took a lock file by default
        kwargs["allow_multiple_runs"] = True
    return kwargs


def _estimate_reading(data, emissions_kg: float, duration_s: float, why: str,
                      country_iso_code: Optional[str]) -> CpuEnergyReading:
    cpu_j = float(data.cpu_energy) * J_PER_KWH
    ram_j = float(data.ram_energy) * J_PER_KWH
    all_kwh = float(data.energy_consumed)  # also GPU energy: take the CPU+RAM share of the CO2
    co2_kg = float(emissions_kg) * (cpu_j + ram_j) / J_PER_KWH / all_kwh if all_kwh > 0 else 0.0
    grid = country_iso_code or getattr(data, "country_iso_code", None) or "CodeCarbon's default"
    return CpuEnergyReading(
        "estimate", duration_s, cpu_j, ram_j, cpu_j + ram_j, {"cpu": cpu_j, "ram": ram_j},
        reason=(f"estimate, not a measurement: CodeCarbon {_codecarbon_version()}'s model, machine-wide: "
                f"CPU energy from the CPU's TDP (scaled by CPU load in codecarbon >= 3), RAM energy "
                f"from the installed RAM size; used because {why}"),
        co2_kg=co2_kg,
        co2_method=(f"CodeCarbon OfflineEmissionsTracker: CPU+RAM share of its emissions, grid carbon "
                    f"intensity of {grid}"))


def _codecarbon_version() -> str:
    try:
        from importlib.metadata import version

        return version("codecarbon")
    except Exception:
        return "unknown version"
