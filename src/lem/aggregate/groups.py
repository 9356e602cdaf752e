"""Per configuration (config hash ignoring `repeat`) and environment: n, mean, std, 95% CIs.

Late aggregation: a group's J per output token is its total energy over its total output tokens
and its tokens/s total output tokens over total measured time; its latency percentiles come from
the pooled raw per-request values of all its runs, never from averages of per-run percentiles.
The CIs are bootstrap CIs of the mean of the per-run values (lem.analysis.stats.cycle_stats); a group of
one run has no run-to-run spread, so its CI is the one across that run's cycles (`ci_unit`).
Runs of different environments (GPU, driver, power limit, engine, lem version) never share a group.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Optional

import numpy as np
import pandas as pd

import lem.analysis.stats as lem_stats
from lem.aggregate.read import LATENCIES
from lem.aggregate.shape import RATIOS, STAT_KEYS  # beside the checks that every run has numbers there
from lem.aggregate.table import LABELS, Study
from lem.analysis.bootstrap import mean_ci
from lem.analysis.metrics import PERCENTILES, Percentiles
from lem.analysis.stats import CycleStats, cycle_stats

ENV = ("env.gpu", "env.driver", "env.power_limit_w", "env.engine", "env.lem_version")
CHUNK = 500  # groups per vectorised bootstrap call (bounds memory: CHUNK x resamples x runs)


def groups(study: Study, n_resamples: int = 9999) -> pd.DataFrame:
    """One row per (configuration, environment) over the headline runs (ok and valid)."""
    runs = study.headline
    if runs.empty:
        return pd.DataFrame(columns=["group", "group_hash", "env_key", "n_runs"])
    labels = [k for k in dict.fromkeys([*study.axes, *LABELS]) if k != "repeat"]
    needed = [*labels, *ENV, "path", "group_hash", "env_key", "summary.cycles",
              *{f"summary.{c}" for r in RATIOS for c in r[:3]},
              *[f"statistics.{r[0]}.{k}" for r in RATIOS for k in STAT_KEYS]]
    cols = {c: runs[c].to_numpy(dtype=object) if c in runs else np.full(len(runs), None, object)
            for c in needed}
    cols["row"] = runs.index.to_numpy()  # the table's row positions: where each run's latencies are
    rows, jobs = [], []
    for idx in runs.groupby(["group_hash", "env_key"], sort=False).indices.values():
        rows.append(group_row(study, cols, idx, labels, jobs))
    for (row, metric, _), st in zip(jobs, bootstrap_all([values for _, _, values in jobs], n_resamples)):
        row.update({f"{metric}.{k}": _num(getattr(st, k)) for k in STAT_KEYS})
    df = pd.DataFrame(rows)
    sort = [c for c in labels if c in df.columns]
    df = df.sort_values(sort, kind="stable", na_position="last") if sort else df
    df.insert(0, "group", [f"g{i}" for i in range(len(df))])
    return df.reset_index(drop=True)


def group_row(study: Study, cols: dict, idx: np.ndarray, labels: list[str], jobs: list) -> dict[str, Any]:
    first = idx[0]
    row = {k: cols[k][first] for k in [*labels, "group_hash", "env_key", *ENV]}
    row.update(n_runs=len(idx), n_cycles=int(sum(v or 0 for v in cols["summary.cycles"][idx])),
               paths=";".join(cols["path"][idx]))
    for metric, num, den, with_ci in RATIOS:
        row[metric] = pooled_ratio(cols[f"summary.{num}"][idx], cols[f"summary.{den}"][idx])
        if len(idx) > 1:
            row[f"{metric}.ci_unit"] = "runs"
            values = [_num(v) for v in cols[f"summary.{metric}"][idx]]
            if with_ci:
                jobs.append((row, metric, values))
            else:
                present = [v for v in values if v is not None]
                row.update({f"{metric}.n": len(present), f"{metric}.mean": _mean(present)})
        else:  # one run: its own statistics across cycles
            row[f"{metric}.ci_unit"] = "cycles"
            row.update({f"{metric}.{k}": _num(cols[f"statistics.{metric}.{k}"][first]) for k in STAT_KEYS})
    for name, st in pooled_latencies(study.latencies.pooled(cols["row"][idx])).items():
        row.update({f"{name}.{k}": getattr(st, k) for k in ("n", "mean", "p50", "p90", "p95", "p99")})
    return row


def pooled_ratio(num: np.ndarray, den: np.ndarray) -> Optional[float]:
    """sum(num) / sum(den); None when any numerator is missing or the denominator is zero."""
    if any(_num(v) is None for v in num):
        return None
    total = sum(_num(v) or 0 for v in den)
    return float(sum(num) / total) if total else None


def bootstrap_all(values: list[list], n_resamples: int) -> list[CycleStats]:
    """cycle_stats of each list. Lists of one length with no missing and not all-equal values go
    through one vectorised lem.analysis.bootstrap.mean_ci call (the same BCa method, resamples and seed as
    cycle_stats, so the same resample indices and CIs); any non-finite bound falls back to cycle_stats
    (which then tries percentile)."""
    out: list[Optional[CycleStats]] = [None] * len(values)
    by_n: dict[int, list[int]] = {}
    for i, v in enumerate(values):
        if len(v) >= 3 and all(x is not None for x in v) and len(set(v)) > 1:
            by_n.setdefault(len(v), []).append(i)
    chunks = [idx[k:k + CHUNK] for idx in by_n.values() for k in range(0, len(idx), CHUNK)]
    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:  # numpy releases the GIL: both cores work
        done = pool.map(lambda c: _vectorised(np.array([values[i] for i in c], float), n_resamples), chunks)
        for idx, stats_ in zip(chunks, done):
            for i, st in zip(idx, stats_):
                out[i] = st
    return [st if st is not None else cycle_stats(v, n_resamples=n_resamples) for st, v in zip(out, values)]


def _vectorised(arr: np.ndarray, n_resamples: int) -> list[Optional[CycleStats]]:
    """One bootstrap over rows of `arr` (groups x runs), as lem.analysis.stats.bootstrap_mean_ci
    does per row."""
    low, high = mean_ci(arr, "BCa", n_resamples, 0, lem_stats.CONFIDENCE_LEVEL)
    mean, std = arr.mean(axis=1), arr.std(axis=1, ddof=1)
    method = lem_stats.ci_method_text("BCa", n_resamples, 0)
    out = []
    for k in range(len(arr)):
        if not (np.isfinite(low[k]) and np.isfinite(high[k])):
            out.append(None)  # cycle_stats then tries percentile, as it does
            continue
        m = float(mean[k])
        out.append(CycleStats(arr.shape[1], m, float(std[k]), float(std[k]) / m if m else None,
                              float(low[k]), float(high[k]), method))
    return out


def _num(v) -> Optional[float]:
    return None if v is None or v != v else v


def _mean(values: list) -> Optional[float]:
    return float(np.mean(values)) if values else None


def pooled_latencies(values: dict[str, np.ndarray]) -> dict[str, Percentiles]:
    """Percentiles of the pooled raw values of every request of every run (late aggregation)."""
    return {name: _stats(values[name]) for name in LATENCIES}


def _stats(values: np.ndarray) -> Percentiles:
    """lem.analysis.metrics.percentiles on an array (the same percentiles, without the list round trip)."""
    if not len(values):
        return Percentiles()
    p = np.percentile(values, PERCENTILES)
    return Percentiles(len(values), float(values.mean()), *map(float, p))

