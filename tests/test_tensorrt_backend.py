"""backend=tensorrt against a stand-in of TensorRT-LLM's LLM API (tests/fakes/tensorrt_llm).

These are contract tests: they check what lem hands to the API (LLM keywords, BuildConfig,
QuantConfig, KvCacheConfig, SamplingParams), how it reads the streamed outputs, the engine cache
and the engine_build window. The stand-in reproduces the signatures and streaming behaviour of the
source version named in its docstring; nothing here ran TensorRT-LLM itself or a GPU.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from tests.fakes.trt_standin import standin

from lem.backends.base import RunContext
from lem.backends.tensorrt import engine as engines
from lem.backends.tensorrt.backend import TensorRTBackend, sampling_kwargs
from lem.models.source import ModelSource
from lem.workload.requests import Request

ARCH = ["NVIDIA H200 sm_90"]


@pytest.fixture
def trt(monkeypatch, tmp_path):
    """The stand-in importable as `tensorrt_llm`, its call logs empty, engines under tmp_path."""
    monkeypatch.setattr(engines, "gpu_arch", lambda gpus: ARCH * len(gpus))
    monkeypatch.setenv(engines.ENGINE_DIR_ENV, str(tmp_path / "engines"))
    with standin(monkeypatch) as fake:
        import tensorrt_llm

        assert tensorrt_llm.__version__.endswith("lem.standin")
        yield fake


@pytest.fixture
def checkpoint(tmp_path) -> ModelSource:
    path = tmp_path / "ckpt"
    path.mkdir()
    (path / "config.json").write_text(json.dumps({"model_type": "llama", "vocab_size": 1000,
                                                  "eos_token_id": 2}))
    return ModelSource("ckpt", "hub", path=str(path))


def _backend(compose, tmp_path, *overrides):
    cfg = compose(["backend=tensorrt", "precision=bf16", f"cache_dir={tmp_path}", *overrides])
    cfg.gpus = list(cfg.gpus) if cfg.gpus != "auto" else [0]
    return TensorRTBackend(cfg.backend, RunContext.of(cfg)), cfg


def _run(backend, source, cfg):
    build = backend.engine_build(source, cfg.precision, list(cfg.gpus))
    if build is not None:
        build()
    backend.load(source, cfg.precision, list(cfg.gpus))
    return build is not None


# -- what reaches LLM(...) ----------------------------------------------------------------------
def test_pytorch_workflow_passes_yaml_options_and_tp_size_to_llm(compose, tmp_path, trt, checkpoint):
    b, cfg = _backend(compose, tmp_path, "gpus=[0,1]", "backend.max_batch_size=8",
                      "backend.max_num_tokens=4096", "backend.free_gpu_memory_fraction=0.5",
                      "+backend.llm_args.enable_chunked_prefill=true")
    assert b.engine_build(checkpoint, cfg.precision, [0, 1]) is None  # nothing built ahead
    info = b.load(checkpoint, cfg.precision, [0, 1])
    cls, kw = trt.CALLS[-1]
    assert cls == "LLM" and kw["model"] == checkpoint.path
    assert kw["tensor_parallel_size"] == 2 and kw["dtype"] == "bfloat16"
    assert kw["max_batch_size"] == 8 and kw["max_num_tokens"] == 4096 and "max_seq_len" not in kw
    assert kw["kv_cache_config"].free_gpu_memory_fraction == 0.5
    assert kw["kv_cache_config"].enable_block_reuse is False  # cycles repeat the same prompts
    assert kw["enable_chunked_prefill"] is True and "build_config" not in kw
    assert info.compute_dtype == "bfloat16" and info.quantization is None
    assert b.engine_info()["workflow"] == "pytorch" and b.engine_info()["engine_dir"] is None
    assert b.engine_info()["max_seqs_per_step"] == 8  # for validity's batch_runs_whole
    b.close()


def test_random_model_in_the_pytorch_workflow_loads_dummy_weights(compose, tmp_path, trt):
    b, cfg = _backend(compose, tmp_path, "model=tiny", "gpus=[0]")
    arch = dict(cfg.model.config, vocab_size=500)
    source = ModelSource("r", "random", config=arch)
    b.load(source, cfg.precision, [0])
    _, kw = trt.CALLS[-1]
    assert kw["load_format"] == "dummy" and kw["skip_tokenizer_init"] is True
    assert json.loads((Path(kw["model"]) / "config.json").read_text())["vocab_size"] == 500
    # no tokenizer: without an explicit end_id TensorRT-LLM refuses the request; lem gives one
    rec = b.generate([Request(0, [5, 6, 7], 4)], True)
    assert rec.output_tokens == [4] and b.sampling_params(Request(0, [1], 4), True).end_id == -1
    b.close()


def test_forced_lengths_ignore_eos_and_set_min_tokens_greedily():
    r = Request(0, [1, 2, 3], 17)
    assert sampling_kwargs(r, True, True, None) == {"max_tokens": 17, "min_tokens": 17, "ignore_eos": True,
                                                    "top_k": 1, "detokenize": True}
    free = sampling_kwargs(r, False, False, 7)
    assert free["min_tokens"] is None and free["ignore_eos"] is False
    assert free["end_id"] == free["pad_id"] == 7


# -- streaming ----------------------------------------------------------------------------------
def test_streamed_tokens_are_counted_from_ids_and_stamped_on_arrival(compose, tmp_path, trt, checkpoint):
    b, cfg = _backend(compose, tmp_path, "gpus=[0]")
    b.load(checkpoint, cfg.precision, [0])
    batch = [Request(i, [i + 1] * (3 + i), 6) for i in range(3)]
    t0 = time.perf_counter()
    rec = b.generate(batch, True)
    assert rec.output_tokens == [6, 6, 6] and rec.per_token
    assert [len(ids) for ids in rec.token_ids] == [6, 6, 6]
    for times in rec.token_times_s:  # one token per stand-in step, each stamped when it arrived
        assert len(times) == 6 and t0 <= rec.submit_s <= times[0]
        assert all(b2 - a >= trt.STEP_S * 0.5 for a, b2 in zip(times, times[1:]))
    natural = b.generate(batch, False)  # the stand-in ends each request at step 2..5
    assert all(0 < n < 6 for n in natural.output_tokens)
    assert natural.output_tokens == [len(ids) for ids in natural.token_ids]
    assert natural.output_tokens == [len(t) for t in natural.token_times_s]
    assert 2 not in sum(natural.token_ids, [])  # the end token (the tokenizer's eos) is not output
    b.close()


def _serve(compose, tmp_path, checkpoint, rate_rps, *overrides):
    b, cfg = _backend(compose, tmp_path, "gpus=[0]", "batching=continuous", "batching.arrival=fixed_rate",
                      f"batching.rate_rps={rate_rps}", *overrides)
    b.load(checkpoint, cfg.precision, [0])
    rec = b.generate([Request(i, [i + 1, 2], 8) for i in range(5)], True)
    b.close()
    assert rec.output_tokens == [8] * 5 and len(rec.request_submit_s) == 5
    return rec, [(s, t[-1]) for s, t in zip(rec.request_submit_s, rec.token_times_s)]


def test_serving_submits_on_the_arrival_schedule(compose, tmp_path, trt, checkpoint):
    rec, spans = _serve(compose, tmp_path, checkpoint, 50)
    for i, (s, _) in enumerate(spans):  # each at its arrival (every 20 ms), never before
        assert i / 50 - 1e-3 <= s - rec.submit_s < i / 50 + 0.015
    assert all(s <= t for s, t in zip(rec.request_submit_s, (ts[0] for ts in rec.token_times_s)))


def test_serving_keeps_within_max_concurrency(compose, tmp_path, trt, checkpoint):
    _, free = _serve(compose, tmp_path, checkpoint, 1000)  # 1 ms apart, ~16 ms each: they overlap
    assert any(s2 < s < e2 for s, _ in free for s2, e2 in free)
    _, bounded = _serve(compose, tmp_path, checkpoint, 1000, "batching.max_concurrency=1")
    assert not any(s2 < s < e2 for s, _ in bounded for s2, e2 in bounded)  # one at a time


def test_a_closed_backend_shuts_the_llm_down(compose, tmp_path, trt, checkpoint):
    b, cfg = _backend(compose, tmp_path, "gpus=[0]")
    b.load(checkpoint, cfg.precision, [0])
    llm = b.llm
    b.close()
    with pytest.raises(RuntimeError, match="shutting down"):
        llm.generate_async([1, 2], streaming=True)


# -- engine workflow and cache -------------------------------------------------------------------
def test_engine_is_built_once_then_loaded_from_the_cache(compose, tmp_path, trt, checkpoint):
    overrides = ["backend.workflow=engine", "precision=int8-wo", "gpus=[0,1]", "backend.max_batch_size=16"]
    first, cfg = _backend(compose, tmp_path, *overrides)
    assert _run(first, checkpoint, cfg) is True
    assert len(trt.BUILDS) == 1
    built = trt.BUILDS[0]
    assert built["model"] == checkpoint.path and built["tensor_parallel_size"] == 2
    assert built["build_config"].max_batch_size == 16 and built["dtype"] == "bfloat16"
    assert built["quant_config"].quant_algo.value == "W8A16"
    cls, kw = trt.CALLS[-1]  # the run itself: the saved engine, the checkpoint's tokenizer
    assert cls == "_TrtLLM" and kw["model"] == str(first.plan.engine_dir)
    assert kw["tokenizer"] == checkpoint.path and "build_config" not in kw
    assert kw["dtype"] == "auto"  # not passed: the engine's own dtype
    info = first.engine_info()
    assert info["cache_hit"] is False and info["build_s"] >= 0 and info["built_at"]
    assert len(list(first.plan.engine_dir.glob("rank*.engine"))) == 2
    assert first.generate([Request(0, [3, 4], 5)], True).output_tokens == [5]
    first.close()

    again, cfg2 = _backend(compose, tmp_path, *overrides, "backend.free_gpu_memory_fraction=0.6")
    assert _run(again, checkpoint, cfg2) is False  # runtime options do not touch the engine
    assert len(trt.BUILDS) == 1 and again.engine_info()["cache_hit"] is True
    again.close()

    bigger, cfg3 = _backend(compose, tmp_path, *overrides[:-1], "backend.max_batch_size=32")
    assert _run(bigger, checkpoint, cfg3) is True and len(trt.BUILDS) == 2
    assert bigger.plan.key != first.plan.key
    bigger.close()


def test_engine_workflow_refuses_to_load_what_was_never_built(compose, tmp_path, trt, checkpoint):
    b, cfg = _backend(compose, tmp_path, "backend.workflow=engine", "gpus=[0]")
    with pytest.raises(RuntimeError, match="engine_build"):
        b.load(checkpoint, cfg.precision, [0])


def test_interrupted_build_leaves_no_engine(compose, tmp_path, trt, checkpoint, monkeypatch):
    b, cfg = _backend(compose, tmp_path, "backend.workflow=engine", "gpus=[0]")
    build = b.engine_build(checkpoint, cfg.precision, [0])

    def broken_save(self, engine_dir):
        Path(engine_dir).mkdir(parents=True)
        (Path(engine_dir) / "rank0.engine").write_bytes(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(trt._TrtLLM, "save", broken_save)
    with pytest.raises(KeyboardInterrupt):
        build()
    assert not b.plan.cached and not b.plan.engine_dir.exists()
    assert list(b.plan.engine_dir.parent.iterdir()) == []  # nor its staging directory


def test_engine_key_changes_with_everything_that_shapes_the_engine(compose, tmp_path):
    cfg = compose(["backend=tensorrt", "backend.workflow=engine", "precision=bf16"])
    src = ModelSource("m", "hub", path="/snap/abc")

    def key(source=src, precision=cfg.precision, backend=cfg.backend, tp=1, version="1.0", arch=ARCH):
        return engines.engine_key(engines.key_inputs(source, precision, backend, tp, version, arch))

    base = key()
    changed = {
        "model": key(source=ModelSource("m", "hub", path="/snap/def")),
        "dtype": key(precision=compose(["backend=tensorrt", "precision=fp16"]).precision),
        "quantization": key(precision=compose(["backend=tensorrt", "precision=fp8"]).precision),
        "tp": key(tp=2),
        "limits": key(backend=compose(["backend=tensorrt", "backend.max_seq_len=2048"]).backend),
        "version": key(version="1.1"),
        "arch": key(arch=["NVIDIA A100-SXM4-80GB sm_80"]),
        "llm_args": key(backend=compose(["backend=tensorrt", "+backend.llm_args.fast_build=true"]).backend),
    }
    assert len({base, *changed.values()}) == len(changed) + 1
    runtime = compose(["backend=tensorrt", "backend.free_gpu_memory_fraction=0.5",
                       "backend.enable_block_reuse=true", "backend.workflow=engine"]).backend
    assert key(backend=runtime) == base  # KV-cache options are runtime, not engine shape


def test_engine_root_follows_the_env_then_the_cache_dir(monkeypatch, tmp_path):
    monkeypatch.delenv(engines.ENGINE_DIR_ENV, raising=False)
    assert engines.engine_root(str(tmp_path)) == tmp_path / "tensorrt-engines"
    monkeypatch.setenv(engines.ENGINE_DIR_ENV, "/cache/tensorrt-llm")
    assert engines.engine_root(str(tmp_path)) == Path("/cache/tensorrt-llm")


def test_random_model_in_the_engine_workflow_is_written_once_before_the_build(compose, tmp_path, trt):
    b, cfg = _backend(compose, tmp_path, "model=tiny", "backend.workflow=engine", "gpus=[0]")
    source = ModelSource("r", "random", config=dict(cfg.model.config, vocab_size=300), seed=3)
    build = b.engine_build(source, cfg.precision, [0])
    written = list((tmp_path / "random-checkpoints").glob("*/config.json"))
    assert len(written) == 1 and not trt.BUILDS  # the checkpoint exists before the build window opens
    build()
    assert trt.BUILDS[0]["model"] == str(written[0].parent) and trt.BUILDS[0]["skip_tokenizer_init"]
    b.load(source, cfg.precision, [0])
    _, kw = trt.CALLS[-1]
    assert kw["skip_tokenizer_init"] is True and kw["tokenizer"] is None  # no tokenizer to load
    assert b.generate([Request(0, [1, 2], 3)], True).output_tokens == [3]
    b.close()


def test_the_stand_in_is_gone_after_its_test(monkeypatch):
    """Other tests probe for an installed tensorrt_llm (find_spec looks in sys.modules first)."""
    import importlib.util

    with standin(monkeypatch):
        assert importlib.util.find_spec("tensorrt_llm") is not None
    monkeypatch.undo()
    assert importlib.util.find_spec("tensorrt_llm") is None
