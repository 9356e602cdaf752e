"""The PyTorch backend on the real tiny model: every YAML option reaches transformers, output
lengths are exact, and each token gets its own timestamp."""

import pytest
import torch
from omegaconf import OmegaConf
from transformers import AutoModelForCausalLM

from lem.backends.pytorch.backend import PyTorchBackend
from lem.models.source import ModelSource
from lem.workload.requests import Request

FP32 = OmegaConf.create({"name": "fp32", "dtype": "float32", "quantization": None})


def _backend(**options):
    cfg = OmegaConf.create({"name": "pytorch", "attn_implementation": None, "device_map": None,
                            "max_memory": None, "low_cpu_mem_usage": True, "torch_compile": False,
                            "compile_mode": "reduce-overhead", "cache_implementation": None,
                            "decode_loop": "generate",
                            "trust_remote_code": False, **options})
    return PyTorchBackend(cfg, None)


@pytest.fixture
def spy_from_pretrained(monkeypatch):
    """Record the kwargs transformers receives, then load for real."""
    calls = []
    real = AutoModelForCausalLM.from_pretrained

    def spy(path, **kwargs):
        calls.append(kwargs)
        return real(path, **kwargs)

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", spy)
    return calls


def test_every_loading_option_reaches_from_pretrained(tiny_dir, spy_from_pretrained):
    b = _backend(attn_implementation="eager", device_map="cpu", max_memory={"cpu": "4GiB"},
                 low_cpu_mem_usage=False, trust_remote_code=True)
    b.load(ModelSource("tiny", "tiny", path=str(tiny_dir)), FP32, [])
    kwargs = spy_from_pretrained[0]
    assert kwargs["attn_implementation"] == "eager"
    assert kwargs["device_map"] == "cpu" and kwargs["max_memory"] == {"cpu": "4GiB"}
    assert kwargs["low_cpu_mem_usage"] is False and kwargs["trust_remote_code"] is True
    assert kwargs["dtype"] is torch.float32
    assert b.model.config._attn_implementation == "eager"  # and it took effect


def test_trust_remote_code_defaults_to_false(tiny_dir, spy_from_pretrained):
    _backend().load(ModelSource("tiny", "tiny", path=str(tiny_dir)), FP32, [])
    assert spy_from_pretrained[0]["trust_remote_code"] is False


def test_max_memory_gpu_keys_become_ints():
    b = _backend(device_map="auto", max_memory={"0": "70GiB", "cpu": "10GiB"})
    b.device = torch.device("cpu")
    kwargs = b.from_pretrained_kwargs(ModelSource("m", "hub", path="/x"), FP32, torch.float32)
    assert kwargs["max_memory"] == {0: "70GiB", "cpu": "10GiB"} and kwargs["device_map"] == "auto"


def test_torch_compile_compiles_the_decode_step_and_says_so(tiny_dir):
    """A real compile on the CPU (inductor): transformers' compiled call is built, the tokens are
    the eager ones, and engine_info reports what compiled. Eager runs stay eager with a static
    cache, where transformers would otherwise compile on its own."""
    prompt = [Request(0, [5, 6, 7, 8], 6), Request(1, [9, 10, 11, 12], 6)]
    eager = _backend(cache_implementation="static")
    eager.load(ModelSource("tiny", "tiny", path=str(tiny_dir)), FP32, [])
    eager_rec = eager.generate(prompt, force_output_len=True)
    assert eager.engine_info()["compiled"] is False
    assert getattr(eager.model, "_compiled_call", None) is None
    b = _backend(torch_compile=True, compile_mode="default", cache_implementation="static")
    b.load(ModelSource("tiny", "tiny", path=str(tiny_dir)), FP32, [])
    assert b.engine_info()["compiled"] is False  # nothing has run yet
    rec = b.generate(prompt, force_output_len=True)
    info = b.engine_info()
    assert info["compiled"] is True and info["compile_mode"] == "default"
    assert info["compiled_graphs"] >= 1 and info["token_clock"] == "host_clock"
    assert rec.token_ids == eager_rec.token_ids and rec.output_tokens == [6, 6]


def test_cache_implementation_reaches_generate(tiny_dir, monkeypatch):
    b = _backend(cache_implementation="static")
    b.load(ModelSource("tiny", "tiny", path=str(tiny_dir)), FP32, [])
    seen = []
    real = b.model.generate
    monkeypatch.setattr(b.model, "generate", lambda **kw: seen.append(kw) or real(**kw))
    rec = b.generate([Request(0, [5, 6, 7, 8], 6)], force_output_len=True)
    assert seen[0]["cache_implementation"] == "static" and rec.output_tokens == [6]


def test_forced_lengths_are_exact_per_request_with_a_timestamp_per_token(tiny_dir):
    b = _backend()
    b.load(ModelSource("tiny", "tiny", path=str(tiny_dir)), FP32, [])
    batch = [Request(0, [10, 11, 12], 5), Request(1, list(range(20, 40)), 9)]
    rec = b.generate(batch, force_output_len=True)
    assert rec.output_tokens == [5, 9]
    assert [len(t) for t in rec.token_times_s] == [5, 9]
    times = rec.token_times_s[1]
    assert all(a < b for a, b in zip(times, times[1:])) and times[0] > rec.submit_s


def test_natural_lengths_stop_at_eos_and_count_it(tiny_dir):
    b = _backend()
    b.load(ModelSource("tiny", "tiny", path=str(tiny_dir)), FP32, [])
    prompt = [Request(0, [10, 11, 12, 13], 8)]
    forced = b.generate(prompt, force_output_len=True)
    first = b.model.generate(input_ids=torch.tensor([[10, 11, 12, 13]]), max_new_tokens=1,
                             do_sample=False, pad_token_id=0)[0, -1].item()
    b.model.generation_config.eos_token_id = first  # the greedy first token is now EOS
    b._read_special_ids(b.model)
    natural = b.generate(prompt, force_output_len=False)
    assert forced.output_tokens == [8] and natural.output_tokens == [1]
    assert len(natural.token_times_s[0]) == 1


def test_random_weight_models_are_built_fast_with_the_default_init_distribution():
    arch = dict(model_type="qwen2", hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, vocab_size=512)
    b = _backend()
    b.device = torch.device("cpu")
    m = b._from_config(ModelSource("r", "random", config=arch, seed=0), torch.float32)
    m_again = b._from_config(ModelSource("r", "random", config=arch, seed=0), torch.float32)
    m_other = b._from_config(ModelSource("r", "random", config=arch, seed=1), torch.float32)
    q = m.model.layers[0].self_attn.q_proj
    assert abs(q.weight.detach().std().item() - 0.02) < 0.002  # transformers' initializer_range
    assert q.bias.detach().abs().max().item() == 0.0 and m.model.norm.weight.detach().eq(1).all()
    w = "model.layers.1.mlp.up_proj.weight"
    assert torch.equal(m.state_dict()[w], m_again.state_dict()[w])
    assert not torch.equal(m.state_dict()[w], m_other.state_dict()[w])
