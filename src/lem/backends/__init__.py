"""Backends: one package per engine (`backends/<engine>/`), each with a spec that generic code
reads (lem.backends.registry) and a Backend that runs it (lem.backends.base)."""

from __future__ import annotations


def make_backend(backend_cfg, run=None):
    """The backend of `backend_cfg.name`; engines load only inside its `load`."""
    from lem.backends.registry import SPECS

    return SPECS[backend_cfg.name].make_backend(backend_cfg, run)
