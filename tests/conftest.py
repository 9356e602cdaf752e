"""Shared fixtures."""

from __future__ import annotations

import pytest
from hydra import compose as hydra_compose
from hydra import initialize_config_dir

import lem.config.schema
import lem.paths


# compose(overrides) -> the DictConfig `python -m lem <overrides>` would run (schema-checked).
@pytest.fixture
def compose():
    lem.config.schema.register_configs()

    def _compose(overrides: list[str]):
        with initialize_config_dir(config_dir=str(lem.paths.conf_dir()), version_base="1.3"):
            return hydra_compose(config_name="config", overrides=list(overrides))

    return _compose


# One cache of generated tiny models for the whole session, shared with `python -m lem` subprocesses.
@pytest.fixture(scope="session")
def lem_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("lem-cache")


# run_lem(*overrides, cwd=...) -> CompletedProcess of a real `python -m lem` in a subprocess.
@pytest.fixture
def run_lem(lem_cache, tmp_path):
    import os
    import subprocess
    import sys

    def _run(*args: str, cwd=None, timeout: float = 300):
        env = {**os.environ, "LEM_CACHE_DIR": str(lem_cache), "HF_HUB_OFFLINE": "1"}
        return subprocess.run([sys.executable, "-m", "lem", *args], cwd=cwd or tmp_path, env=env,
                              capture_output=True, text=True, timeout=timeout)

    return _run


@pytest.fixture(scope="session")
def tiny_dir(lem_cache):
    """The generated tiny checkpoint (built once per session)."""
    from omegaconf import OmegaConf

    from lem.models.tiny import tiny_model_dir

    arch = OmegaConf.load(lem.paths.conf_dir() / "model" / "tiny.yaml")["config"]
    return tiny_model_dir(lem_cache, 0, OmegaConf.to_container(arch))
