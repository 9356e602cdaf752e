"""One sweep point in its own spawned process.

Engines do not reliably release GPU memory in-process, and Hydra's basic launcher runs a whole
sweep in one interpreter: so the measured run happens in a fresh child, and the parent (which
never imports torch) makes sure a result exists however the child ends. SIGTERM/SIGINT (SLURM
preemption, Ctrl-C) are forwarded to the child, which records `status: interrupted`.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any, Optional

from lem.job import sweep_lock
from lem.job.lifetime import die_with_parent
from lem.machine.devices import ThermalGap
from lem.result.schema import RESULT_FILE, ErrorInfo, Result, write_result

log = logging.getLogger(__name__)
GRACE_S = 60.0  # after forwarding a signal, how long the child may take to write its result
WRITTEN = "lem:measurement-written"  # the child's word on the pipe: only the engine's shutdown is left


class Interrupted(Exception):
    """The job was interrupted (SIGINT/SIGTERM); its result says so. lem.job.point stops the sweep."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = signum


def run_isolated(config: dict[str, Any], overrides: list[str], out_dir: Path,
                 job_gap: Optional[ThermalGap] = None) -> Result:
    """Run `config` in a spawned child; return the result it (or, if it died, this process) wrote."""
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.time()
    ctx = mp.get_context("spawn")
    cause_in, cause_out = ctx.Pipe(duplex=False)  # the child's failure, even where the disk is full
    child = ctx.Process(target=_child_main, name="lem-job",
                        args=(config, overrides, str(out_dir), job_gap, sweep_lock.for_child(), cause_out))
    child.start()
    cause_out.close()
    sweep_lock.note_measuring(child.pid)
    received: list[int] = []
    previous = _forward_signals(child, received)
    heard: list[str] = []
    try:
        killed = _wait(child, received, cause_in, heard, float(config.get("shutdown_max_s", 120.0)))
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    cause = _cause(cause_in, heard)
    result = _result_of(child, config, overrides, out_dir, started, received, cause, killed)
    if received or result.status == "interrupted":
        signum = received[0] if received else _signal_of(child.exitcode)
        raise Interrupted(f"interrupted by {signal.Signals(signum).name}; result: {out_dir / RESULT_FILE}",
                          signum)
    return result


def _cause(conn, heard: list[str]) -> str | None:
    """The child's error, if it sent one before it exited, else None (a closed pipe reads as EOF)."""
    _hear(conn, heard)
    conn.close()
    errors = [m for m in heard if m != WRITTEN]
    return errors[-1] if errors else None


def _hear(conn, heard: list[str]) -> None:
    try:
        while conn.poll():
            heard.append(conn.recv())
    except (EOFError, OSError):
        pass


def _signal_of(exitcode) -> int:
    """The signal that interrupted a child which alone received one (it exits 128 + signal)."""
    code = (exitcode or 0) - 128
    return code if code in (signal.SIGINT, signal.SIGTERM) else signal.SIGINT


def _forward_signals(child, received: list[int]) -> dict:
    def forward(signum, frame):
        received.append(signum)
        if child.is_alive() and child.pid:
            os.kill(child.pid, signal.SIGTERM)

    return {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}


def _wait(child, received: list[int], conn, heard: list[str], shutdown_max_s: float) -> Optional[str]:
    """Until the child ends. It is killed, with its children (an engine core), GRACE_S after a
    forwarded signal, or `shutdown_max_s` after it said its measurement is written (a hung engine
    shutdown). Returns why it was killed, or None."""
    deadlines: dict[str, float] = {}  # why -> when
    while child.is_alive():
        child.join(0.2)
        _hear(conn, heard)
        now = time.monotonic()
        if received:
            deadlines.setdefault(f"did not stop {GRACE_S:.0f} s after the signal", now + GRACE_S)
        if WRITTEN in heard:
            deadlines.setdefault(f"its engine's shutdown outlasted shutdown_max_s={shutdown_max_s:g}",
                                 now + shutdown_max_s)
        due = [why for why, at in deadlines.items() if now > at]
        if due and child.is_alive():
            log.error("the measuring process %s; killing it and its children", due[0])
            _kill_tree(child)
            return due[0]
    return None


def _kill_tree(child) -> None:
    """SIGKILL the child and every process under it (vLLM's engine core and workers would hold
    the GPUs the next point measures)."""
    from lem.machine.devices import own_process_tree

    for pid in own_process_tree(child.pid) - {child.pid}:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    child.kill()
    child.join(5)


def _result_of(child, config, overrides, out_dir: Path, started: float, received, cause=None,
               killed: Optional[str] = None) -> Result:
    """The child's result if it wrote one for this run; else a failed/interrupted one written here,
    naming the child's own error (`cause`, e.g. ENOSPC while writing its result) where it sent one."""
    path = out_dir / RESULT_FILE
    code = child.exitcode
    if path.is_file() and path.stat().st_mtime >= started:
        result = Result.read(path)
        if result.status == "ok" and code != 0:  # written before the engine's shutdown, then died
            return _died_after_writing(result, code, path, killed)
        if result.status != "running":
            return result
    status = "interrupted" if received else "failed"
    why = _ended_with(code)
    hint = " (SIGKILL: killed by the OOM killer or the scheduler?)" if code == -signal.SIGKILL else ""
    said = f": {cause}" if cause else ""
    result = Result(status=status, overrides=list(overrides), config=config,
                    error=ErrorInfo("ChildProcessDied", f"the measuring process ended with {why}"
                                    f"{hint} before writing its result{said}", ""))
    from lem.config.schema import config_hash

    result.config_hash = config_hash(config)
    result.null_reasons["summary"] = "the measuring process died: nothing it measured survived"
    try:
        write_result(result, out_dir)
    except OSError as exc:  # e.g. the disk is still full: the console is all that is left
        print(f"lem: cannot write {path} ({exc.strerror}); the run: {result.error.message}",
              file=sys.stderr, flush=True)
        return result
    return Result.read(path)  # what the sweep's later readers will read


def _ended_with(code) -> str:
    return f"signal {-code}" if code is not None and code < 0 else f"exit code {code}"


def _died_after_writing(result: Result, code, path: Path, killed: Optional[str]) -> Result:
    """The measurement was complete and written; only the engine's shutdown was cut short."""
    why = _ended_with(code)
    by = f" (killed by lem: {killed})" if killed else ""
    result.warnings.append(f"the measuring process ended with {why}{by} during engine shutdown, after "
                           "its measurement was complete and written")
    try:
        write_result(result, path.parent)
    except OSError:
        pass  # the measured result stays on disk as written; the warning is on the console
    log.warning(result.warnings[-1])
    return result


def _child_main(config: dict[str, Any], overrides: list[str], out_dir: str, job_gap=None,
                sweep_lock_fd=None, cause=None) -> None:
    """Entry of the spawned process: log to the job's log file, run, exit non-zero on failure.

    `sweep_lock_fd` only needs to stay open: this process holds the sweep directory's lock too."""
    import sys

    from omegaconf import OmegaConf

    from lem.job.phases import run

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _raise_interrupt)
    try:
        _child_logging(Path(out_dir))  # inside: a full disk fails here too, and the parent hears why
        die_with_parent()
        run(OmegaConf.create(config), overrides, Path(out_dir), job_gap=job_gap,
            on_written=lambda: _tell(cause, WRITTEN))
    except KeyboardInterrupt:
        sys.exit(128 + _INTERRUPTED.get("signum", signal.SIGINT))
    except Exception as exc:
        log.exception("run failed")
        if cause is not None:  # the parent names it in the result it writes (or on the console)
            cause.send(f"{type(exc).__name__}: {exc}")
        sys.exit(1)


def _tell(conn, message: str) -> None:
    """A word to the parent; a parent that is gone (the pipe broken) changes nothing here."""
    try:
        if conn is not None:
            conn.send(message)
    except OSError:
        pass


_INTERRUPTED: dict[str, int] = {}


def _raise_interrupt(signum, frame):
    # Ctrl-C reaches this process twice: SIGINT from the terminal (the whole process group) and
    # the SIGTERM the parent forwards. A second KeyboardInterrupt would land in the handling of
    # the first and cut short the writing of the result: so the first one is the only one.
    if _INTERRUPTED:
        return
    _INTERRUPTED["signum"] = signum
    raise KeyboardInterrupt(f"signal {signum} ({signal.Signals(signum).name})")


def _child_logging(out_dir: Path) -> None:
    fmt = logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    handler = logging.FileHandler(out_dir / "lem.log")
    handler.setFormatter(fmt)
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    root.addHandler(handler)
