"""Pure functions: statistics of one metric across repeated measurement cycles.

Each cycle gives one value of a metric (a throughput, an energy, a p50 latency); across cycles we report
the mean, the sample spread and a bootstrap 95% confidence interval of the mean. A value that cannot be
computed is None and `method` says why, as everywhere else in the result.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from lem.analysis import bootstrap

CONFIDENCE_LEVEL = 0.95
N_RESAMPLES = 9999


@dataclass
class CycleStats:
    n: int = 0  # cycles that had a value
    mean: Optional[float] = None
    std: Optional[float] = None  # sample standard deviation (ddof=1)
    cv: Optional[float] = None  # std / mean
    ci95_low: Optional[float] = None  # 95% confidence interval of the mean
    ci95_high: Optional[float] = None
    method: str = ""  # how the CI was computed, or why there is none


def _present(values: list[Optional[float]]) -> np.ndarray:
    """The values that are there: None and NaN are missing; an infinite value is a bug upstream."""
    kept = [float(v) for v in values if v is not None and not math.isnan(v)]
    if any(math.isinf(v) for v in kept):
        raise ValueError(f"infinite value among cycle values: {values}")
    return np.asarray(kept, dtype=float)


def ci_method_text(method: str, n_resamples: int, seed: int) -> str:
    """How a bootstrap CI was computed (lem.aggregate.groups writes the same text for its groups)."""
    return (f"bootstrap {method}, {n_resamples} resamples, seed {seed} "
            f"(lem.analysis.bootstrap, scipy.stats.bootstrap's "
            f"draws and formulas), {CONFIDENCE_LEVEL:.0%} CI of the mean")


def bootstrap_mean_ci(arr: np.ndarray, seed: int = 0,
                      n_resamples: int = N_RESAMPLES) -> tuple[Optional[float], Optional[float], str]:
    """(low, high, method) of the 95% bootstrap CI of the mean of `arr` (at least two distinct values).

    BCa first; where BCa cannot be computed (non-finite bounds) percentile instead. With two values BCa's
    jackknife acceleration is meaningless, so percentile directly, and any bootstrap CI of two values is at
    most their range: too narrow, indicative only.
    """
    n = len(arr)
    tried = []
    for method in (("percentile",) if n == 2 else ("BCa", "percentile")):
        low, high = bootstrap.mean_ci(arr, method, n_resamples, seed, CONFIDENCE_LEVEL)
        if math.isfinite(low) and math.isfinite(high):
            text = ci_method_text(method, n_resamples, seed)
            if tried:
                text += f"; {tried[-1]} not computable for these values"
            if n == 2:
                text += "; n = 2: a bootstrap CI is at most the range of the two values, indicative only"
            return low, high, text
        tried.append(method)
    return None, None, f"bootstrap CI not computable ({', '.join(tried)} gave non-finite bounds)"


def cycle_stats(values: list[Optional[float]], seed: int = 0, n_resamples: int = N_RESAMPLES) -> CycleStats:
    """Mean, sample std, CV and bootstrap 95% CI of the mean of one metric across cycles (None ignored)."""
    arr = _present(values)
    n = len(arr)
    if n == 0:
        return CycleStats(0, method="n = 0: no values")
    if n == 1:
        return CycleStats(1, float(arr[0]), method="n < 2: no spread")
    if np.all(arr == arr[0]):
        mean = float(arr[0])
        return CycleStats(n, mean, 0.0, 0.0 if mean else None, mean, mean,
                          "all values identical: no spread, the CI is the mean")
    mean = float(arr.mean())
    std = float(arr.std(ddof=1))
    low, high, method = bootstrap_mean_ci(arr, seed, n_resamples)
    return CycleStats(n, mean, std, std / mean if mean else None, low, high, method)


def pick(obj: Any, path: str) -> Any:
    """obj["a"]["b"] (or obj.a.b for dataclasses) for path "a.b"; None where any step is missing."""
    for key in path.split("."):
        if obj is None:
            return None
        obj = obj.get(key) if isinstance(obj, Mapping) else getattr(obj, key, None)
    return obj


def _number(value: Any, path: str) -> Optional[float]:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"cycle value at {path!r} is not a number: {value!r}")
    return float(value)


def summarise_cycles(cycles: list[dict], metrics: list[str], seed: int = 0,
                     n_resamples: int = N_RESAMPLES) -> dict[str, CycleStats]:
    """CycleStats of each metric (a dotted path, e.g. "ttft_s.p50") over the cycles that have it."""
    return {m: cycle_stats([_number(pick(c, m), m) for c in cycles], seed, n_resamples) for m in metrics}
