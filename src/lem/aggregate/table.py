"""The runs table: one tidy row per job directory, the swept config axes as columns."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from lem.aggregate.read import Run, find_jobs, problem, read_run

# named in every table and plot even when not swept: they say what a configuration is
LABELS = ("backend.name", "model.name", "precision.name", "batching.batch_size")
FIRST = ("path", "status", "valid", "reason")


@dataclass
class Study:
    """What was loaded: the runs table, the raw latencies and windows of ok runs, the axes."""

    table: pd.DataFrame
    runs: dict[str, Run] = field(default_factory=dict)  # by path
    axes: list[str] = field(default_factory=list)

    @property
    def headline(self) -> pd.DataFrame:
        """Runs that count: status ok and valid."""
        t = self.table
        return t[(t["status"] == "ok") & t["valid"].astype(bool)]

    @property
    def excluded(self) -> pd.DataFrame:
        t = self.table
        return t[~((t["status"] == "ok") & t["valid"].astype(bool))]


def collect(*paths) -> Study:
    """Read every result under `paths` (sweep dirs, output dirs, trees of them, result files)."""
    files, missing = find_jobs(paths)
    runs = [read_run(f) for f in files]
    runs += [problem(str(d), "missing", "job directory without result.json (killed, or still running)")
             for d in missing]
    axes = swept_axes([r.config for r in runs if r.config])
    rows = []
    for run in runs:
        row = dict(run.row)
        for key in dict.fromkeys([*axes, *LABELS]):
            row[key] = run.config.get(key)
        rows.append(row)
    table = pd.DataFrame(rows)
    if table.empty:
        table = pd.DataFrame(columns=[*FIRST, "config_hash", "group_hash", "env_key"])
    for key in dict.fromkeys([*axes, *LABELS]):
        table[key] = _ints(table[key])
    lead = [*FIRST, *dict.fromkeys([*axes, *LABELS])]
    table = table[[*lead, *[c for c in table.columns if c not in lead]]]
    return Study(table, {r.path: r for r in runs}, axes)


def load(*paths) -> pd.DataFrame:
    """One tidy row per run: status, validity, the swept axes, every summary metric, environment."""
    return collect(*paths).table


def swept_axes(configs: list[dict]) -> list[str]:
    """Config keys (dotted) whose values differ across the loaded runs, in config order."""
    keys = dict.fromkeys(k for c in configs for k in c)
    axes = []
    for key in keys:
        values = {repr(c.get(key)) for c in configs}
        if len(values) > 1:
            axes.append(key)
    return axes


def write_table(df: pd.DataFrame, out: Path, name: str) -> list[Path]:
    """CSV and Parquet; object columns of mixed types become text so Parquet takes them."""
    out.mkdir(parents=True, exist_ok=True)
    csv, parquet = out / f"{name}.csv", out / f"{name}.parquet"
    df.to_csv(csv, index=False)
    clean = df.copy()
    for col in clean.columns:
        if clean[col].dtype == object and _mixed(clean[col]):
            clean[col] = clean[col].map(lambda v: None if v is None else str(v))
    clean.to_parquet(parquet, index=False)
    return [csv, parquet]


def _mixed(col: pd.Series) -> bool:
    return len({type(v) for v in col if v is not None and v == v}) > 1


def _ints(col: pd.Series) -> pd.Series:
    """Integer axes stay integers (nullable) where missing/corrupt runs have no value."""
    present = col.dropna()
    if len(present) and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in present):
        return col.astype("Int64")
    return col
