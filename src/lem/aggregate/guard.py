"""What keeps an aggregation from overwriting a study's report with a poorer one.

A mistyped input (`sweep/typo`, `sweep/plots`) used to aggregate to a "1 missing" report written
over the real one next to it (a path that does not exist writes to its parent). Now an input with
no result.json under it is refused, and a report is replaced only by one that covers at least as
many ok results, unless forced: each aggregation records what it covered in aggregate.json.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional

from lem.aggregate.read import RESULT_FILE
from lem.aggregate.table import Study

COVERAGE_FILE = "aggregate.json"  # next to report.md: what that report covered, for the next run


class Refused(Exception):
    """Nothing was written; the message says what was refused, which path, and how to go on."""


def check_inputs(paths) -> None:
    """Refuse inputs with nothing to aggregate: a path that does not exist, or a directory with
    no result.json anywhere below it (the jobs of a sweep whose every job was killed included:
    there is no result to report, and its report would replace one that had some)."""
    for path in map(Path, paths):
        if path.is_file():
            continue  # a file is read as a result.json (and listed as corrupt if it is not one)
        if not path.exists():
            raise Refused(f"{path} does not exist: nothing to aggregate, nothing written; check the path "
                          f"(the nearest existing directory is {_nearest_dir(path)})")
        if not _has_result(path):
            raise Refused(f"no {RESULT_FILE} found under {path}: nothing to aggregate, nothing written; pass a "
                          f"sweep dir, a job's output dir or a {RESULT_FILE} (or its jobs were killed before "
                          "they wrote one: rerun them)")


def _nearest_dir(path: Path) -> Path:
    for parent in path.parents:
        if parent.is_dir():
            return parent
    return Path("/")


def _has_result(root: Path) -> bool:
    """Whether a result.json lies anywhere below `root`, hidden directories skipped as
    lem.aggregate.read.find_jobs skips them; stops at the first (a sweep's first job has one)."""
    for _, dirnames, filenames in os.walk(root):
        if RESULT_FILE in filenames:
            return True
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
    return False


def covered(out: Path) -> Optional[int]:
    """How many ok results the aggregation already in `out` covered: from aggregate.json, else
    from the status column of runs.csv (outputs written before aggregate.json existed); None
    when `out` holds neither."""
    try:
        return int(json.loads((out / COVERAGE_FILE).read_text(encoding="utf-8"))["ok"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    try:
        import pyarrow.compute as pc
        import pyarrow.csv as pa_csv

        status = pa_csv.read_csv(out / "runs.csv", convert_options=pa_csv.ConvertOptions(
            include_columns=["status"])).column("status")
        return int(pc.sum(pc.equal(status, "ok")).as_py() or 0)
    except (OSError, ValueError, KeyError, TypeError):  # no runs.csv, or not a table with a status column
        return None


def check_not_poorer(out: Path, study: Study, inputs) -> None:
    """Refuse to replace outputs in `out` that covered more ok results than `study` has."""
    before, now = covered(out), n_ok(study)
    if before is None or now >= before:
        return
    existing = out / "report.md" if (out / "report.md").exists() else out / "runs.csv"
    raise Refused(f"{existing} covers {before} ok results, this aggregation of "
                  f"{', '.join(map(str, inputs))} only {now}: not replaced, nothing written; check the inputs, "
                  "or pass --out DIR to write elsewhere or --force to replace it (force=True in Python)")


def n_ok(study: Study) -> int:
    return int((study.table["status"] == "ok").sum())


def write_coverage(out: Path, study: Study, inputs) -> Path:
    """aggregate.json: what this aggregation covered (the next one is checked against it)."""
    record = {"ok": n_ok(study), "ok_and_valid": len(study.headline), "job_dirs": len(study.table),
              "statuses": {str(s): int(n) for s, n in study.table["status"].value_counts().items()},
              "inputs": [str(p) for p in inputs]}
    path = out / COVERAGE_FILE
    path.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    return path
