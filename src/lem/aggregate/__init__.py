"""Aggregation of lem results: runs table, groups with CIs, plots, report.md, compare.

`load(*paths)` -> one row per run; `python -m lem.aggregate <dirs> [--out DIR]` writes runs and
groups as CSV and Parquet, the plots and report.md. Never imports torch or an engine.
"""

from __future__ import annotations

from pathlib import Path

from lem.aggregate.table import Study, collect, load, write_table

__all__ = ["load", "collect", "aggregate", "Study"]


def aggregate(*paths, out=None, max_series: int = 12, n_resamples: int = 9999, plots: bool = True) -> Path:
    """Everything for a study: runs.csv/.parquet, groups.csv/.parquet, plots/*.png, report.md."""
    from lem.aggregate.groups import groups
    from lem.aggregate.report import write_report

    out = Path(out) if out else default_out(paths)
    study = collect(*paths)
    g = groups(study, n_resamples)
    write_table(study.table, out, "runs")
    write_table(g, out, "groups")
    made = {}
    if plots:
        from lem.aggregate.plots import all_plots

        made = all_plots(study, g, out, max_series)
    return write_report(study, g, made, out, paths)


def default_out(paths) -> Path:
    """Next to the input: the (first) input directory, or the folder of an input file."""
    first = Path(paths[0])
    return first if first.is_dir() else first.parent
