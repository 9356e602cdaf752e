"""The PyTorch backend's step clock and compiled decode on a real GPU (`python -m pytest -m gpu`).

CUDA events are recorded once per decoding step without a host sync and resolved after the
batch: the times must fall between the submit and the end of generate, one per token, in order,
and their gaps must match the host's view of the same batch."""

import time

import pytest
from omegaconf import OmegaConf

pytestmark = pytest.mark.gpu

BF16 = OmegaConf.create({"name": "bf16", "dtype": "bfloat16", "quantization": None})
ARCH = dict(model_type="llama", hidden_size=1024, intermediate_size=4096, num_hidden_layers=8,
            num_attention_heads=16, num_key_value_heads=8, vocab_size=32000)


def _backend(**options):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU on this machine")
    from lem.backends.pytorch.backend import PyTorchBackend
    from lem.models.source import ModelSource

    cfg = OmegaConf.create({"name": "pytorch", "attn_implementation": None, "device_map": None,
                            "max_memory": None, "low_cpu_mem_usage": True, "torch_compile": False,
                            "compile_mode": "reduce-overhead", "cache_implementation": None,
                            "decode_loop": "generate",
                            "trust_remote_code": False, **options})
    b = PyTorchBackend(cfg, None)
    b.load(ModelSource("r", "random", config=ARCH), BF16, [0])
    return b


def _batch(n_out: int):
    from lem.workload.requests import Request

    return [Request(i, list(range(100 + i, 164 + i)), n_out) for i in range(4)]


def test_cuda_event_token_times_lie_inside_the_batch_one_per_token_in_order():
    b = _backend()
    b.generate(_batch(8), True)  # first call: kernels load
    t0 = time.perf_counter()
    rec = b.generate(_batch(48), True)
    t1 = time.perf_counter()
    assert b.engine_info()["token_clock"] == "cuda_events"
    assert rec.output_tokens == [48] * 4
    times = rec.token_times_s[0]
    assert len(times) == 48 and all(x < y for x, y in zip(times, times[1:]))
    assert t0 <= rec.submit_s < times[0] and times[-1] <= t1
    # the device-side decode span is most of the host-side batch (nothing lost or invented)
    assert (times[-1] - rec.submit_s) / (t1 - t0) > 0.8


def test_compiled_static_cache_decode_runs_and_is_reported():
    b = _backend(cache_implementation="static", torch_compile=True)
    eager = _backend(cache_implementation="static")
    first = b.generate(_batch(16), True)
    again = b.generate(_batch(16), True)
    info = b.engine_info()
    assert info["compiled"] is True and info["compiled_graphs"] >= 1
    assert first.token_ids == again.token_ids
    assert eager.engine_info()["compiled"] is False
    assert eager.generate(_batch(16), True).output_tokens == again.output_tokens


def test_lem_decode_loop_gives_generates_ids_compiled_with_a_time_per_token():
    """backend.decode_loop=lem on the GPU: CUDA-graphed steps queued without a host wait give
    the ids compiled generate gives, with one in-order device timestamp per token."""
    ref = _backend(cache_implementation="static", torch_compile=True)
    b = _backend(cache_implementation="static", torch_compile=True, decode_loop="lem")
    for backend in (ref, b):
        backend.generate(_batch(16), True)  # compiles and records the CUDA graphs
    want, rec = ref.generate(_batch(32), True), b.generate(_batch(32), True)
    assert rec.token_ids == want.token_ids and rec.output_tokens == [32] * 4
    times = rec.token_times_s[0]
    assert len(times) == 32 and all(x < y for x, y in zip(times, times[1:]))
    info = b.engine_info()
    assert info["decode_loop"] == "lem" and info["compiled"] is True
