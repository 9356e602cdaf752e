"""Statistics across cycles: mean, sample std, CV and the bootstrap CI of the mean."""

from __future__ import annotations

import math

import numpy as np
import pytest

import lem.analysis.stats
from lem.analysis.metrics import Percentiles
from lem.analysis.stats import CycleStats, cycle_stats, pick, summarise_cycles

FAST = 999  # resamples: enough for the assertions below, fast


def test_one_value_has_no_spread():
    s = cycle_stats([2.5], n_resamples=FAST)
    assert s == CycleStats(1, 2.5, None, None, None, None, "n < 2: no spread")


def test_no_values():
    s = cycle_stats([None, None])
    assert (s.n, s.mean, s.std, s.ci95_low, s.ci95_high) == (0, None, None, None, None)
    assert "no values" in s.method


def test_none_and_nan_are_ignored():
    s = cycle_stats([1.0, None, 3.0, float("nan"), 2.0], n_resamples=FAST)
    assert s.n == 3
    assert s.mean == pytest.approx(2.0)
    assert s.std == pytest.approx(1.0)  # ddof=1: sqrt((1 + 0 + 1) / 2)
    assert s.cv == pytest.approx(0.5)


def test_infinite_value_is_an_error():
    with pytest.raises(ValueError, match="infinite"):
        cycle_stats([1.0, math.inf])


def test_known_values_and_ci_contains_mean():
    s = cycle_stats([10.0, 12.0, 14.0, 16.0, 18.0], n_resamples=FAST)
    assert s.n == 5
    assert s.mean == pytest.approx(14.0)
    assert s.std == pytest.approx(math.sqrt(10.0))
    assert s.cv == pytest.approx(math.sqrt(10.0) / 14.0)
    assert 10.0 <= s.ci95_low < s.mean < s.ci95_high <= 18.0
    assert "BCa" in s.method and f"{FAST} resamples" in s.method and "seed 0" in s.method


def test_ci_width_matches_normal_theory_for_a_large_sample():
    x = np.random.default_rng(42).normal(100.0, 5.0, size=200)
    s = cycle_stats(list(x), n_resamples=2000)
    half_width_theory = 1.96 * x.std(ddof=1) / math.sqrt(len(x))
    assert (s.ci95_high - s.ci95_low) / 2 == pytest.approx(half_width_theory, rel=0.15)
    assert s.ci95_low < x.mean() < s.ci95_high


def test_ci_narrows_with_more_samples():
    few = [1.0, 2.0, 3.0, 4.0, 5.0]
    many = few * 20  # same mean and spread, 20x the cycles: the CI should shrink by about sqrt(20)
    w_few = cycle_stats(few, n_resamples=FAST)
    w_many = cycle_stats(many, n_resamples=FAST)
    assert w_few.mean == pytest.approx(w_many.mean)
    assert (w_many.ci95_high - w_many.ci95_low) < 0.4 * (w_few.ci95_high - w_few.ci95_low)


def test_same_seed_same_ci_other_seed_other_ci():
    x = list(np.random.default_rng(7).normal(10.0, 1.0, size=20))
    a = cycle_stats(x, seed=0, n_resamples=FAST)
    b = cycle_stats(x, seed=0, n_resamples=FAST)
    c = cycle_stats(x, seed=1, n_resamples=FAST)
    assert (a.ci95_low, a.ci95_high) == (b.ci95_low, b.ci95_high)
    assert (a.ci95_low, a.ci95_high) != (c.ci95_low, c.ci95_high)
    assert "seed 1" in c.method


def test_identical_values_have_zero_spread_and_the_ci_is_the_mean():
    s = cycle_stats([0.1, 0.1, 0.1], n_resamples=FAST)
    assert (s.n, s.mean, s.std, s.cv, s.ci95_low, s.ci95_high) == (3, 0.1, 0.0, 0.0, 0.1, 0.1)
    assert "identical" in s.method
    assert cycle_stats([0.0, 0.0]).cv is None


def test_two_values_use_percentile_and_say_so():
    s = cycle_stats([-1.0, 1.0], n_resamples=FAST)
    assert s.n == 2 and s.mean == 0.0
    assert s.cv is None  # mean 0
    assert s.std == pytest.approx(math.sqrt(2.0))
    assert -1.0 <= s.ci95_low <= 0.0 <= s.ci95_high <= 1.0
    assert "percentile" in s.method and "n = 2" in s.method


def test_bca_not_computable_falls_back_to_percentile(monkeypatch):
    real = lem.analysis.stats.bootstrap.mean_ci

    def mean_ci(arr, method, *args):
        if method == "BCa":
            return math.nan, math.nan
        return real(arr, method, *args)

    monkeypatch.setattr(lem.analysis.stats.bootstrap, "mean_ci", mean_ci)
    s = cycle_stats([1.0, 2.0, 4.0, 8.0], n_resamples=FAST)
    assert s.ci95_low < s.mean < s.ci95_high
    assert "percentile" in s.method and "BCa not computable" in s.method


def test_no_finite_ci_at_all_is_none_with_a_reason(monkeypatch):
    monkeypatch.setattr(lem.analysis.stats.bootstrap, "mean_ci", lambda *args: (math.nan, 1.0))
    s = cycle_stats([1.0, 2.0, 4.0], n_resamples=FAST)
    assert (s.ci95_low, s.ci95_high) == (None, None)
    assert s.std is not None and "not computable" in s.method


def test_ci_is_scipy_bootstrap_with_the_seed_and_says_how():
    sps = pytest.importorskip("scipy.stats")
    values = [1.0, 2.0, 3.0, 7.0]
    s = cycle_stats(values, seed=5, n_resamples=FAST)
    ref = sps.bootstrap((np.array(values),), np.mean, n_resamples=FAST, method="BCa", rng=5)
    assert s.ci95_low == pytest.approx(ref.confidence_interval.low, rel=1e-10)
    assert s.ci95_high == pytest.approx(ref.confidence_interval.high, rel=1e-10)
    assert s.method == ("bootstrap BCa, 999 resamples, seed 5 (lem.analysis.bootstrap, "
                        "scipy.stats.bootstrap's draws "
                        "and formulas), 95% CI of the mean")


def test_pick_dotted_paths():
    d = {"summary": {"ttft_s": {"p50": 0.25}, "ttft_stats": Percentiles(n=3, p50=0.5)}}
    assert pick(d, "summary.ttft_s.p50") == 0.25
    assert pick(d, "summary.ttft_stats.p50") == 0.5  # dataclasses by attribute
    assert pick(d, "summary.missing.p50") is None


def test_summarise_cycles():
    cycles = [
        {"output_tokens_per_s": 100.0, "ttft_s": {"p50": 0.10}, "energy_j": 50},
        {"output_tokens_per_s": 110.0, "ttft_s": {"p50": 0.12}, "energy_j": None},
        {"output_tokens_per_s": 120.0, "ttft_s": {}, "energy_j": 70},
    ]
    out = summarise_cycles(cycles, ["output_tokens_per_s", "ttft_s.p50", "energy_j"], n_resamples=FAST)
    assert list(out) == ["output_tokens_per_s", "ttft_s.p50", "energy_j"]
    assert out["output_tokens_per_s"].n == 3
    assert out["output_tokens_per_s"].mean == pytest.approx(110.0)
    assert out["output_tokens_per_s"].std == pytest.approx(10.0)
    assert out["ttft_s.p50"].n == 2
    assert out["ttft_s.p50"].mean == pytest.approx(0.11)
    assert out["energy_j"].n == 2
    assert out["energy_j"].mean == pytest.approx(60.0)


def test_summarise_cycles_rejects_non_numbers():
    with pytest.raises(TypeError, match="status"):
        summarise_cycles([{"status": "ok"}, {"status": "ok"}], ["status"])
