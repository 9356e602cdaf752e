"""Aggregation of lem results: runs table, groups with CIs, plots, report.md, compare.

`load(*paths)` -> one row per run; `python -m lem.aggregate <dirs> [--out DIR]` writes runs and
groups as CSV and Parquet, the plots, report.md and aggregate.json. Never imports torch or an engine.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Optional

from lem.aggregate.guard import Refused, check_not_poorer, write_coverage
from lem.aggregate.table import Study, collect, load, write_table

__all__ = ["load", "collect", "aggregate", "Study", "Refused"]
PROGRESS_EVERY_S = 5.0  # a "reading: n of N" line at most this often, for trees that take long


def aggregate(*paths, out=None, max_series: int = 12, n_resamples: int = 9999, plots: bool = True,
              jobs: Optional[int] = None, log: Callable[[str], None] = lambda msg: None,
              force: bool = False) -> Path:
    """Everything for a study: runs.csv/.parquet, groups.csv/.parquet, plots/*.png, report.md and
    aggregate.json (what it covered). `log` gets a line as each phase ends (the CLI prints them:
    10,000 results take seconds). Raises lem.aggregate.guard.Refused, having written nothing, where
    `out` holds a report of more ok results than these inputs have, unless `force`."""
    from lem.aggregate.groups import groups
    from lem.aggregate.report import write_report

    out = Path(out) if out else default_out(paths)
    jobs = jobs or os.cpu_count() or 1
    t0 = time.perf_counter()
    study = collect(*paths, jobs=jobs, on_read=_every(PROGRESS_EVERY_S, lambda done, total: log(
        f"reading: {done} of {total} result files ({time.perf_counter() - t0:.0f} s)")))
    counts = ", ".join(f"{n} {s}" for s, n in study.table["status"].value_counts().items())
    log(f"read {len(study.table)} job dirs ({counts or 'none'}) in {time.perf_counter() - t0:.1f} s")
    if not force:  # before anything is written, the plots' child process included
        check_not_poorer(out, study, paths)
    # plots in a forked process: it imports matplotlib and draws the per-run power series while
    # the groups are computed here, then the summary plots while the tables are written
    plotter = Plotter(study, out, max_series, fork=jobs > 1) if plots else None
    t0 = time.perf_counter()
    g = groups(study, n_resamples)
    log(f"{len(g)} configurations (from {len(study.headline)} ok and valid runs; CIs from {n_resamples} "
        f"bootstrap resamples) in {time.perf_counter() - t0:.1f} s")
    if plotter:
        plotter.send_groups(g)
    write_table(study.table, out, "runs")
    write_table(g, out, "groups")
    report = write_report(study, g, plotter.made() if plotter else {}, out, paths)
    write_coverage(out, study, paths)  # last: a write cut short leaves the previous, never larger, count
    return report


def _every(period_s: float, report: Callable[[int, int], None]) -> Callable[[int, int], None]:
    """`report`, at most once per `period_s` and never for the last call (the phase's own line
    follows it): progress for trees that take long to read, silence for those that do not."""
    last = time.perf_counter()

    def maybe(done: int, total: int) -> None:
        nonlocal last
        if done < total and time.perf_counter() - last >= period_s:
            last = time.perf_counter()
            report(done, total)
    return maybe


class Plotter:
    """Every plot (lem.aggregate.plots) drawn in a forked child, which inherits the study instead
    of receiving it; inline where fork is unavailable, or when the child dies (so its traceback
    shows). made() returns what was drawn, or why not, by report section."""

    def __init__(self, study: Study, out: Path, max_series: int, fork: bool = True):
        self.args = (study, out, max_series)
        self.proc = self.g = None
        if fork and "fork" in mp.get_all_start_methods():
            ctx = mp.get_context("fork")
            self.conn, child = ctx.Pipe()
            self.proc = ctx.Process(target=_plot_child, args=(child, *self.args), daemon=True)
            self.proc.start()
            child.close()

    def send_groups(self, g) -> None:
        self.g = g
        if self.proc is not None:
            try:
                self.conn.send(g)
            except (BrokenPipeError, OSError):  # the child died already: made() draws inline
                pass

    def made(self) -> dict:
        if self.proc is not None:
            try:
                result = self.conn.recv()
            except (EOFError, OSError):
                result = None
            self.proc.join()
            if result is not None:
                return result
        return draw_all(*self.args, self.g)


def draw_all(study: Study, out: Path, max_series: int, g) -> dict:
    from lem.aggregate.plots import all_plots, series_plots

    return all_plots(study, g, out, series_plots(study, out / "plots", max_series))


def _plot_child(conn, study: Study, out: Path, max_series: int) -> None:
    from lem.aggregate.plots import all_plots, series_plots

    series = series_plots(study, out / "plots", max_series)
    conn.send(all_plots(study, conn.recv(), out, series))
    conn.close()


def default_out(paths) -> Path:
    """Next to the input: the (first) input directory, or the folder of an input file."""
    first = Path(paths[0])
    return first if first.is_dir() else first.parent
