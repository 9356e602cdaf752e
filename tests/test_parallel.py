"""Data and tensor parallelism on the CPU: two real worker processes with the tiny model (gloo for
tensor parallel), the pooling of their raw samples, provenance, validation and the idle-GPU check.
The GPU versions are the `gpu`-marked tests and benchmarks/gpu_parallel.sh."""

import json

import pytest
from omegaconf import OmegaConf

from lem.analysis.validity import idle_gpu_in_group
from lem.backends.pytorch.backend import PyTorchBackend
from lem.backends.pytorch.parallel import ParallelBackend
from lem.config.validate import ConfigError, validate
from lem.machine.host import HostInfo
from lem.measure.windows import GpuWindow, Window
from lem.models.source import ModelSource

FP32 = OmegaConf.create({"name": "fp32", "dtype": "float32", "quantization": None})


def _cfg(**options):
    return OmegaConf.create({"name": "pytorch", "attn_implementation": None, "device_map": None,
                             "max_memory": None, "low_cpu_mem_usage": True, "torch_compile": False,
                             "cache_implementation": None, "decode_loop": "generate",
                             "trust_remote_code": False,
                             "parallel": None, "parallel_size": None, **options})


def _batches():
    from lem.workload.requests import Request

    return [[Request(2 * b + i, [10 + b, 11 + i, 12 + b * i, 13], 6) for i in range(2)]
            for b in range(5)]


@pytest.mark.slow
def test_data_parallel_deals_batches_to_two_workers_with_the_same_tokens(tiny_dir):
    source = ModelSource("tiny", "tiny", path=str(tiny_dir))
    single = PyTorchBackend(_cfg(), None)
    single.load(source, FP32, [])
    expected = [single.generate(b, True).token_ids for b in _batches()]
    dp = ParallelBackend(_cfg(parallel="data", parallel_size=2), None)
    try:
        dp.load(source, FP32, [])
        seen = []
        records = dp.generate_all(_batches(), True, seen.append)
        described = dp.describe()
    finally:
        dp.close()
    assert [r.token_ids for r in records] == expected  # same work, same greedy tokens, same order
    assert [r.worker for r in records] == [0, 1, 0, 1, 0]  # round-robin over the two ranks
    assert sorted(seen) == [0, 1, 2, 3, 4]
    pids = {w.pid for w in described.workers}
    assert described.mode == "data" and len(pids) == 2
    assert all(r.token_times_s[0][0] > r.submit_s for r in records)  # one clock for all processes
    # the two shares overlapped in time: the workers really ran side by side
    spans = {w: (min(r.submit_s for r in records if r.worker == w),
                 max(r.token_times_s[0][-1] for r in records if r.worker == w)) for w in (0, 1)}
    assert spans[0][0] < spans[1][1] and spans[1][0] < spans[0][1]


@pytest.mark.slow
def test_tensor_parallel_shards_the_model_over_two_gloo_ranks(tiny_dir):
    source = ModelSource("tiny", "tiny", path=str(tiny_dir))
    single = PyTorchBackend(_cfg(), None)
    single.load(source, FP32, [])
    full = single.model_info()["local_param_elements"]
    tp = ParallelBackend(_cfg(parallel="tensor", parallel_size=2), None)
    try:
        tp.load(source, FP32, [])
        described = tp.describe()
        rec = tp.generate(_batches()[0], True)
    finally:
        tp.close()
    local = described.local_param_elements_per_worker
    assert len(local) == 2 and all(n < full for n in local)  # each rank holds a shard only
    assert rec.output_tokens == [6, 6] and len(rec.token_times_s[0]) == 6


@pytest.mark.slow
def test_lems_decode_loop_runs_tensor_parallel_with_the_single_process_ids(tiny_dir):
    """backend.decode_loop=lem over a sharded model (two gloo ranks): the ids of one process."""
    source = ModelSource("tiny", "tiny", path=str(tiny_dir))
    single = PyTorchBackend(_cfg(cache_implementation="static"), None)
    single.load(source, FP32, [])
    want = single.generate(_batches()[0], True).token_ids
    tp = ParallelBackend(_cfg(parallel="tensor", parallel_size=2, cache_implementation="static",
                              decode_loop="lem"), None)
    try:
        tp.load(source, FP32, [])
        rec = tp.generate(_batches()[0], True)
    finally:
        tp.close()
    assert rec.token_ids == want and len(rec.token_times_s[1]) == 6


@pytest.mark.slow
def test_a_data_parallel_run_pools_both_workers_requests_in_one_result(run_lem, tmp_path):
    proc = run_lem("backend.parallel=data", "backend.parallel_size=2", "dataset.num_requests=6",
                   "batching.batch_size=2", "measurement.cycles=1", "progress=false",
                   "hydra.run.dir=out")
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads((tmp_path / "out" / "result.json").read_text())
    assert r["status"] == "ok" and r["parallel"]["mode"] == "data" and r["parallel"]["size"] == 2
    workers = [q["worker"] for q in r["requests"]]
    assert sorted(set(workers)) == [0, 1] and len(workers) == 6
    assert r["summary"]["num_requests"] == 6 and r["summary"]["ttft_s"]["n"] == 6  # pooled raw


def _validate(compose, *overrides, gpus=()):
    cfg = compose(list(overrides))
    cfg.gpus = list(gpus)
    with pytest.raises(ConfigError) as e:
        validate(cfg, HostInfo())
    return str(e.value)


def test_parallel_configs_that_cannot_run_are_refused_with_the_fix(compose):
    assert "backend.parallel_size >= 2" in _validate(compose, "backend.parallel=data")
    assert "needs at least two GPUs" in _validate(compose, "backend.parallel=data", gpus=[0])
    assert "GPU list sets the size" in _validate(compose, "backend.parallel=data",
                                                 "backend.parallel_size=4", gpus=[0, 1])
    assert "is unknown" in _validate(compose, "backend.parallel=pipeline")


def _window(name, energy_by_gpu, duration_s=10.0):
    return Window(name, 0, int(duration_s * 1e9), duration_s,
                  [GpuWindow(g, e, e, e / duration_s, 100, 1.0, 40, 0) for g, e in energy_by_gpu.items()])


def test_a_gpu_that_stayed_near_idle_in_a_multi_gpu_run_is_flagged():
    idle = {"0": 100.0, "1": 100.0}
    busy = [_window("cycle_0", {0: 4000.0, 1: 3800.0})]  # +300 W and +280 W over idle
    assert idle_gpu_in_group(busy, idle).verdict == "pass"
    lazy = [_window("cycle_0", {0: 4000.0, 1: 1050.0})]  # GPU 1: +5 W
    check = idle_gpu_in_group(lazy, idle)
    assert check.verdict == "warn" and "GPU 1" in check.detail
    assert idle_gpu_in_group([_window("cycle_0", {0: 4000.0})], {"0": 100.0}).verdict == "skipped"


@pytest.mark.slow
def test_tensor_parallel_random_model_is_written_once_as_a_checkpoint(run_lem, lem_cache, tmp_path):
    args = ("model.source=random", "+model.config.vocab_size=1000", "backend.parallel=tensor",
            "backend.parallel_size=2", "dataset.num_requests=2", "measurement.cycles=1",
            "progress=false", "hydra.run.dir=out")
    proc = run_lem(*args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads((tmp_path / "out" / "result.json").read_text())
    assert r["status"] == "ok" and r["parallel"]["mode"] == "tensor"
    local = r["parallel"]["local_param_elements_per_worker"]
    assert len(local) == 2 and local[0] < r["roofline"]["bytes_per_step"]  # a shard, not the model
    checkpoints = list((lem_cache / "random-checkpoints").glob("*/config.json"))
    assert len(checkpoints) == 1
    assert r["parallel"]["random_checkpoint_write_s"] > 0  # this run wrote it, inside model load
    again = run_lem(*args[:-1], "hydra.run.dir=again")
    assert again.returncode == 0, again.stderr[-3000:]
    r2 = json.loads((tmp_path / "again" / "result.json").read_text())
    assert r2["parallel"]["random_checkpoint_write_s"] is None  # reused, not rewritten
    assert list((lem_cache / "random-checkpoints").glob("*/config.json")) == checkpoints
