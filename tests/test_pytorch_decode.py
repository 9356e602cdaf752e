"""backend.decode_loop=lem on the real tiny model: the same ids as transformers' `generate`, one
timestamp per token, rows stopping where generate stops them, compiled or not."""

from omegaconf import OmegaConf

from lem.backends.pytorch.backend import PyTorchBackend
from lem.models.source import ModelSource
from lem.workload.requests import Request

FP32 = OmegaConf.create({"name": "fp32", "dtype": "float32", "quantization": None})
# left padding, unequal prompts and unequal targets in one batch
BATCH = [Request(0, list(range(40, 52)), 7), Request(1, [5, 9, 300, 7, 8], 10),
         Request(2, list(range(900, 908)), 4)]


def _loaded(tiny_dir, **options):
    cfg = OmegaConf.create({"name": "pytorch", "attn_implementation": None, "device_map": None,
                            "max_memory": None, "low_cpu_mem_usage": True, "torch_compile": False,
                            "compile_mode": "reduce-overhead", "cache_implementation": "static",
                            "decode_loop": "generate", "trust_remote_code": False, **options})
    b = PyTorchBackend(cfg, None)
    b.load(ModelSource("tiny", "tiny", path=str(tiny_dir)), FP32, [])
    return b


def test_lem_loop_gives_generates_ids_with_forced_lengths_and_a_time_per_token(tiny_dir):
    ref = _loaded(tiny_dir).generate(BATCH, force_output_len=True)
    b = _loaded(tiny_dir, decode_loop="lem")
    rec = b.generate(BATCH, force_output_len=True)
    assert rec.token_ids == ref.token_ids and rec.output_tokens == [7, 10, 4]
    assert [len(t) for t in rec.token_times_s] == [7, 10, 4]
    times = rec.token_times_s[1]
    assert rec.submit_s < times[0] and all(a < b for a, b in zip(times, times[1:]))
    assert b.engine_info()["decode_loop"] == "lem"


def test_lem_loop_stops_rows_at_eos_like_generate(tiny_dir):
    """With natural lengths a row ends at its EOS (counted) and the batch ends when every row has."""
    b = _loaded(tiny_dir, decode_loop="lem")
    forced = b.generate(BATCH, force_output_len=True)
    eos = forced.token_ids[1][2]  # row 1's third greedy token becomes EOS
    ref = _loaded(tiny_dir)
    for backend in (b, ref):
        backend.model.generation_config.eos_token_id = eos
        backend._read_special_ids(backend.model)
    natural, natural_ref = (x.generate(BATCH, force_output_len=False) for x in (b, ref))
    assert natural.token_ids == natural_ref.token_ids
    assert natural.output_tokens == natural_ref.output_tokens
    assert natural.output_tokens[1] == forced.token_ids[1].index(eos) + 1 <= 3
    assert [len(t) for t in natural.token_times_s] == natural.output_tokens


def test_lem_loop_with_the_compiled_call_matches_eager(tiny_dir):
    """A real inductor compile on the CPU: lem's loop uses the call generate would compile."""
    eager = _loaded(tiny_dir, decode_loop="lem").generate(BATCH[:2], force_output_len=True)
    b = _loaded(tiny_dir, decode_loop="lem", torch_compile=True, compile_mode="default")
    rec = b.generate(BATCH[:2], force_output_len=True)
    info = b.engine_info()
    assert info["compiled"] is True and info["compiled_graphs"] >= 1
    assert rec.token_ids == eager.token_ids
