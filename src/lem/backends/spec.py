"""What generic code may know of an engine: one `BackendSpec` per `backends/<engine>/` package.

Validation, pre-flight, doctor, provenance and aggregation read these fields and hold no engine
name of their own. A spec is light: importing it imports its config dataclass and its pure
validation, never the engine (aggregation and `--help` stay fast).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Optional

from omegaconf import MISSING

Problems = list[str]


@dataclass
class BackendConfig:
    """The part of every backend's config section generic code reads: its name."""

    name: str = MISSING


@dataclass(frozen=True)
class BackendSpec:
    name: str  # the backend group's option (conf/backend/<name>.yaml), and the result's backend
    schema: type  # its config section's dataclass (a BackendConfig)
    backend: str  # "module:Class" of the Backend, imported only when a run starts
    batching: tuple[str, ...]  # batching strategies it runs
    quantizations: tuple[Optional[str], ...]  # precision.quantization values it accepts
    # (cfg, host) -> problems of its own config section, in validation's backend slot
    validate: Callable[[Any, Any], Problems]
    # (cfg, host) -> problems of a precision it accepts (in validation's precision slot)
    validate_precision: Callable[[Any, Any], Problems] = lambda cfg, host: []
    # (precision) -> why it refuses a quantization outside `quantizations`, naming the fix
    unsupported_precision: Optional[Callable[[Any], str]] = None
    # keys lem's own groups set: refused in its config section, saying where each belongs
    owned_keys: Mapping[str, str] = field(default_factory=dict)
    packages: tuple[str, ...] = ()  # import names validation looks for (host.packages)
    # (row name, import name, distribution): doctor's engine rows and `--import` probes
    engines: tuple[tuple[str, str, str], ...] = ()
    version_keys: tuple[str, ...] = ()  # distributions whose versions make its environment
    provenance: tuple[str, ...] = ()  # further distributions a result records the version of
    env_vars: tuple[str, ...] = ()  # environment variables a result records (never secrets)
    worker_processes: bool = False  # workers exchange data through /dev/shm (pre-flight sizes it)
    preflight: Optional[Callable[[Any, Any], list]] = None  # (cfg, host) -> its machine Checks
    # (backend_cfg, RunContext) -> the Backend, where the choice depends on the config (parallel)
    make: Optional[Callable[[Any, Any], Any]] = None

    def make_backend(self, backend_cfg, run=None):
        if self.make is not None:
            return self.make(backend_cfg, run)
        module, _, cls = self.backend.partition(":")
        return getattr(importlib.import_module(module), cls)(backend_cfg, run)
