"""Find job directories and read each result.json into one flat record (never fatal).

A job directory is one with a result.json, or one Hydra made (it has `.hydra/`) without a
result.json: that one is `missing`. An unparsable result.json, or one with a field of the wrong
type (lem.aggregate.shape: the result schema's own types, checked on the parsed JSON), is
`corrupt`; one whose status is still `running` (the run died before it could finish its result)
is `partial`. Only what the aggregation needs is kept:
scalars, flattened, and per run the raw per-request latencies.
`read_chunk` returns them columnar (a list per column, an array per latency): a parsing worker
sends that back as a few large objects instead of thousands of small ones
(benchmarks/aggregate_speed.py).
"""

from __future__ import annotations

import gc
import hashlib
import itertools
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from lem.aggregate.shape import wrong_type
from lem.backends.registry import SPECS
from lem.config.not_measured import NOT_MEASURED_KEYS
from lem.paths import RESULT_FILE
from lem.result.schema import SCHEMA_MAJOR

try:  # orjson parses result.json (tens of KB each, mostly token times) several times faster
    import orjson

    _loads = orjson.loads
except ImportError:  # pragma: no cover - orjson is a dependency; json still works
    _loads = json.loads

FINISHED = ("ok", "failed", "skipped", "interrupted")
# keys that change nothing measured (as lem.config.schema's hash) plus `repeat`, the repeat index
IGNORED_KEYS = NOT_MEASURED_KEYS + ("hydra",)
GROUP_IGNORED = IGNORED_KEYS + ("repeat",)
LATENCIES = ("ttft_s", "tpot_s", "e2e_s", "itl_s")
# the engine's own library per backend: a different version is a different environment
ENGINE_LIBS = {name: spec.version_keys for name, spec in SPECS.items()}


@dataclass
class Run:
    """One job directory: its flat row, and for ok runs the raw latencies and windows."""

    path: str
    row: dict[str, Any]
    config: dict[str, Any] = field(default_factory=dict)  # flattened, dotted keys, without `repeat`
    latencies: dict[str, np.ndarray] = field(default_factory=dict)
    windows: list[tuple[str, int, int]] = field(default_factory=list)


_EMPTY = np.empty(0)


@dataclass
class Chunk:
    """Some runs, columnar: their table's columns, each latency's raw values run after run with each run's
    count, the configs by group hash and the windows of ok runs by job path."""

    columns: dict[str, list]  # the rows as columns (missing: NaN), typed once, by the caller
    values: dict[str, np.ndarray]
    counts: dict[str, np.ndarray]
    configs: dict[str, dict[str, Any]]
    windows: dict[str, list]

    @property
    def n_rows(self) -> int:
        return len(self.counts[LATENCIES[0]])  # one count per run

    @classmethod
    def of(cls, runs: list[Run]) -> Chunk:
        values = {k: np.concatenate([r.latencies.get(k, _EMPTY) for r in runs] or [_EMPTY]) for k in LATENCIES}
        counts = {k: np.fromiter((len(r.latencies.get(k, _EMPTY)) for r in runs), np.int64, len(runs))
                  for k in LATENCIES}
        configs = {r.row["group_hash"]: r.config for r in runs if r.config}
        return cls(transpose([r.row for r in runs]), values, counts, configs,
                   {r.path: r.windows for r in runs if r.windows})


def transpose(rows: list[dict[str, Any]]) -> dict[str, list]:
    """Rows -> columns, NaN where a row lacks a key, keys in first-seen order (as pandas does).
    Rows with the same keys in the same order (nearly all: runs of one status) go through zip in
    C, and each set of them lands in its rows' places with one numpy assignment."""
    shapes: dict[tuple, list[int]] = {}
    for i, row in enumerate(rows):
        shapes.setdefault(tuple(row), []).append(i)
    if len(shapes) == 1:
        keys = next(iter(shapes))
        return dict(zip(keys, map(list, zip(*(r.values() for r in rows)))))
    names = dict.fromkeys(k for keys in shapes for k in keys)
    columns = {k: np.full(len(rows), np.nan, dtype=object) for k in names}
    for keys, where in shapes.items():
        for k, col in zip(keys, zip(*(rows[i].values() for i in where))):
            columns[k][where] = col
    return {k: col.tolist() for k, col in columns.items()}


def read_chunk(files: list[Path]) -> Chunk:
    """read_run on each file, with the cyclic garbage collector paused: the parsed results are
    trees of fresh dicts and lists, which set it off again and again for nothing (no cycles)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        return Chunk.of([read_run(f) for f in files])
    finally:
        if enabled:
            gc.enable()


def find_jobs(paths) -> tuple[list[Path], list[Path], list[Path]]:
    """(result files, job dirs without one, sweep dirs with a multirun.yaml) under the given
    sweep/output dirs or files: one walk of the tree, in path order (component by component)."""
    results, missing, sweeps = set(), set(), set()
    for p in map(str, paths):
        if os.path.isfile(p):
            results.add(p)
            continue
        if not os.path.isdir(p):
            missing.add(p)
            continue
        for dirpath, dirnames, filenames in os.walk(p):
            if "multirun.yaml" in filenames:
                sweeps.add(dirpath)
            if RESULT_FILE in filenames:
                results.add(os.path.join(dirpath, RESULT_FILE))
            elif ".hydra" in dirnames:
                missing.add(dirpath)
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
    return _sorted_paths(results), _sorted_paths(missing), _sorted_paths(sweeps)


def _sorted_paths(paths: set[str]) -> list[Path]:
    """Unique and sorted as Paths sort (by components), without 100,000 Path comparisons."""
    unique = {os.path.normpath(p) for p in paths}  # tree/x and tree//x or ./tree/x: one job
    return [Path(p) for p in sorted(unique, key=lambda p: p.split(os.sep))]


# prefix -> key -> dotted name, built once: the rows of 10,000 runs share their key strings (in
# memory, and when a parsing worker pickles them back: pickle writes a shared object once)
_NAMES: dict[str, dict[str, str]] = {}


def dotted(prefix: str, key: str) -> str:
    names = _NAMES.setdefault(prefix, {})
    name = names.get(key)
    if name is None:
        name = names[key] = sys.intern(f"{prefix}{key}")
    return name


def flatten(obj: Any, prefix: str = "", out: Optional[dict] = None) -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}; lists stay values (shown as JSON text in tables)."""
    out = {} if out is None else out
    names = _NAMES.setdefault(prefix, {})  # dotted() inlined for known keys: 1.5M calls
    for key, value in obj.items():
        name = names.get(key) or dotted(prefix, key)
        if type(value) is dict and value:
            flatten(value, dotted(name, "."), out)
        elif type(value) is list or type(value) is dict:
            out[name] = _text(value)
        else:
            out[name] = value
    return out


def _text(value) -> str:
    return orjson.dumps(value).decode() if _loads is not json.loads else json.dumps(value)


def group_hash(config: dict[str, Any]) -> str:
    """Hash of what a run measures, ignoring the repeat index: repeats of a point share it."""
    data = {k: v for k, v in config.items() if k not in GROUP_IGNORED}
    return hashlib.sha256(_dumps_sorted(data)).hexdigest()[:16]


def _dumps_sorted(data) -> bytes:
    try:
        return orjson.dumps(data, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)
    except (NameError, TypeError):
        return json.dumps(data, sort_keys=True, default=str).encode()


def read_run(path: Path) -> Run:
    job = str(path.parent)
    try:
        data = _loads(path.read_bytes())
    except (OSError, ValueError) as e:
        return problem(job, "corrupt", f"result.json unreadable: {type(e).__name__}: {str(e)[:200]}")
    # unlike Result.read, a file without schema_version is refused: a tree may hold JSON of other tools
    if not isinstance(data, dict) or not str(data.get("schema_version", "")).startswith(f"{SCHEMA_MAJOR}."):
        version = data.get("schema_version") if isinstance(data, dict) else None
        return problem(job, "corrupt",
                       f"not a lem result of schema {SCHEMA_MAJOR}.x (schema_version={version!r})")
    wrong = wrong_type(data)
    if wrong:
        return problem(job, "corrupt", corrupt_reason(wrong))
    if data.get("status") not in FINISHED:
        return problem(job, "partial", f"status {data.get('status')!r}: the run ended before its result "
                                       "was finished (killed?)")
    try:
        return _run(job, data)
    except (TypeError, ValueError, AttributeError, KeyError) as e:  # a shape SHAPE does not check
        return problem(job, "corrupt", corrupt_reason(
            wrong_type(data, deep=True) or f"unexpected shape ({type(e).__name__}: {str(e)[:200]})"))


def corrupt_reason(what: str) -> str:
    return (f"result.json: {what}; it was edited or written by another tool: fix the field or rerun the "
            "job, then aggregate again")


def problem(job: str, status: str, reason: str) -> Run:
    return Run(job, {"path": job, "status": status, "valid": False, "reason": reason})


def _run(job: str, data: dict[str, Any]) -> Run:
    config = data.get("config") or {}
    validity = data.get("validity") or {}
    row = {"path": job, "status": data["status"], "valid": validity.get("valid") is True,
           "reason": _reason(data, validity), "config_hash": data.get("config_hash"),
           "group_hash": group_hash(config), "repeat": config.get("repeat"),
           "started_at": data.get("started_at"), "warnings": _warned(validity),
           "wall_s": data.get("wall_s"), **environment_row(data.get("environment") or {}, config)}
    row.update(flatten(data.get("summary") or {}, "summary."))
    for metric, st in (data.get("statistics") or {}).items():
        flatten({k: v for k, v in st.items() if k != "method"}, dotted("statistics.", f"{metric}."), row)
    ts = data.get("timeseries") or {}
    row["timeseries_file"] = str(Path(job) / ts["file"]) if ts.get("file") else None
    run = Run(job, row, flat_config(row["group_hash"], config))
    if data["status"] == "ok":
        run.latencies = latencies(data.get("requests") or [])
        run.windows = [(w.get("name"), w.get("start_ns"), w.get("end_ns")) for w in data.get("windows") or []]
    return run


_FLAT: dict[str, dict[str, Any]] = {}  # group hash -> flattened config without `repeat`


def flat_config(ghash: str, config: dict[str, Any]) -> dict[str, Any]:
    """Flattened config (dotted keys) without `repeat` (the row has it): repeats of a point share
    it, so it is flattened once."""
    flat = _FLAT.get(ghash)
    if flat is None:
        flat = _FLAT[ghash] = flatten({k: v for k, v in config.items() if k not in GROUP_IGNORED})
    return flat


def _warned(validity: dict[str, Any]) -> Optional[str]:
    """The checks that warned, by name (comma-separated): still comparable, worth knowing."""
    names = [c.get("name") for c in validity.get("checks") or []
             if isinstance(c, dict) and c.get("verdict") == "warn"]
    return ",".join(str(n) for n in names) or None


def _reason(data: dict[str, Any], validity: dict[str, Any]) -> Optional[str]:
    """Why a run does not count: its error, or why it is invalid; None for a valid ok run."""
    error = data.get("error") or {}
    if data["status"] != "ok":
        return f"{data['status']}: {error.get('type', '')}: {error.get('message', '')}".strip(": ")
    if validity.get("valid") is not True:
        return "invalid: " + ("; ".join(validity.get("reasons") or []) or "validity not recorded")
    return None


def environment_row(env: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    """The environment columns; `env_key` joins those that must match for results to be pooled."""
    gpus = env.get("gpus") or []
    libs = env.get("libraries") or {}
    backend = (config.get("backend") or {}).get("name")
    names = sorted({g.get("name") or "?" for g in gpus})
    row = {
        "env.gpu": (f"{len(gpus)}x " + "+".join(names)) if gpus else f"cpu: {env.get('cpu')}",
        "env.driver": "+".join(sorted({str(g.get("driver")) for g in gpus})) or None,
        "env.power_limit_w": "+".join(sorted({str(g.get("power_limit_w")) for g in gpus})) or None,
        "env.lem_version": env.get("lem_version"),
        "env.lem_commit": (env.get("git") or {}).get("commit"),
        "env.torch": libs.get("torch"), "env.transformers": libs.get("transformers"),
        "env.engine": " ".join(f"{lib}={libs.get(lib)}" for lib in ENGINE_LIBS.get(backend, ())) or None,
        "env.host": env.get("host"),
    }
    keys = ("env.gpu", "env.driver", "env.power_limit_w", "env.engine", "env.lem_version")
    row["env_key"] = " | ".join(f"{k[4:]}={row[k]}" for k in keys)
    return row


def latencies(requests: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    """Raw per-request TTFT, TPOT, E2E and every inter-token gap, for late aggregation."""
    out = {}
    for k in LATENCIES[:3]:
        values = np.array([r.get(k) for r in requests], dtype=float)
        out[k] = values[~np.isnan(values)]
    times = [r.get("token_times_s") or [] for r in requests]
    lengths = np.fromiter(map(len, times), int, len(times))
    flat = np.fromiter(itertools.chain.from_iterable(times), float, int(lengths.sum()))
    gaps = np.diff(flat)
    keep = np.ones(len(gaps), bool)
    ends = np.cumsum(lengths)[:-1] - 1  # a gap from one request's last token to the next's first
    keep[ends[(ends >= 0) & (ends < len(gaps))]] = False
    out["itl_s"] = gaps[keep]
    return out
