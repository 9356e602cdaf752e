"""CO2 estimate = measured energy x the grid's carbon intensity from CodeCarbon's offline table.

The paths without CodeCarbon (no energy, no country, not installed) and the arithmetic run everywhere,
the last through a fake codecarbon.input; one test reads the real package's table and checks the figure
against CodeCarbon's own Emissions.get_country_emissions, and skips where codecarbon is not installed.
"""

from __future__ import annotations

import math
import sys
import types

import pytest

from lem.analysis import co2
from lem.analysis.co2 import METHOD, Co2Estimate, co2_estimate

KWH = 3.6e6  # J


@pytest.fixture
def no_codecarbon(monkeypatch):
    """Import of codecarbon fails as if it were not installed, even where it is."""
    monkeypatch.setitem(sys.modules, "codecarbon", None)
    monkeypatch.delitem(sys.modules, "codecarbon.input", raising=False)


@pytest.fixture
def fake_codecarbon(monkeypatch):
    """A codecarbon whose DataSource serves `table` (edit it in the test); version 9.9."""
    table = {"FRA": {"carbon_intensity": 56.039, "country_name": "France", "year": 2023},
             "XYZ": {"country_name": "Nowhere"},
             "ABC": {"carbon_intensity": 500}}

    class DataSource:
        def get_global_energy_mix_data(self):
            return table

    pkg = types.ModuleType("codecarbon")
    inp = types.ModuleType("codecarbon.input")
    inp.DataSource = DataSource
    pkg.input = inp
    monkeypatch.setitem(sys.modules, "codecarbon", pkg)
    monkeypatch.setitem(sys.modules, "codecarbon.input", inp)
    monkeypatch.setattr(co2, "_codecarbon_version", lambda: "9.9")
    return table


def _null(est: Co2Estimate, *fragments: str) -> None:
    assert est.co2_kg is None
    assert est.method == METHOD == "estimate: energy x grid carbon intensity"
    assert est.reason is not None and est.reason.startswith("no CO2 estimate: ")
    for fragment in fragments:
        assert fragment in est.reason, est.reason


def test_no_energy_gives_null_with_reason(no_codecarbon):
    est = co2_estimate(None, "FRA")
    _null(est, "energy was not measured")
    assert est.carbon_intensity_g_per_kwh is None and est.source is None


@pytest.mark.parametrize("energy_j", [-1.0, math.nan, math.inf])
def test_energy_that_is_not_a_quantity_gives_null(no_codecarbon, energy_j):
    _null(co2_estimate(energy_j, "FRA"), "energy_j=", "finite, non-negative")


@pytest.mark.parametrize("country", [None, "", "  "])
def test_no_country_asks_for_one(no_codecarbon, country):
    est = co2_estimate(1000.0, country)
    _null(est, "set energy.country_iso_code (ISO 3166 alpha-3, e.g. FRA)")
    assert est.carbon_intensity_g_per_kwh is None and est.source is None


def test_codecarbon_not_installed_says_how_to_install(no_codecarbon):
    est = co2_estimate(1000.0, "FRA")
    _null(est, "pip install 'lem[codecarbon]'")
    assert est.carbon_intensity_g_per_kwh is None and est.source is None


def test_estimate_is_energy_times_intensity(fake_codecarbon):
    est = co2_estimate(2 * KWH, "FRA")
    assert est.carbon_intensity_g_per_kwh == 56.039
    assert est.co2_kg == pytest.approx(2 * 56.039 / 1000)
    assert est.source == "CodeCarbon 9.9 global energy mix, France (FRA) 2023"
    assert est.method == METHOD and est.reason is None


def test_country_code_is_normalised_and_zero_energy_is_zero(fake_codecarbon):
    est = co2_estimate(0.0, " fra ")
    assert est.co2_kg == 0.0 and est.carbon_intensity_g_per_kwh == 56.039


def test_source_without_name_or_year(fake_codecarbon):
    est = co2_estimate(KWH, "ABC")
    assert est.co2_kg == pytest.approx(0.5)
    assert est.source == "CodeCarbon 9.9 global energy mix, ABC"


def test_unknown_country_is_named_with_the_table(fake_codecarbon):
    est = co2_estimate(KWH, "QQQ")
    _null(est, "'QQQ' is not in CodeCarbon 9.9's global energy mix table", "3 countries", "alpha-3")
    assert "2-letter" not in est.reason


def test_two_letter_code_gets_a_hint(fake_codecarbon):
    _null(co2_estimate(KWH, "fr"), "'FR' is not in CodeCarbon", "2-letter code? use alpha-3, e.g. FRA")


def test_country_without_carbon_intensity(fake_codecarbon):
    _null(co2_estimate(KWH, "XYZ"), "no carbon_intensity for XYZ")


def test_a_failing_datasource_does_not_raise(fake_codecarbon, monkeypatch):
    def boom(self):
        raise FileNotFoundError("global_energy_mix.json")

    monkeypatch.setattr(sys.modules["codecarbon.input"].DataSource, "get_global_energy_mix_data", boom)
    _null(co2_estimate(KWH, "FRA"), "offline data could not be read", "global_energy_mix.json")


def test_a_moved_api_does_not_raise(fake_codecarbon, monkeypatch):
    monkeypatch.delattr(sys.modules["codecarbon.input"], "DataSource")
    _null(co2_estimate(KWH, "FRA"), "offline data could not be read", "ImportError")


def _real_codecarbon():
    try:
        import codecarbon
        from codecarbon.input import DataSource  # noqa: F401
    except Exception as exc:
        pytest.skip(f"codecarbon is not importable ({exc}); pip install 'lem[codecarbon]' to check the "
                    f"estimate against CodeCarbon's real table (the other tests use a fake)")
    return codecarbon


def test_real_codecarbon_table_matches_its_own_emissions_model():
    _real_codecarbon()
    from codecarbon.core.emissions import Emissions
    from codecarbon.core.units import Energy
    from codecarbon.external.geography import GeoMetadata
    from codecarbon.input import DataSource

    from lem.analysis.co2 import _codecarbon_version

    est = co2_estimate(10 * KWH, "FRA")
    assert est.reason is None, est.reason
    assert 0 < est.carbon_intensity_g_per_kwh < 1500
    assert est.co2_kg == pytest.approx(10 * est.carbon_intensity_g_per_kwh / 1000)
    assert est.source.startswith(f"CodeCarbon {_codecarbon_version()} global energy mix, France (FRA)")
    # the same kg CodeCarbon's own tracker would book for 10 kWh in France (no regional data there)
    theirs = Emissions(DataSource()).get_country_emissions(Energy.from_energy(10.0),
                                                           GeoMetadata("FRA", "France"))
    assert est.co2_kg == pytest.approx(theirs)

    unknown = co2_estimate(KWH, "QQQ")
    assert unknown.co2_kg is None and "'QQQ' is not in CodeCarbon" in unknown.reason
