"""Aggregation of lem results: runs table, groups with CIs, plots, report.md, compare.

`load(*paths)` -> one row per run; `python -m lem.aggregate <dirs> [--out DIR]` writes runs and
groups as CSV and Parquet, the plots and report.md. Never imports torch or an engine.
"""

from __future__ import annotations

import multiprocessing as mp
import os
from pathlib import Path
from typing import Optional

from lem.aggregate.table import Study, collect, load, write_table

__all__ = ["load", "collect", "aggregate", "Study"]


def aggregate(*paths, out=None, max_series: int = 12, n_resamples: int = 9999, plots: bool = True,
              jobs: Optional[int] = None) -> Path:
    """Everything for a study: runs.csv/.parquet, groups.csv/.parquet, plots/*.png, report.md."""
    from lem.aggregate.groups import groups
    from lem.aggregate.report import write_report

    out = Path(out) if out else default_out(paths)
    jobs = jobs or os.cpu_count() or 1
    study = collect(*paths, jobs=jobs)
    # the per-run power plots need no groups: drawn in a forked process while groups are computed
    series = SeriesPlots(study, out / "plots", max_series, fork=jobs > 1) if plots else None
    g = groups(study, n_resamples)
    write_table(study.table, out, "runs")
    write_table(g, out, "groups")
    made = {}
    if plots:
        from lem.aggregate.plots import all_plots

        made = all_plots(study, g, out, series.outcomes())
    return write_report(study, g, made, out, paths)


class SeriesPlots:
    """plots.series_plots in a forked child (the study is inherited, not pickled); inline where
    fork is unavailable. outcomes() waits for it and returns what it drew, or why not."""

    def __init__(self, study: Study, plots_dir: Path, max_series: int, fork: bool = True):
        self.args = (study, plots_dir, max_series)
        self.proc = None
        if fork and "fork" in mp.get_all_start_methods():
            ctx = mp.get_context("fork")
            self.recv, send = ctx.Pipe(duplex=False)
            self.proc = ctx.Process(target=_series_child, args=(send, *self.args), daemon=True)
            self.proc.start()
            send.close()

    def outcomes(self) -> list:
        from lem.aggregate.plots import series_plots

        if self.proc is None:
            return series_plots(*self.args)
        try:
            result = self.recv.recv()
        except EOFError:  # the child died: draw here instead, so a crash shows its traceback
            result = None
        self.proc.join()
        return series_plots(*self.args) if result is None else result


def _series_child(send, study, plots_dir, max_series) -> None:
    from lem.aggregate.plots import series_plots

    send.send(series_plots(study, plots_dir, max_series))
    send.close()


def default_out(paths) -> Path:
    """Next to the input: the (first) input directory, or the folder of an input file."""
    first = Path(paths[0])
    return first if first.is_dir() else first.parent
