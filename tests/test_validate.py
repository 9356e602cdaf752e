"""Cross-field validation: every problem in one ConfigError, each naming its config key."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from lem.config.validate import ConfigError, resolve_gpus, validate
from lem.machine.host import GpuInfo, HostInfo


def _host(*capabilities, **packages) -> HostInfo:
    gpus = [GpuInfo(i, "Fake GPU", f"GPU-fake-{i}", cc, 40960.0)
            for i, cc in enumerate(capabilities)]
    return HostInfo(gpus=gpus, nvml_error=None if gpus else "NVML unavailable (test)",
                    packages=dict(packages))


def _problems(cfg, host) -> list[str]:
    try:
        validate(cfg, host)
    except ConfigError as exc:
        assert str(len(exc.problems)) in str(exc)
        return exc.problems
    return []


def test_several_problems_are_collected_into_one_error(compose):
    cfg = compose(["gpus=[3]", "precision=int8", "batching.batch_size=0"])
    with pytest.raises(ConfigError) as info:
        validate(cfg, _host((9, 0)))
    problems = info.value.problems
    assert len(problems) == 3
    assert "gpus=" in problems[0]
    assert "precision=int8" in problems[1] and "bitsandbytes" in problems[1]
    assert "batching.batch_size" in problems[2]
    assert "3 problem(s)" in str(info.value)
    assert all(p in str(info.value) for p in problems)


def test_default_config_on_the_cpu_is_valid(compose):
    assert _problems(compose(["gpus=[]"]), _host()) == []


def test_gpu_index_out_of_range(compose):
    problems = _problems(compose(["gpus=[0,1]"]), _host((9, 0)))
    assert len(problems) == 1
    assert "gpus=[0, 1]" in problems[0] and "[1]" in problems[0]


def test_gpu_index_on_a_host_without_nvml_names_the_reason(compose):
    problems = _problems(compose(["gpus=[0]"]), _host())
    assert len(problems) == 1
    assert "gpus=" in problems[0] and "NVML unavailable" in problems[0]


def test_duplicate_gpu_index(compose):
    problems = _problems(compose(["gpus=[0,0]"]), _host((9, 0)))
    assert len(problems) == 1 and "twice" in problems[0]


def test_int8_without_bitsandbytes(compose):
    problems = _problems(compose(["gpus=[0]", "precision=int8"]), _host((9, 0)))
    assert len(problems) == 1
    assert "precision=int8" in problems[0] and "bitsandbytes" in problems[0]


def test_int8_on_the_cpu(compose):
    problems = _problems(compose(["gpus=[]", "precision=int8"]), _host(bitsandbytes=True))
    assert len(problems) == 1
    assert "precision=int8" in problems[0] and "GPU only" in problems[0]


def test_int4_on_a_random_weight_model_is_accepted_on_a_gpu(compose):
    # the backend writes the random model once as a checkpoint, which bitsandbytes quantizes
    cfg = compose(["gpus=[0]", "precision=int4", "model=qwen2.5-0.5b-random"])
    assert _problems(cfg, _host((9, 0), bitsandbytes=True)) == []


def test_bf16_on_a_gpu_without_bfloat16(compose):
    problems = _problems(compose(["gpus=[0]", "precision=bf16"]), _host((7, 0)))
    assert len(problems) == 1
    assert "precision=bf16" in problems[0] and "[0]" in problems[0]


def test_bf16_only_checks_the_gpus_the_run_uses(compose):
    assert _problems(compose(["gpus=[1]", "precision=bf16"]), _host((7, 0), (9, 0))) == []


def test_random_model_on_the_cpu(compose):
    problems = _problems(compose(["gpus=[]", "model=llama3-8b-random"]), _host())
    assert len(problems) == 1
    assert "model=llama3-8b-random" in problems[0] and "gpus=[0]" in problems[0]


def test_flash_attention_2_without_flash_attn(compose):
    cfg = compose(["gpus=[0]", "backend.attn_implementation=flash_attention_2"])
    problems = _problems(cfg, _host((9, 0)))
    assert len(problems) == 1
    assert "backend.attn_implementation=flash_attention_2" in problems[0]
    assert "flash-attn" in problems[0]


def test_flash_attention_2_on_the_cpu_reports_both_problems(compose):
    cfg = compose(["gpus=[]", "backend.attn_implementation=flash_attention_2"])
    problems = _problems(cfg, _host())
    assert len(problems) == 2
    assert all("backend.attn_implementation=flash_attention_2" in p for p in problems)


def test_unknown_attn_implementation(compose):
    problems = _problems(compose(["gpus=[]", "backend.attn_implementation=fast"]), _host())
    assert len(problems) == 1 and "backend.attn_implementation=fast" in problems[0]


def test_max_memory_without_device_map(compose):
    cfg = compose(["gpus=[0]"])
    # set on the composed config: `backend.max_memory={...}` cannot be overridden on the
    # command line (see test_max_memory_can_be_set_from_the_command_line)
    cfg.backend.max_memory = {"0": "70GiB"}
    problems = _problems(cfg, _host((9, 0)))
    assert len(problems) == 1 and "backend.max_memory" in problems[0]
    cfg.backend.device_map = "auto"
    assert _problems(cfg, _host((9, 0))) == []


def test_max_memory_can_be_set_from_the_command_line(compose):
    cfg = compose(["backend.device_map=auto", "backend.max_memory={cpu:10GiB}"])
    assert OmegaConf.to_container(cfg.backend.max_memory) == {"cpu": "10GiB"}


def test_device_map_with_a_random_weight_model(compose):
    cfg = compose(["gpus=[0]", "model=qwen2.5-0.5b-random", "backend.device_map=auto"])
    problems = _problems(cfg, _host((9, 0)))
    assert len(problems) == 1 and "backend.device_map" in problems[0]


def test_lengths_beyond_max_position_embeddings(compose):
    cfg = compose(["gpus=[]", "dataset.input_len=2000", "dataset.output_len=100"])
    problems = _problems(cfg, _host())
    assert len(problems) == 1
    assert "dataset.input_len" in problems[0] and "2100" in problems[0] and "2048" in problems[0]


def test_lengths_exactly_at_max_position_embeddings_are_accepted(compose):
    cfg = compose(["gpus=[]", "dataset.input_len=2016", "dataset.output_len=32"])
    assert _problems(cfg, _host()) == []


def test_length_spread_counts_towards_the_model_limit(compose):
    cfg = compose(["gpus=[]", "dataset.input_len=1000", "dataset.input_len_dist=normal",
                   "dataset.input_len_spread=300"])
    problems = _problems(cfg, _host())
    assert len(problems) == 1 and "dataset.input_len" in problems[0]


def test_hub_model_max_len_limits_lengths(compose):
    cfg = compose(["gpus=[0]", "model=llama3-8b", "dataset.input_len=8192"])
    problems = _problems(cfg, _host((9, 0)))
    assert len(problems) == 1 and "8192" in problems[0]


def test_unknown_length_distribution(compose):
    problems = _problems(compose(["gpus=[]", "dataset.input_len_dist=gamma"]), _host())
    assert len(problems) == 1 and "dataset.input_len_dist=gamma" in problems[0]


@pytest.mark.parametrize(("override", "key"), [
    ("dataset.num_requests=0", "dataset.num_requests"),
    ("dataset.output_len=0", "dataset.output_len"),
    ("dataset.input_len=0", "dataset.input_len"),
    ("batching.strategy=continuous", "batching.strategy=continuous"),
    ("energy.meter=rapl", "energy.meter=rapl"),
    ("precision.dtype=float8", "precision.dtype=float8"),
])
def test_out_of_range_values_name_their_key(compose, override, key):
    problems = _problems(compose(["gpus=[]", override]), _host())
    assert len(problems) == 1 and key in problems[0]


def test_hf_dataset_without_the_datasets_package(compose):
    problems = _problems(compose(["gpus=[]", "dataset=hf", "dataset.path=/d"]), _host())
    assert len(problems) == 1 and "dataset=hf" in problems[0] and "datasets" in problems[0]


def test_hf_dataset_without_a_path_is_rejected(compose):
    with pytest.raises(Exception, match="dataset.path"):
        cfg = compose(["gpus=[]", "dataset=hf"])
        validate(cfg, _host(datasets=True))


def test_resolve_gpus_auto_picks_gpu_0_when_one_exists():
    assert resolve_gpus("auto", _host((9, 0), (9, 0))) == [0]


def test_resolve_gpus_auto_is_the_cpu_without_a_gpu():
    assert resolve_gpus("auto", _host()) == []


def test_resolve_gpus_takes_a_list_or_an_int_as_given():
    assert resolve_gpus(OmegaConf.create([2, 1]), _host()) == [2, 1]
    assert resolve_gpus(3, _host()) == [3]


def test_a_key_added_with_plus_that_the_backend_would_ignore_is_rejected(compose):
    cfg = compose(["gpus=[]", "+backend.atn_implementation=sdpa"])
    problems = _problems(cfg, _host())
    assert len(problems) == 1 and "backend.atn_implementation" in problems[0]
    assert "attn_implementation" in problems[0]  # the options are listed


def test_torch_compile_without_a_static_cache_names_the_fix(compose):
    problems = _problems(compose(["gpus=[]", "backend.torch_compile=true"]), _host())
    assert len(problems) == 1 and "backend.torch_compile=true" in problems[0]
    assert "backend.cache_implementation=static" in problems[0]


@pytest.mark.parametrize("override, fix", [
    ("backend.decode_loop=fastest", "choose one of"),
    ("backend.decode_loop=lem", "backend.cache_implementation=static"),
])
def test_decode_loop_misconfigurations_name_the_key_and_the_fix(compose, override, fix):
    problems = _problems(compose(["gpus=[]", override]), _host())
    assert len(problems) == 1 and override in problems[0] and fix in problems[0]


def test_unknown_compile_mode(compose):
    problems = _problems(compose(["gpus=[]", "backend.compile_mode=fastest"]), _host())
    assert len(problems) == 1 and "backend.compile_mode=fastest" in problems[0]


def test_the_pytorch_fast_preset_is_a_valid_compiled_static_cache_pytorch(compose):
    cfg = compose(["gpus=[]", "backend=pytorch_fast"])
    b = cfg.backend
    assert (b.name, b.cache_implementation, b.torch_compile, b.compile_mode, b.decode_loop) == \
        ("pytorch", "static", True, "reduce-overhead", "lem")
    assert _problems(cfg, _host()) == []
    eager = compose(["gpus=[]", "backend=pytorch_fast", "backend.torch_compile=false"])
    assert eager.backend.torch_compile is False and eager.backend.cache_implementation == "static"
