"""One sweep at a time per sweep directory: `<sweep dir>/.lem.lock`, an flock held for life.

Two `python -m lem -m` into the same hydra.sweep.dir would measure the same points (same job
directories) and overwrite each other's result.json. Per-point locks would let both go on, each
taking the free points, but on one GPU box two sweeps at once disturb each other's energy
readings, so the second sweep is refused as a whole instead.

The lock is an flock: the kernel releases it when the last process holding it ends, however it
ends (SIGKILL, OOM killer), so it is never left stuck. The measuring child (lem.job.child) inherits it
and dies with the sweep's process (PR_SET_PDEATHSIG): while an orphaned child still writes its
last result, the directory stays locked, and it is free the moment that child is gone.
"""

from __future__ import annotations

import fcntl
import json
import os
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any, Optional

from hydra.experimental.callback import Callback

LOCK_FILE = ".lem.lock"
BUSY = 1  # a runtime refusal, like a failed pre-flight check (2 is for invalid configurations)
_held: dict[str, Any] = {}  # "file": the open, locked lock file (open until the process ends)


class SweepLock(Callback):
    """Takes the lock before the sweeper writes anything into the sweep directory."""

    def on_multirun_start(self, config, **kwargs) -> None:
        lock_sweep_dir(Path(config.hydra.sweep.dir))


def lock_sweep_dir(sweep_dir: Path) -> None:
    """Lock `sweep_dir` for this process's lifetime, or print who holds it and exit BUSY.

    SystemExit, not an Exception: Hydra turns an Exception raised by a callback into a warning."""
    try:
        sweep_dir.mkdir(parents=True, exist_ok=True)
        lock = open(sweep_dir / LOCK_FILE, "a+")  # not "w": that would erase the holder's pid
    except OSError:
        return  # the sweeper's own mkdir fails next, and lem.config.cli_errors names the path and the fix
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.seek(0)
        holder = _parse(lock.read())
        lock.close()
        print(f"lem: {busy_message(sweep_dir, holder)}", file=sys.stderr, flush=True)
        raise SystemExit(BUSY) from None
    except OSError as exc:  # e.g. a Lustre mount without flock: run, but say the guard is off
        print(f"lem: warning: cannot lock {sweep_dir / LOCK_FILE} ({exc.strerror}): nothing stops a "
              f"second sweep into this directory from overwriting this one's results", file=sys.stderr)
        return
    _held["file"] = lock
    _write(lock, {"pid": os.getpid(), "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                  "command": " ".join(["python -m lem", *sys.argv[1:]])})


def note_measuring(pid: int) -> None:
    """Record the measuring child's pid: if the sweep's process dies, it is the one still holding."""
    lock = _held.get("file")
    if lock is not None:
        lock.seek(0)
        _write(lock, {**_parse(lock.read()), "measuring_pid": pid})


def busy_message(sweep_dir: Path, holder: dict[str, Any]) -> str:
    pid, child = holder.get("pid"), holder.get("measuring_pid")
    who = f"pid {pid}" if pid else "a process"
    if pid and not _alive(pid) and child and _alive(child):
        who = (f"pid {pid}, which has ended; its measuring process pid {child} is writing its last "
               f"result and stops by itself")
    since = f", since {holder['started_at']}" if holder.get("started_at") else ""
    return (f"sweep directory {sweep_dir} is in use by another lem sweep ({who}{since}; see "
            f"{sweep_dir / LOCK_FILE}): two sweeps in one directory would measure the same points and "
            f"overwrite each other's results. Wait until it ends and run this command again (points "
            f"with an ok result are not measured again), or give this sweep its own directory: "
            f"hydra.sweep.dir=<another directory>")


def for_child() -> Optional[_Inherited]:
    """What run_isolated passes to its spawned child so that the child holds the lock too."""
    lock = _held.get("file")
    return _Inherited(lock.fileno()) if lock is not None else None


class _Inherited:
    """The lock's file descriptor, handed to a spawned child (same open file, so the same flock).

    multiprocessing's spawn closes every descriptor it was not told about; reduction.DupFd, called
    while the process object is pickled, adds this one to those it passes (as it does for pipes)."""

    def __init__(self, fd: int):
        self.fd = fd

    def __reduce__(self):
        from multiprocessing import reduction

        return _Inherited._in_child, (reduction.DupFd(self.fd),)

    @staticmethod
    def _in_child(dup) -> _Inherited:
        fd = dup.detach()
        os.set_inheritable(fd, False)  # the engine's own subprocesses need not hold it
        return _Inherited(fd)


def _write(lock: IO[str], holder: dict[str, Any]) -> None:
    lock.seek(0)
    lock.truncate()
    lock.write(json.dumps(holder) + "\n")
    lock.flush()


def _parse(text: str) -> dict[str, Any]:
    try:
        holder = json.loads(text)
    except ValueError:
        return {}
    return holder if isinstance(holder, dict) else {}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it exists
        return True
    return _state(pid) != "Z"


def _state(pid: int) -> str:
    """A zombie (ended, not yet reaped: an orphan in a container whose init does not reap) is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "?"
