"""Every option of every config group composes against the schema and passes validation."""

from __future__ import annotations

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

import lem.paths
from lem.config.schema import config_hash
from lem.config.validate import validate
from lem.machine.host import GpuInfo, HostInfo

GROUPS = ("backend", "model", "dataset", "precision", "batching", "energy")
PRESETS = [(group, f.stem) for group in GROUPS
           for f in sorted((lem.paths.conf_dir() / group).glob("*.yaml"))]
# Options that need a dataset path to compose into a runnable config.
EXTRA = {("dataset", "hf"): ["dataset.path=/data/prompts"]}
# vLLM-only options compose with backend=vllm (and, for pre-quantized checkpoints, a hub model)
EXTRA.update({("batching", "continuous"): ["backend=vllm"], ("precision", "fp8"): ["backend=vllm"],
              ("precision", "int8-wo"): ["backend=tensorrt", "backend.workflow=engine"]})
EXTRA.update({("precision", q): ["backend=vllm", "model=llama3"] for q in ("awq", "gptq", "w8a8")})
# TensorRT-LLM: GPUs only, fp16/bf16, quantized while its engine is built
EXTRA.update({("backend", "tensorrt"): ["precision=bf16"],
              ("precision", "int4-wo"): ["backend=tensorrt", "backend.workflow=engine"]})

GPU_HOST = HostInfo(
    gpus=[GpuInfo(0, "Fake H100", "GPU-fake-0", (9, 0), 81559.0)],
    packages={"bitsandbytes": True, "datasets": True, "vllm": True, "tensorrt_llm": True},
)
CPU_HOST = HostInfo(nvml_error="NVML unavailable (test)", packages={"datasets": True, "vllm": True})


def _preset_overrides(group: str, name: str) -> list[str]:
    return [f"{group}={name}", *EXTRA.get((group, name), [])]


def _needs_gpu(group: str, name: str) -> bool:
    return name.endswith("-random") or name in ("int8", "int4", "fp8", "int8-wo", "int4-wo", "tensorrt")


def test_every_group_has_options():
    found = {group for group, _ in PRESETS}
    assert found == set(GROUPS)
    assert len(PRESETS) >= 20


@pytest.mark.parametrize(("group", "name"), PRESETS, ids=[f"{g}={n}" for g, n in PRESETS])
def test_preset_composes_against_schema(compose, group, name):
    cfg = compose(_preset_overrides(group, name))
    # a backend preset (pytorch_fast) is its engine with settings: it keeps the engine's name
    assert cfg[group].name == (name.split("_")[0] if group == "backend" else name)
    assert OmegaConf.is_struct(cfg)
    # every value resolves and no mandatory (???) value is left unset
    OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)


@pytest.mark.parametrize(("group", "name"), PRESETS, ids=[f"{g}={n}" for g, n in PRESETS])
def test_preset_validates_on_a_gpu_host(compose, group, name):
    cfg = compose([*_preset_overrides(group, name), "gpus=[0]"])
    validate(cfg, GPU_HOST)


CPU_PRESETS = [p for p in PRESETS if not _needs_gpu(*p)]


@pytest.mark.parametrize(("group", "name"), CPU_PRESETS, ids=[f"{g}={n}" for g, n in CPU_PRESETS])
def test_cpu_capable_preset_validates_on_a_cpu_host(compose, group, name):
    cfg = compose([*_preset_overrides(group, name), "gpus=[]"])
    validate(cfg, CPU_HOST)


def test_misspelt_key_is_rejected(compose):
    with pytest.raises(ConfigCompositionException, match="atn_implementation"):
        compose(["backend.atn_implementation=sdpa"])


def test_misspelt_top_level_key_is_rejected(compose):
    with pytest.raises(ConfigCompositionException, match="gpu"):
        compose(["gpu=[0]"])


@pytest.mark.parametrize("override", ["batching.batch_size=abc", "dataset.num_requests=1.5",
                                      "backend.torch_compile=maybe"])
def test_wrong_type_is_rejected(compose, override):
    with pytest.raises(ConfigCompositionException):
        compose([override])


def test_config_hash_is_stable_for_the_same_config(compose):
    assert config_hash(compose([])) == config_hash(compose([]))


def test_config_hash_of_dictconfig_equals_hash_of_its_container(compose):
    cfg = compose([])
    assert config_hash(cfg) == config_hash(OmegaConf.to_container(cfg, resolve=True))


@pytest.mark.parametrize("override", ["batching.batch_size=8", "dataset.seed=1",
                                      "precision=bf16", "model.seed=3", "gpus=[0]"])
def test_config_hash_changes_with_a_semantic_key(compose, override):
    assert config_hash(compose([override])) != config_hash(compose([]))


@pytest.mark.parametrize("override", ["progress=false", "cache_dir=/somewhere/else"])
def test_config_hash_ignores_non_semantic_keys(compose, override):
    assert config_hash(compose([override])) == config_hash(compose([]))
