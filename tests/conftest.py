"""Shared fixtures."""

from __future__ import annotations

import pytest
from hydra import compose as hydra_compose
from hydra import initialize_config_dir

import lem.config
import lem.paths


# compose(overrides) -> the DictConfig `python -m lem <overrides>` would run (schema-checked).
@pytest.fixture
def compose():
    lem.config.register_configs()

    def _compose(overrides: list[str]):
        with initialize_config_dir(config_dir=str(lem.paths.conf_dir()), version_base="1.3"):
            return hydra_compose(config_name="config", overrides=list(overrides))

    return _compose
