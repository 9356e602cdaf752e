"""The runs table: one tidy row per job directory, the swept config axes as columns."""

from __future__ import annotations

import multiprocessing as mp
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from lem.aggregate.read import Run, find_jobs, problem, read_run

# named in every table and plot even when not swept: they say what a configuration is
LABELS = ("backend.name", "model.name", "precision.name", "batching.batch_size")
FIRST = ("path", "status", "valid", "reason")
PARALLEL_MIN_FILES = 400  # below this, starting workers costs more than it saves
CHUNK_FILES = 250


@dataclass
class Study:
    """What was loaded: the runs table, the raw latencies and windows of ok runs, the axes."""

    table: pd.DataFrame
    runs: dict[str, Run] = field(default_factory=dict)  # by path
    axes: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what could not be checked, and why

    @property
    def headline(self) -> pd.DataFrame:
        """Runs that count: status ok and valid."""
        t = self.table
        return t[(t["status"] == "ok") & t["valid"].astype(bool)]

    @property
    def excluded(self) -> pd.DataFrame:
        t = self.table
        return t[~((t["status"] == "ok") & t["valid"].astype(bool))]


def collect(*paths, jobs: Optional[int] = None) -> Study:
    """Read every result under `paths` (sweep dirs, output dirs, trees of them, result files)."""
    files, missing, sweeps = find_jobs(paths)
    runs = read_all(files, jobs)
    runs += [problem(str(d), "missing", "job directory without result.json (killed, or still running)")
             for d in missing]
    never, notes = never_started(sweeps)
    runs += never
    axes = swept_axes(runs)
    table = pd.DataFrame([r.row for r in runs])
    if table.empty:
        table = pd.DataFrame(columns=[*FIRST, "config_hash", "group_hash", "env_key"])
    for key in dict.fromkeys([*axes, *LABELS]):
        table[key] = _ints(pd.Series([r.config.get(key) for r in runs], dtype=object, index=table.index))
    lead = [*FIRST, *dict.fromkeys([*axes, *LABELS])]
    table = table[[*lead, *[c for c in table.columns if c not in lead]]]
    return Study(table, {r.path: r for r in runs}, axes, notes)


def never_started(sweeps: list[Path]) -> tuple[list[Run], list[str]]:
    """A `missing` row per job a sweep's multirun.yaml planned that has no directory at all."""
    from lem.aggregate.plan import unstarted

    runs, notes = [], []
    for sweep in sweeps:
        jobs, note = unstarted(sweep)
        notes += [note] if note else []
        runs += [problem(f"{sweep}/<never started: {' '.join(job)}>", "missing",
                         f"never started: multirun.yaml planned this job ({' '.join(job)}) but it has "
                         f"no directory (the sweep was cut short: rerun it with hydra.sweep.dir={sweep}; "
                         "only the points without an ok result run)")
                 for job in jobs]
    return runs, notes


def read_all(files: list[Path], workers: Optional[int] = None) -> list[Run]:
    """Parse every result.json: in chunks over forked worker processes when there are many.

    Parsing (orjson, flattening, raw latencies) is pure CPU and per file; on the 2-core machine two
    workers cut 10,000 files from 5.8 s to about half (benchmarks/aggregate_speed.py). Forked, so
    no worker re-imports anything; sequential where fork is unavailable or the tree is small.
    """
    workers = workers or os.cpu_count() or 1
    if workers < 2 or len(files) < PARALLEL_MIN_FILES or "fork" not in mp.get_all_start_methods():
        return [read_run(f) for f in files]
    chunks = [files[i:i + CHUNK_FILES] for i in range(0, len(files), CHUNK_FILES)]
    with mp.get_context("fork").Pool(workers) as pool:
        return [run for part in pool.imap(_read_chunk, chunks) for run in part]


def _read_chunk(files: list[Path]) -> list[Run]:
    return [read_run(f) for f in files]


def load(*paths) -> pd.DataFrame:
    """One tidy row per run: status, validity, the swept axes, every summary metric, environment."""
    return collect(*paths).table


def swept_axes(runs: list[Run]) -> list[str]:
    """Config keys (dotted) whose values differ across the loaded runs, in config order."""
    with_config = [r for r in runs if r.config]
    unique = list({r.row["group_hash"]: r.config for r in with_config}.values())  # repeats share one
    keys = dict.fromkeys(k for c in unique for k in c if k != "repeat")
    axes = [k for k in keys if len({repr(c.get(k)) for c in unique}) > 1]
    if len({repr(r.config.get("repeat")) for r in with_config}) > 1:
        axes.append("repeat")
    return axes


def write_table(df: pd.DataFrame, out: Path, name: str) -> list[Path]:
    """CSV and Parquet (both through Arrow: fast); mixed-type object columns become text."""
    out.mkdir(parents=True, exist_ok=True)
    csv, parquet = out / f"{name}.csv", out / f"{name}.parquet"
    clean = df.copy()
    for col in clean.columns:
        if clean[col].dtype == object and _mixed(clean[col]):
            clean[col] = clean[col].map(lambda v: None if v is None or v != v else str(v))
    arrow = pa.Table.from_pandas(clean, preserve_index=False)
    pq.write_table(arrow, parquet)
    pa_csv.write_csv(arrow, csv)
    return [csv, parquet]


def _mixed(col: pd.Series) -> bool:
    return len({type(v) for v in col if v is not None and v == v}) > 1


def _ints(col: pd.Series) -> pd.Series:
    """Axes keep their type: integers stay integers (nullable) where missing/corrupt runs have none."""
    present = col.dropna()
    if len(present) and all(isinstance(v, int) and not isinstance(v, bool) for v in present):
        return col.astype("Int64")
    if len(present) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present):
        return col.astype("float64")
    return col
