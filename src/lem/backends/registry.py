"""Every engine lem has: each `backends/<engine>/` package with a `spec` module is one.

Found by listing this package, so adding an engine touches no generic module."""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

from lem.backends.spec import BackendSpec


def _discover() -> dict[str, BackendSpec]:
    here = [str(Path(__file__).parent)]
    specs = {}
    for info in sorted(pkgutil.iter_modules(here), key=lambda m: m.name):
        if info.ispkg and importlib.util.find_spec(f"lem.backends.{info.name}.spec") is not None:
            spec = importlib.import_module(f"lem.backends.{info.name}.spec").SPEC
            specs[spec.name] = spec
    return specs


SPECS: dict[str, BackendSpec] = _discover()


def spec(name: str) -> BackendSpec | None:
    return SPECS.get(name)
