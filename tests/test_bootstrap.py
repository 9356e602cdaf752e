"""lem.analysis.bootstrap.mean_ci gives scipy.stats.bootstrap's confidence intervals of the mean,
without scipy."""

from __future__ import annotations

import subprocess
import sys
import warnings

import numpy as np
import pytest

from lem.analysis import bootstrap
from lem.analysis.bootstrap import mean_ci

sps = pytest.importorskip("scipy.stats")

RTOL = 1e-10


def scipy_ci(x: np.ndarray, method: str, n_resamples: int, seed: int, confidence: float = 0.95):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # DegenerateDataWarning and 0/0 on identical values
        res = sps.bootstrap((x,), np.mean, axis=-1, confidence_level=confidence, n_resamples=n_resamples,
                            method=method, rng=seed)
    return res.confidence_interval.low, res.confidence_interval.high


def assert_same(got, want):
    got, want = np.asarray(got, float), np.asarray(want, float)
    assert got.shape == want.shape
    # scipy's non-finite bound is NaN here, and only there
    np.testing.assert_array_equal(np.isnan(got), ~np.isfinite(want))
    ok = np.isfinite(want)
    np.testing.assert_allclose(got[ok], want[ok], rtol=RTOL, atol=0)


def rows(G: int, n: int, seed: int) -> np.ndarray:
    """Normal rows, plus (G > 1) rows with ties: rounded values, one value apart, integers."""
    rng = np.random.default_rng(1000 * n + seed)
    x = rng.normal(5.0, 1.0, (G, n))
    if G >= 4:
        x[1] = np.round(x[1])
        x[2, :] = [1.0] * (n - 1) + [2.0]
        x[3] = np.arange(n, dtype=float)  # symmetric: many resamples have exactly the mean
    return x


@pytest.mark.parametrize("method", ["BCa", "percentile"])
@pytest.mark.parametrize("n", [2, 3, 4, 5, 6, 7, 8, 9, 10, 12])
def test_equals_scipy(method, n):
    for G in (1, 6):
        for seed in (0, 3):
            x = rows(G, n, seed)
            assert_same(mean_ci(x, method, 9999, seed), scipy_ci(x, method, 9999, seed))


@pytest.mark.parametrize("method", ["BCa", "percentile"])
def test_equals_scipy_other_resamples_and_confidence(method):
    x = rows(8, 5, 1)
    for n_resamples, confidence in ((999, 0.95), (100, 0.9), (4000, 0.99), (20000, 0.95)):
        assert_same(mean_ci(x, method, n_resamples, 11, confidence), scipy_ci(x, method, n_resamples, 11,
                                                                              confidence))


def test_one_dimensional_values_are_one_row():
    x = np.array([1.0, 2.0, 4.0, 8.0, 9.5])
    low, high = mean_ci(x, "BCa", 999, 2)
    assert isinstance(low, float) and isinstance(high, float)
    assert_same([low, high], scipy_ci(x, "BCa", 999, 2))
    assert (low, high) == tuple(v[0] for v in mean_ci(x[None, :], "BCa", 999, 2))


def test_identical_values_bca_is_nan_like_scipy_and_percentile_is_the_value():
    x = np.array([[3.3] * 5, [1.0, 2.0, 3.0, 5.0, 8.0], [0.0] * 5])
    low, high = mean_ci(x, "BCa", 999, 0)
    assert np.isnan(low[[0, 2]]).all() and np.isnan(high[[0, 2]]).all()
    assert np.isfinite(low[1]) and np.isfinite(high[1])  # a degenerate row does not spoil the others
    assert_same((low, high), scipy_ci(x, "BCa", 999, 0))
    assert_same(mean_ci(x, "percentile", 999, 0), scipy_ci(x, "percentile", 999, 0))
    assert mean_ci(x, "percentile", 999, 0)[0][0] == pytest.approx(3.3)


def test_a_row_does_not_depend_on_the_others():
    """scipy draws one index array for every row: a row's CI is the same alone or in any batch."""
    x = rows(6, 5, 4)
    low, high = mean_ci(x, "BCa", 9999, 0)
    for k in range(len(x)):
        alone = mean_ci(x[k], "BCa", 9999, 0)
        assert alone == (low[k], high[k])
    low2, high2 = mean_ci(x[::-1], "BCa", 9999, 0)
    np.testing.assert_array_equal(low2[::-1], low)
    np.testing.assert_array_equal(high2[::-1], high)


def test_both_paths_equal_scipy(monkeypatch):
    """The weighted-atoms path and the every-resample path each give scipy's bounds."""
    x = rows(6, 5, 7)
    want = {m: scipy_ci(x, m, 2000, 5) for m in ("BCa", "percentile")}
    for threshold in (0.0, 1.0):  # 0: never atoms; 1: atoms (126 multisets < 2000)
        monkeypatch.setattr(bootstrap, "_ATOMS_BELOW", threshold)
        for m, w in want.items():
            assert_same(mean_ci(x, m, 2000, 5), w)


def test_bca_counts_resamples_at_the_mean_as_scipy_does():
    """A permutation of the sample has the sample's mean in real arithmetic; in floats it may land just
    below or above it depending on the order of the sum, and BCa's z0 counts it as scipy's floats say."""
    x = np.array([[0.1, 0.2, 0.3, 0.7, 1.1], [0.1, 0.7, 0.2, 1.3, 0.3]])
    assert_same(mean_ci(x, "BCa", 9999, 0), scipy_ci(x, "BCa", 9999, 0))


def test_bad_arguments():
    with pytest.raises(ValueError):
        mean_ci(np.array([[1.0]]))
    with pytest.raises(ValueError):
        mean_ci(np.array([1.0, 2.0]), method="basic")
    with pytest.raises(ValueError):
        mean_ci(np.array([1.0, 2.0]), n_resamples=0)


def test_does_not_import_scipy():
    code = ("import sys; import lem.analysis.bootstrap as b, numpy as np;"
            " b.mean_ci(np.array([[1., 2., 4.]]), 'BCa', 99);"
            " b.mean_ci(np.array([1., 2., 4.]), 'percentile', 99);"
            " print(sorted(m for m in sys.modules if m == 'scipy' or m.startswith('scipy.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_lem_stats_does_not_import_scipy():
    code = ("import sys; import lem.analysis.stats as s; s.cycle_stats([1.0, 2.0, 4.0], n_resamples=99);"
            " print(sorted(m for m in sys.modules if m == 'scipy' or m.startswith('scipy.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
