"""SIGINT and SIGTERM in `python -m lem`'s own process: stop the run, or the whole sweep.

Hydra's run_job catches every Exception a job raises and its basic sweeper re-raises one only
after the whole batch, so an interrupt raised as an Exception ends one point and the sweep goes on
to the next. SignalInterrupt is a KeyboardInterrupt: it passes through Hydra (and lem.config.cli_errors)
to `stoppable`, which prints the sweep summary and exits 128 + the signal (130 SIGINT, 143
SIGTERM). SIGTERM (SLURM, `kill`) raises it too, so it stops the sweep as Ctrl-C does instead of
killing the process where it stands.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable

_MAIN: dict[str, int] = {}  # "pid": the process that installed the handlers


class SignalInterrupt(KeyboardInterrupt):
    def __init__(self, signum: int):
        super().__init__(f"signal {signum} ({signal.Signals(signum).name})")
        self.signum = signum


def install() -> None:
    _MAIN["pid"] = os.getpid()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _raise_stop)


def _raise_stop(signum, frame):
    raise SignalInterrupt(signum)


def in_main_process() -> bool:
    """False in a SLURM job's process (submitit runs the task there): it has other ways to end."""
    return _MAIN.get("pid") == os.getpid()


def stoppable(run: Callable[[], object]) -> None:
    install()
    try:
        run()
    except KeyboardInterrupt as exc:
        sys.exit(stopped(getattr(exc, "signum", signal.SIGINT)))


def ignore_further() -> None:
    """From now on SIGINT and SIGTERM do nothing. A no-op handler, not SIG_IGN: a signal already
    pending when SIG_IGN is set makes CPython raise OSError "Signal 15 ignored due to race
    condition" in whatever code runs next."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _ignore)


def _ignore(signum, frame):
    pass


def stopped(signum: int) -> int:
    """Say what the sweep did and how to go on; the exit status for `signum`."""
    ignore_further()  # a second Ctrl-C must not cut the summary short
    from lem.job.callbacks import STATE, print_summary

    name = signal.Signals(signum).name
    sweep = STATE.get("sweep")
    if sweep is None:
        print(f"lem: stopped by {name}", file=sys.stderr, flush=True)
    else:
        print_summary(*sweep)
        print(f"lem: sweep stopped by {name}; no further point was started. Run the same command "
              f"again to resume (hydra.sweep.dir={sweep[0]})", file=sys.stderr, flush=True)
    return 128 + signum
