"""Bootstrap confidence intervals of the mean, numpy only: scipy.stats.bootstrap's CIs, fast.

`mean_ci` gives the same bounds as ``scipy.stats.bootstrap((values,), np.mean, axis=-1,
confidence_level=..., n_resamples=..., method=..., rng=seed)`` (scipy >= 1.15, where an integer `rng`
seeds ``np.random.default_rng``):

- the same resamples: one ``default_rng(seed).integers(0, n, (n_resamples, n))`` draw of indices, shared
  by every row (scipy resamples the last axis with one index array, whatever the leading shape);
- the same statistics: each resample's mean is computed the way scipy computes it (np.mean over the
  gathered values, so the same float sums), where it matters;
- the same interval: percentile, or BCa (z0 from the fraction of resampled means below/at the mean,
  the acceleration from the jackknife means), and the same 'linear' quantile interpolation.

Why it is fast: with n values a resample is a multiset of indices, and 9999 draws hold few distinct ones
when n is small (n = 5: at most 126). Each row's bootstrap distribution is then a few weighted atoms
(one mean per distinct multiset, weighted by how often it was drawn) whose order statistics come from the
cumulative weights. The only place where float rounding between resamples of one multiset matters is the
comparison with the sample mean in BCa's z0 (a permutation of the sample has exactly the sample's mean in
real arithmetic): resamples of a multiset within rounding of the mean are evaluated one by one, exactly as
scipy does. Where the distinct multisets are not much fewer than the resamples, every resample is
evaluated (scipy's computation, without its overhead).

Bounds agree with scipy's to rounding (the normal cdf and its inverse come from the standard library,
not scipy.special; an order statistic is one float of its multiset, scipy's may differ in the last bit).
"""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np

__all__ = ["mean_ci"]

_NORMAL = NormalDist()
_ATOMS_BELOW = 0.25  # use atoms when distinct multisets < this fraction of the resamples


def _ndtri(p: np.ndarray) -> np.ndarray:
    """Inverse standard normal cdf, elementwise (-inf at 0, inf at 1, NaN outside [0, 1] or NaN)."""
    p = np.asarray(p, dtype=float)
    out = np.full(p.shape, np.nan)
    out[p == 0] = -np.inf
    out[p == 1] = np.inf
    inner = (p > 0) & (p < 1)
    uniq, inv = np.unique(p[inner], return_inverse=True)  # z0's p takes few values: (count) / (2 B)
    out[inner] = np.array([_NORMAL.inv_cdf(float(u)) for u in uniq])[inv.ravel()]
    return out


def _ndtr(z: np.ndarray) -> np.ndarray:
    """Standard normal cdf, elementwise (NaN stays NaN)."""
    z = np.asarray(z, dtype=float)
    return np.array([0.5 * math.erfc(-v / math.sqrt(2.0)) for v in z.ravel().tolist()]).reshape(z.shape)


def _draws(n: int, n_resamples: int, seed) -> np.ndarray:
    """scipy's resample indices: one (n_resamples, n) draw, batch = n_resamples (scipy's default)."""
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    return rng.integers(0, n, (n_resamples, n))


def _means(x: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """(G, len(idx)) means of the resamples idx (rows of indices), as scipy computes them."""
    return np.mean(x[:, idx], axis=-1)


def _quantile(ys: np.ndarray, cum: np.ndarray, total: int, p: np.ndarray) -> np.ndarray:
    """scipy.stats.quantile(method='linear') of each row's distribution at probability p (G,).

    The distribution of row g is the sorted atoms ys[g] each repeated per the cumulative counts cum[g]
    (cum[g, -1] == total); plain sorted values are atoms of count 1."""
    p = np.asarray(p, dtype=float)
    bad = ~((p >= 0) & (p <= 1))  # NaN too
    p = np.where(bad, 0.5, p)
    jg = p * float(total) + (1 - p)
    jp1 = jg // 1
    j = jp1 - 1
    g = jg % 1
    g = np.where(j < 0, 0.0, g)
    j = np.clip(j, 0.0, total - 1).astype(np.int64)
    jp1 = np.clip(jp1, 0.0, total - 1).astype(np.int64)
    if cum is None:
        lo = np.take_along_axis(ys, j[:, None], axis=1)[:, 0]
        hi = np.take_along_axis(ys, jp1[:, None], axis=1)[:, 0]
    else:  # the atom holding order statistic k: the first whose cumulative count exceeds k
        lo = np.take_along_axis(ys, (cum <= j[:, None]).sum(axis=1)[:, None], axis=1)[:, 0]
        hi = np.take_along_axis(ys, (cum <= jp1[:, None]).sum(axis=1)[:, None], axis=1)[:, 0]
    out = (1 - g) * lo + g * hi
    out[bad] = np.nan
    return out


def _acceleration(x: np.ndarray) -> np.ndarray:
    """BCa's acceleration per row from the jackknife (leave-one-out) means, scipy's formula."""
    n = x.shape[1]
    keep = np.array([[k for k in range(n) if k != i] for i in range(n)])
    theta_i = _means(x, keep)  # (G, n)
    nf = float(n)
    u = (nf - 1) * (theta_i.mean(axis=-1, keepdims=True) - theta_i)
    num = np.sum(u ** 3, axis=-1) / nf ** 3
    den = np.sum(u ** 2, axis=-1) / nf ** 2
    return 1 / 6 * num / den ** (3 / 2)


class _Distribution:
    """Each row's bootstrap distribution of the mean: sorted values `ys` (G, m), each repeated per the
    cumulative counts `cum` (None: each once). Atoms: `vals` (G, K) one mean per distinct multiset,
    `mult` its draws, `inverse` the multiset of each resample; direct: `vals` (G, B) every mean."""

    def __init__(self, x: np.ndarray, idx: np.ndarray):
        B, n = idx.shape
        self.x, self.idx, self.B = x, idx, B
        self.atoms = False
        if n <= 15:  # keys below (n + 1) ** n: int64 up to n = 15; beyond, atoms never pay
            # the multiset of a resample as one integer: the sum of (n + 1) ** index over its indices
            # (counts are at most n, so these are the base-(n + 1) digits of the key)
            keys = ((n + 1) ** idx).sum(axis=1)
            _, first, inverse, mult = np.unique(keys, return_index=True, return_inverse=True,
                                                return_counts=True)
            self.atoms = len(mult) < _ATOMS_BELOW * B
        if self.atoms:
            self.mult, self.inverse = mult, inverse.ravel()
            self.vals = _means(x, idx[first])  # each multiset's mean, from one of its resamples
            order = np.argsort(self.vals, axis=1, kind="stable")
            self.ys = np.take_along_axis(self.vals, order, axis=1)
            self.cum = np.cumsum(mult[order], axis=1)
        else:
            self.vals = _means(x, idx)
            self.ys, self.cum = np.sort(self.vals, axis=1), None

    def quantile(self, p: np.ndarray) -> np.ndarray:
        return _quantile(self.ys, self.cum, self.B, p)

    def below(self, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per row, how many resampled means are < theta and <= theta, exactly as scipy counts them."""
        t = theta[:, None]
        if not self.atoms:
            return np.count_nonzero(self.vals < t, axis=1), np.count_nonzero(self.vals <= t, axis=1)
        # multisets within rounding of theta in some row: each of their resamples exactly, as scipy
        n = self.x.shape[1]
        tol = 4 * n * np.finfo(float).eps * np.abs(self.x).max(axis=1, keepdims=True)
        near = (np.abs(self.vals - t) <= tol).any(axis=0)
        w = np.where(near, 0, self.mult)
        lt, le = (self.vals < t) @ w, (self.vals <= t) @ w
        if near.any():
            tuples, tcount = np.unique(self.idx[near[self.inverse]], axis=0, return_counts=True)
            exact = _means(self.x, tuples)
            lt, le = lt + (exact < t) @ tcount, le + (exact <= t) @ tcount
        return lt, le


def _bca_probabilities(x: np.ndarray, dist: _Distribution, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """BCa's adjusted probabilities (alpha_1, alpha_2) per row: z0 from the resampled means below the
    sample mean, the acceleration from the jackknife."""
    lt, le = dist.below(np.mean(x, axis=-1))  # the sample mean: scipy's statistic on the data
    z0 = _ndtri((lt + le).astype(float) / (2 * dist.B))
    a = _acceleration(x)
    z_alpha = float(_ndtri(np.array([alpha]))[0])
    num1 = z0 + z_alpha
    num2 = z0 - z_alpha
    return _ndtr(z0 + num1 / (1 - a * num1)), _ndtr(z0 + num2 / (1 - a * num2))


def mean_ci(values: np.ndarray, method: str = "BCa", n_resamples: int = 9999, seed=0,
            confidence: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """(low, high) of the two-sided bootstrap CI of the mean of each row of `values` (G, n).

    method "BCa" or "percentile"; `seed` an int (or a numpy Generator) as scipy's `rng`. A bound that
    cannot be computed (BCa on a row of identical values) is NaN. A 1-d `values` is one row: the bounds
    are then floats."""
    x = np.asarray(values, dtype=float)
    one = x.ndim == 1
    x = np.atleast_2d(x)
    if x.ndim != 2 or x.shape[1] < 2:
        raise ValueError(f"values must be (rows, n >= 2), got shape {x.shape}")
    method = method.lower()
    if method not in ("bca", "percentile"):
        raise ValueError(f"method must be 'BCa' or 'percentile', got {method!r}")
    if int(n_resamples) != n_resamples or n_resamples < 1:
        raise ValueError("n_resamples must be a positive integer")
    alpha = (1 - confidence) / 2
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        dist = _Distribution(x, _draws(x.shape[1], int(n_resamples), seed))
        if method == "percentile":
            p_low, p_high = np.full(len(x), alpha), np.full(len(x), 1 - alpha)
        else:
            p_low, p_high = _bca_probabilities(x, dist, alpha)
        low, high = dist.quantile(p_low), dist.quantile(p_high)
    low[~np.isfinite(low)] = np.nan
    high[~np.isfinite(high)] = np.nan
    if one:
        return float(low[0]), float(high[0])
    return low, high
