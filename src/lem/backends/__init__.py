"""Backends: one module per engine, chosen by the `backend` config group (the group is the registry)."""

from __future__ import annotations

import importlib


def make_backend(backend_cfg, run_cfg):
    """Instantiate `lem.backends.<name>` 's backend class; engines load only inside `load`."""
    if backend_cfg.get("parallel"):  # data / tensor parallel: worker processes hold the engine
        from lem.backends.parallel import ParallelBackend

        return ParallelBackend(backend_cfg, run_cfg)
    module = importlib.import_module(f"lem.backends.{backend_cfg.name}")
    return module.BACKEND(backend_cfg, run_cfg)
