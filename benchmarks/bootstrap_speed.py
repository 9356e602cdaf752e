"""Time scipy.stats.bootstrap against lem.analysis.bootstrap.mean_ci on the aggregation's workload.

~2,000 groups x 5 runs, 9999 resamples, BCa and percentile, one vectorised call each; also the cost of
`import scipy.stats` (a fresh interpreter) and the largest difference between the two sets of bounds.

    python benchmarks/bootstrap_speed.py [--groups 2000] [--n 5] [--resamples 9999]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
import warnings

import numpy as np


def _import_time(module: str) -> float:
    code = f"import time; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"
    return min(float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                    check=True).stdout) for _ in range(3))


def _best(fn, repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--groups", type=int, default=2000)
    ap.add_argument("--n", type=int, default=5)
    ap.add_argument("--resamples", type=int, default=9999)
    args = ap.parse_args()
    print(f"import scipy.stats: {_import_time('scipy.stats'):.3f} s; "
          f"import lem.analysis.bootstrap: {_import_time('lem.analysis.bootstrap'):.3f} s "
          f"(fresh interpreter, best of 3)")

    from scipy import stats as sps

    from lem.analysis.bootstrap import mean_ci

    x = np.random.default_rng(1).normal(10.0, 1.0, (args.groups, args.n))
    print(f"{args.groups} rows x n={args.n}, {args.resamples} resamples (best of 3)")
    for method in ("BCa", "percentile"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            ref = sps.bootstrap((x,), np.mean, axis=-1, n_resamples=args.resamples, method=method, rng=0)
            t_scipy = _best(lambda m=method: sps.bootstrap((x,), np.mean, axis=-1, n_resamples=args.resamples,
                                                           method=m, rng=0))
        lo, hi = mean_ci(x, method, args.resamples, 0)
        t_lem = _best(lambda m=method: mean_ci(x, m, args.resamples, 0))
        diff = max(np.max(np.abs(lo - ref.confidence_interval.low) / np.abs(ref.confidence_interval.low)),
                   np.max(np.abs(hi - ref.confidence_interval.high) / np.abs(ref.confidence_interval.high)))
        same = np.mean((lo == ref.confidence_interval.low) & (hi == ref.confidence_interval.high))
        print(f"{method:>10}: scipy {t_scipy:.3f} s, lem.analysis.bootstrap {t_lem:.4f} s "
              f"({t_scipy / t_lem:.0f}x); "
              f"max relative difference {diff:.1e}, bit-identical rows {same:.1%}")


if __name__ == "__main__":
    main()
