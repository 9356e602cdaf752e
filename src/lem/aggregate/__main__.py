"""python -m lem.aggregate <dir> [<dir> ...] [--out DIR] [--force]
python -m lem.aggregate compare <dirA> <dirB> [--out DIR]   (or --compare A B)

Exit status: 0 when written (results that do not count, such as failed or corrupt ones, are
listed in report.md); 2, with nothing written and the reason on stderr, when an input has nothing
to aggregate (it does not exist, or has no result.json under it), or when the output directory
holds a report (aggregate.json, or runs.csv) that covered more ok results than this aggregation
would: a report is never replaced by a poorer one unless --force is given (or --out names
another directory)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m lem.aggregate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("paths", nargs="+", help="sweep dirs, output dirs, trees of them, or result.json files")
    p.add_argument("--out", help="where to write (default: the first input directory)")
    p.add_argument("--compare", action="store_true", help="compare two studies (A B) per configuration")
    p.add_argument("--max-series", type=int, default=12, help="power time-series plots for at most N runs")
    p.add_argument("--resamples", type=int, default=9999, help="bootstrap resamples per CI")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--jobs", type=int, default=None,
                   help="processes for parsing and plotting (default: one per CPU; 1: all in this one)")
    p.add_argument("--force", action="store_true",
                   help="replace the outputs in the output directory even where they covered more ok results")
    args = p.parse_args(argv)
    if args.paths[0] == "compare":
        args.compare, args.paths = True, args.paths[1:]
    if args.compare and len(args.paths) != 2:
        p.error("compare takes exactly two studies: A B")
    return args


def main(argv=None) -> int:
    from lem.aggregate.guard import Refused, check_inputs

    args = parse(sys.argv[1:] if argv is None else argv)
    started = time.perf_counter()
    try:
        check_inputs(args.paths)
        return run_compare(args) if args.compare else run_aggregate(args, started)
    except Refused as e:
        print(f"lem aggregate: {e}", file=sys.stderr)
        return 2


def run_compare(args: argparse.Namespace) -> int:
    from lem.aggregate.compare import compare

    out = Path(args.out) if args.out else Path(args.paths[1])
    df, path = compare(args.paths[0], args.paths[1], out, args.resamples)
    print(f"lem compare: {int((df['matched'] == 'both').sum())} configurations matched -> {path}")
    return 0


def run_aggregate(args: argparse.Namespace, started: float) -> int:
    from lem.aggregate import aggregate, default_out

    out = Path(args.out) if args.out else default_out(args.paths)
    report = aggregate(*args.paths, out=out, max_series=args.max_series, n_resamples=args.resamples,
                       plots=not args.no_plots, jobs=args.jobs, force=args.force,
                       log=lambda msg: print(f"lem aggregate: {msg}", file=sys.stderr, flush=True))
    print(f"lem aggregate: {report} ({time.perf_counter() - started:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
