"""The runs table: one tidy row per job directory, the swept config axes as columns."""

from __future__ import annotations

import multiprocessing as mp
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from lem.aggregate.read import LATENCIES, Chunk, Run, find_jobs, problem, read_chunk

# named in every table and plot even when not swept: they say what a configuration is
LABELS = ("backend.name", "model.name", "precision.name", "batching.batch_size")
FIRST = ("path", "status", "valid", "reason")
PARALLEL_MIN_FILES = 400  # below this, starting workers costs more than it saves
CHUNK_FILES = 250


@dataclass
class Study:
    """What was loaded: the runs table (RangeIndex: row i is run i), each run's raw latencies,
    the configs by group hash, the windows of ok runs, the swept axes."""

    table: pd.DataFrame
    latencies: Latencies = field(default_factory=lambda: Latencies.of([]))
    configs: dict[str, dict] = field(default_factory=dict)  # group hash -> flat config
    windows: dict[str, list] = field(default_factory=dict)  # job path -> [(name, start_ns, end_ns)]
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


@dataclass
class Latencies:
    """Every run's raw values of each latency, run after run: run i's are values[k][start[k][i]:
    start[k][i + 1]]. Pooling a group's runs is then slicing, never averaging."""

    values: dict[str, np.ndarray]
    start: dict[str, np.ndarray]

    @classmethod
    def of(cls, chunks: list[Chunk]) -> Latencies:
        values, start = {}, {}
        for k in LATENCIES:
            counts = [c.counts[k] for c in chunks] + [np.zeros(0, np.int64)]
            values[k] = np.concatenate([c.values[k] for c in chunks] or [np.empty(0)])
            start[k] = np.concatenate([[0], np.cumsum(np.concatenate(counts))])
        return cls(values, start)

    def pooled(self, rows) -> dict[str, np.ndarray]:
        """Each latency's values of the given runs (row positions), concatenated."""
        return {k: np.concatenate([self.values[k][self.start[k][i]:self.start[k][i + 1]] for i in rows]
                                  or [np.empty(0)]) for k in LATENCIES}


def collect(*paths, jobs: Optional[int] = None, on_read: Callable[[int, int], None] = lambda done, total: None
            ) -> Study:
    """Read every result under `paths` (sweep dirs, output dirs, trees of them, result files);
    `on_read(files done, files in all)` after each chunk of files."""
    files, missing, sweeps = find_jobs(paths)
    chunks = read_all(files, jobs, on_read)
    problems = [problem(str(d), "missing", "job directory without result.json (killed, or still running)")
                for d in missing]
    never, notes = never_started(sweeps)
    problems += never
    if problems:
        chunks.append(Chunk.of(problems))
    table = columns_table(chunks)
    configs = {h: c for chunk in chunks for h, c in chunk.configs.items()}
    axes = swept_axes(table, configs)
    table = with_axes(table, [*axes, *LABELS], configs)
    return Study(table, Latencies.of(chunks), configs,
                 {p: w for c in chunks for p, w in c.windows.items()}, axes, notes)


def with_axes(table: pd.DataFrame, keys: list[str], configs: dict[str, dict]) -> pd.DataFrame:
    """The axis and label columns from each run's config (by its group hash), typed as the config
    has them, first after the status columns; `repeat` comes from the row itself."""
    hashes = table["group_hash"].tolist() if "group_hash" in table else [None] * len(table)
    for key in dict.fromkeys(keys):
        if key == "repeat":
            values = [None if v is None or v != v else v for v in table[key].tolist()]
            values = [int(v) if isinstance(v, float) and v.is_integer() else v for v in values]
        else:
            values = [configs[h].get(key) if h in configs else None for h in hashes]
        table[key] = _ints(pd.Series(values, dtype=object, index=table.index))
    lead = [*FIRST, *dict.fromkeys(keys)]
    return table[[*lead, *[c for c in table.columns if c not in lead]]]


def columns_table(chunks: list[Chunk]) -> pd.DataFrame:
    """One DataFrame of every chunk's rows, typed once over all of them (so the dtypes never
    depend on how the files were split), columns in first-seen order."""
    names = dict.fromkeys(k for c in chunks for k in c.columns)
    if not names:
        return pd.DataFrame(columns=[*FIRST, "config_hash", "group_hash", "env_key"])
    data = {}
    for name in names:
        data[name] = column = []
        for c in chunks:
            column.extend(c.columns.get(name) or [np.nan] * c.n_rows)
    return pd.DataFrame(data)


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


def read_all(files: list[Path], workers: Optional[int] = None,
             on_read: Callable[[int, int], None] = lambda done, total: None) -> list[Chunk]:
    """Parse every result.json: in chunks over forked worker processes when there are many.

    Parsing (orjson, flattening, raw latencies) is pure CPU and per file. Each worker sends back
    a columnar Chunk (a list per column, an array per latency), so the main process unpickles a
    few large objects, not 10,000 dicts and 40,000 small arrays. Forked, so no worker re-imports
    anything; sequential where fork is unavailable or the tree is small.
    """
    workers = workers or os.cpu_count() or 1
    parts = [files[i:i + CHUNK_FILES] for i in range(0, len(files), CHUNK_FILES)]
    if workers < 2 or len(files) < PARALLEL_MIN_FILES or "fork" not in mp.get_all_start_methods():
        return _reported(map(read_chunk, parts), len(files), on_read)
    with mp.get_context("fork").Pool(workers) as pool:
        return _reported(pool.imap(read_chunk, parts), len(files), on_read)


def _reported(chunks, total: int, on_read: Callable[[int, int], None]) -> list[Chunk]:
    out, done = [], 0
    for chunk in chunks:
        out.append(chunk)
        done += chunk.n_rows
        on_read(done, total)
    return out


def load(*paths) -> pd.DataFrame:
    """One tidy row per run: status, validity, the swept axes, every summary metric, environment."""
    return collect(*paths).table


def swept_axes(table: pd.DataFrame, configs: dict[str, dict]) -> list[str]:
    """Config keys (dotted) whose values differ across the loaded runs, in config order; `repeat`
    last when runs differ in it."""
    unique = list(configs.values())
    keys = dict.fromkeys(k for c in unique for k in c)
    axes = [k for k in keys if len({repr(c.get(k)) for c in unique}) > 1]
    if "repeat" in table and table["repeat"].dropna().nunique() > 1:
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
