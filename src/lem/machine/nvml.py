"""The one place lem imports and starts NVML from.

`LEM_NVML_MODULE` names a stand-in module with pynvml's API; tests set it to a replayer of traces
recorded on a real GPU, because NVML cannot exist on a CPU machine. Unset, this is pynvml.

start() and session() are the only callers of nvmlInit: a missing library or driver becomes
NvmlUnavailable at every call site alike, and each caller decides whether that skips or fails.
NVML counts its inits, so a session closing while a meter still holds NVML leaves the meter working.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterator
from contextlib import contextmanager

FIELD_POWER_AVERAGE = 185  # NVML_FI_DEV_POWER_AVERAGE: a ~1 s moving average (MEASUREMENT.md)
FIELD_POWER_INSTANT = 186  # NVML_FI_DEV_POWER_INSTANT: what the time series samples


class NvmlUnavailable(RuntimeError):
    """NVML cannot start here: no library (a CPU machine, a container without GPUs) or no driver.
    The message is the cause, type first ("NVMLError_LibraryNotFound: NVML Shared Library Not Found")."""

    def __init__(self, cause: Exception):
        super().__init__(f"{type(cause).__name__}: {cause}")
        self.cause = cause


def load():
    return importlib.import_module(os.environ.get("LEM_NVML_MODULE", "pynvml"))


def start():
    """The NVML module, initialised; the caller owns the matching nvmlShutdown (or keeps NVML for
    the life of its process). Raises NvmlUnavailable when NVML cannot be loaded or initialised."""
    try:
        nvml = load()
        nvml.nvmlInit()
    except Exception as exc:
        raise NvmlUnavailable(exc) from exc
    return nvml


@contextmanager
def session() -> Iterator:
    """`with session() as nvml:` start() on entry, nvmlShutdown on exit. Errors inside the block
    are the block's own and propagate unchanged; only a failed start is NvmlUnavailable."""
    nvml = start()
    try:
        yield nvml
    finally:
        nvml.nvmlShutdown()


def describe(exc: Exception) -> str:
    """A failure to read NVML, type first; NvmlUnavailable names its cause rather than itself."""
    return str(exc) if isinstance(exc, NvmlUnavailable) else f"{type(exc).__name__}: {exc}"


def unavailable(exc: Exception) -> str:
    """The one wording of "this machine's NVML cannot be read", as results and the doctor show it."""
    return f"NVML unavailable ({describe(exc)})"


def text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
