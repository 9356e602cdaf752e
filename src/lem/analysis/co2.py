"""CO2 of the run's measured energy: an estimate, energy x the grid's average carbon intensity.

Estimated, and labelled so: the carbon intensity (g CO2eq/kWh) is the yearly country average that
CodeCarbon ships with its package (`DataSource().get_global_energy_mix_data()[ISO3]["carbon_intensity"]`,
read from data/private_infra/global_energy_mix.json; offline, no network, no tracker). It is the same
figure CodeCarbon's own OfflineEmissionsTracker applies to a country without regional data. Neither the
hour's grid mix nor the region (US state, Canadian province) is taken into account.

CodeCarbon is an optional extra, imported lazily; every failure (no energy, no country, country not in
the table, CodeCarbon missing or broken) yields co2_kg=None and a reason, never an exception.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

from lem.units import J_PER_KWH

METHOD = "estimate: energy x grid carbon intensity"


@dataclass
class Co2Estimate:
    co2_kg: Optional[float]  # None when not estimated; `reason` says why
    carbon_intensity_g_per_kwh: Optional[float]  # g CO2eq per kWh of the country's grid
    source: Optional[str]  # "CodeCarbon 3.3.2 global energy mix, France (FRA) 2023"
    method: str = METHOD
    reason: Optional[str] = None  # why co2_kg is None


class NoCarbonIntensity(Exception):
    """The carbon intensity cannot be had; the message says why and how to fix it."""


def co2_estimate(energy_j: Optional[float], country_iso_code: Optional[str]) -> Co2Estimate:
    """kg CO2eq for `energy_j` joules drawn from `country_iso_code`'s grid (ISO 3166 alpha-3)."""
    if energy_j is None:
        return Co2Estimate(None, None, None, reason="no CO2 estimate: the energy was not measured")
    if not math.isfinite(energy_j) or energy_j < 0:
        return Co2Estimate(None, None, None, reason=f"no CO2 estimate: energy_j={energy_j!r} is not a "
                           f"finite, non-negative number")
    country = (country_iso_code or "").strip().upper()
    if not country:
        return Co2Estimate(None, None, None, reason="no CO2 estimate: set energy.country_iso_code "
                           "(ISO 3166 alpha-3, e.g. FRA)")
    try:
        intensity, source = carbon_intensity(country)
    except NoCarbonIntensity as exc:
        return Co2Estimate(None, None, None, reason=f"no CO2 estimate: {exc}")
    return Co2Estimate(energy_j / J_PER_KWH * intensity / 1000.0, intensity, source)


def carbon_intensity(country: str) -> tuple[float, str]:
    """(g CO2eq/kWh, source) of `country` (ISO 3166 alpha-3, upper case) from CodeCarbon's offline table."""
    mix = _global_energy_mix()
    version = _codecarbon_version()
    row = mix.get(country)
    if not isinstance(row, dict):
        hint = " (a 2-letter code? use alpha-3, e.g. FRA for France)" if len(country) == 2 else ""
        raise NoCarbonIntensity(f"{country!r} is not in CodeCarbon {version}'s global energy mix table "
                                f"({len(mix)} countries, ISO 3166 alpha-3 codes){hint}")
    value = row.get("carbon_intensity")
    try:
        intensity = float(value)
    except (TypeError, ValueError):
        raise NoCarbonIntensity(f"CodeCarbon {version}'s global energy mix has no carbon_intensity "
                                f"for {country} (found {value!r})") from None
    name = row.get("country_name")
    where = f"{name} ({country})" if name else country
    year = f" {row['year']}" if row.get("year") is not None else ""
    return intensity, f"CodeCarbon {version} global energy mix, {where}{year}"


def _global_energy_mix() -> dict:
    """CodeCarbon's bundled table {ISO3: {"carbon_intensity": g/kWh, ...}}; NoCarbonIntensity if not."""
    try:
        import codecarbon  # noqa: F401  (first: tells a missing package apart from a moved API)
    except ImportError as exc:
        if exc.name == "codecarbon":
            raise NoCarbonIntensity("the carbon intensity comes from CodeCarbon's offline data: "
                                    "pip install 'lem[codecarbon]'") from None
        raise NoCarbonIntensity(f"CodeCarbon is installed but failed to import: {exc} "
                                f"(codecarbon 2.x needs setuptools < 81)") from None
    except Exception as exc:  # a broken install must not fail the run
        raise NoCarbonIntensity(f"CodeCarbon is installed but failed to import: {exc!r}") from None
    try:
        from codecarbon.input import DataSource

        mix = DataSource().get_global_energy_mix_data()
    except Exception as exc:
        raise NoCarbonIntensity(f"CodeCarbon {_codecarbon_version()}'s offline data could not be read "
                                f"(codecarbon.input.DataSource().get_global_energy_mix_data(): "
                                f"{exc!r})") from None
    if not isinstance(mix, dict):
        raise NoCarbonIntensity(f"CodeCarbon {_codecarbon_version()}'s global energy mix is a "
                                f"{type(mix).__name__}, not a table by country")
    return mix


def _codecarbon_version() -> str:
    try:
        from importlib.metadata import version

        return version("codecarbon")
    except Exception:
        try:
            import codecarbon

            return str(codecarbon.__version__)
        except Exception:
            return "(unknown version)"
