"""Hydra callback: one line at the end of a sweep saying what happened, read from the results."""

from __future__ import annotations

import time
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from hydra.experimental.callback import Callback

from lem.paths import RESULT_FILE  # not lem.result.schema: --help and --cfg stay light

if TYPE_CHECKING:
    from lem.result.schema import Result

# read by __main__ after Hydra returns: a sweep with failed points exits non-zero
STATE: dict[str, Any] = {"failed": False, "plan": Counter()}


class SweepSummary(Callback):
    def on_multirun_start(self, config, **kwargs) -> None:
        self.started = time.time()
        STATE["plan"].clear()
        # for lem.job.interrupts: an interrupted sweep never reaches on_multirun_end, yet prints its summary
        STATE["sweep"] = (Path(config.hydra.sweep.dir), self.started, bool(config.get("dry_run")))

    def on_multirun_end(self, config, **kwargs) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        counts = print_summary(sweep_dir, getattr(self, "started", 0.0), bool(config.get("dry_run")))
        if counts is None:  # a dry run: the plan, nothing measured
            return
        failed = counts["failed"] + counts["interrupted"] + counts["corrupt"]
        STATE["failed"] = failed > 0
        STATE["all_invalid"] = counts["skipped"] > 0 and counts["ok"] == 0 and not failed
        if config.get("parity"):
            from lem.analysis.parity import write_report

            print(write_report([sweep_dir], sweep_dir), flush=True)


def print_summary(sweep_dir: Path, started: float, dry_run: bool) -> Optional[Counter]:
    """The sweep's one line (the plan of a dry run); the results counted by status, None if dry."""
    if dry_run:
        plan = STATE["plan"]
        print(f"lem dry run: {plan['run']} to run, {plan['skip']} to skip, {plan['done']} already "
              f"done ({sweep_dir})", flush=True)
        return None
    counts, earlier = count_results(sweep_dir, started)
    print(f"lem sweep: {counts['ok']} ok ({earlier} from earlier runs), {counts['failed']} failed, "
          f"{counts['skipped']} skipped, {counts['interrupted']} interrupted"
          + (f", {counts['corrupt']} unreadable" if counts["corrupt"] else "")
          + f" ({sweep_dir})", flush=True)
    return counts


def count_results(sweep_dir: Path, since: float) -> tuple[Counter, int]:
    """Results by status, and how many ok ones finished before `since` (an earlier run's, resumed).
    One that is not a readable result of this schema counts as corrupt (`unreadable`)."""
    from lem.result.schema import Result  # here: the sweep has ended, the import costs nothing then

    counts, earlier = Counter(), 0
    for path in sorted(sweep_dir.rglob(RESULT_FILE)):  # override values may hold "/"
        try:
            r = Result.read(path)
        except (OSError, ValueError):  # ResultError is a ValueError
            counts["corrupt"] += 1
            continue
        counts[r.status] += 1
        if r.status == "ok" and _finished_before(r, since):
            earlier += 1
    return counts, earlier


def _finished_before(r: Result, since: float) -> bool:
    try:
        return datetime.fromisoformat(r.finished_at).timestamp() < since - 1
    except (TypeError, ValueError):  # not recorded (None), or not an ISO time
        return False


class AggregateAtEnd(Callback):
    """`+hydra/callbacks=aggregate`: run `python -m lem.aggregate <sweep dir>` once the sweep ends.

    A separate callback (not a config key) so it changes no run's config or hash. Whatever goes
    wrong in the aggregation is printed, never turned into a failed sweep: the results are there.
    """

    def on_multirun_end(self, config, **kwargs) -> None:
        if config.get("dry_run"):
            return
        sweep_dir = Path(config.hydra.sweep.dir)
        try:
            from lem.aggregate import aggregate

            started = time.perf_counter()
            report = aggregate(sweep_dir)
            print(f"lem aggregate: {report} ({time.perf_counter() - started:.1f} s)", flush=True)
        except Exception as e:  # the sweep's own outcome stands; say how to retry
            print(f"lem aggregate failed ({type(e).__name__}: {e}); retry with "
                  f"python -m lem.aggregate {sweep_dir}", flush=True)
