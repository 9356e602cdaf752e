"""The tiny model: same seed -> same bytes anywhere; head size 32 for the shipped architecture."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from lem.models.tiny import tiny_model_dir


@pytest.fixture(scope="module")
def arch() -> dict:
    cfg = OmegaConf.load(Path(__file__).parents[1] / "conf" / "model" / "tiny.yaml")
    return OmegaConf.to_container(cfg.config)


@pytest.fixture(scope="module")
def seed0_dir(tmp_path_factory, arch) -> Path:
    return tiny_model_dir(tmp_path_factory.mktemp("cache_a"), 0, arch)


def _files(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()}


def test_same_seed_gives_byte_identical_files_in_another_cache(tmp_path, arch, seed0_dir):
    other = tiny_model_dir(tmp_path / "cache_b", 0, arch)
    assert other != seed0_dir and other.name == seed0_dir.name
    files = _files(seed0_dir)
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= set(files)
    assert _files(other) == files


def test_another_seed_gives_other_weights(tmp_path, arch, seed0_dir):
    other = tiny_model_dir(tmp_path, 1, arch)
    assert other.name != seed0_dir.name
    weights = (other / "model.safetensors").read_bytes()
    assert weights != (seed0_dir / "model.safetensors").read_bytes()


def test_existing_model_is_reused(arch, seed0_dir):
    mtime = (seed0_dir / "model.safetensors").stat().st_mtime_ns
    assert tiny_model_dir(seed0_dir.parents[1], 0, arch) == seed0_dir
    assert (seed0_dir / "model.safetensors").stat().st_mtime_ns == mtime
    assert not list(seed0_dir.parent.glob(".building-*"))


def test_shipped_architecture_has_head_size_32(arch, seed0_dir):
    assert arch["hidden_size"] // arch["num_attention_heads"] == 32
    config = json.loads((seed0_dir / "config.json").read_text())
    assert config["hidden_size"] / config["num_attention_heads"] == 32
    assert config.get("head_dim", 32) == 32
    assert config["model_type"] == "llama"
