"""backend=tensorrt in lem's run: the engine build as its own measured window (NVML replaying an
H200 trace, the stand-in tensorrt_llm building), validation of what TensorRT-LLM can run, and the
CLI. Contract tests: TensorRT-LLM itself never runs here (see tests/test_tensorrt_backend.py)."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest
from tests.fakes.trt_standin import FAKES, standin

from lem.backends.base import RunContext
from lem.backends.tensorrt import engine as engines
from lem.backends.tensorrt.backend import TensorRTBackend
from lem.config.validate import ConfigError, validate
from lem.job import phases as runner
from lem.machine.host import GpuInfo, HostInfo
from lem.measure.windows import Window
from lem.models.source import ModelSource
from lem.result.schema import Result

ROOT = Path(__file__).parent.parent
TRACE = Path(__file__).parent / "data" / "h200_nvml_trace_2026-11-29.csv"


def _host(cc=(9, 0), count=2, trt=True) -> HostInfo:
    gpus = [GpuInfo(i, "NVIDIA H200" if cc >= (9, 0) else "NVIDIA A100-SXM4-80GB", f"GPU-{i}", cc, 143771)
            for i in range(count)]
    return HostInfo(gpus=gpus, packages={"tensorrt_llm": trt})


def _problems(cfg, host) -> list[str]:
    try:
        validate(cfg, host)
    except ConfigError as exc:
        return exc.problems
    return []


def _cfg(compose, *overrides):
    cfg = compose(["backend=tensorrt", "precision=bf16", "gpus=[0]", *overrides])
    cfg.gpus = list(cfg.gpus)
    return cfg


# -- the engine_build window ---------------------------------------------------------------------
@pytest.fixture
def replayed_h200(monkeypatch):
    monkeypatch.setenv("LEM_NVML_MODULE", "tests.fakes.replay_nvml")
    monkeypatch.setenv("LEM_REPLAY_TRACE", str(TRACE))
    monkeypatch.setenv("LEM_REPLAY_T0_NS", str(time.time_ns() - 12 * 10**9))  # into the burst
    import tests.fakes.replay_nvml as fake

    fake._trace = None


@pytest.fixture
def trt(monkeypatch, tmp_path):
    monkeypatch.setattr(engines, "gpu_arch", lambda gpus: ["NVIDIA H200 sm_90"] * len(gpus))
    monkeypatch.setenv(engines.ENGINE_DIR_ENV, str(tmp_path / "engines"))
    with standin(monkeypatch) as fake:
        write = fake._TrtLLM._write_engine

        def slow_write(self):  # a build long enough for the energy counter to move (~100 ms steps)
            time.sleep(0.4)
            write(self)

        monkeypatch.setattr(fake._TrtLLM, "_write_engine", slow_write)
        yield fake


def _load_like_the_runner(compose, tmp_path, source):
    from lem.measure.instruments import Instruments

    cfg = _cfg(compose, "backend.workflow=engine", f"cache_dir={tmp_path}", "energy.sample_period_s=0",
               "energy.cpu=none")
    inst, result = Instruments(cfg, None), Result()
    backend = TensorRTBackend(cfg.backend, RunContext.of(cfg))
    try:
        runner._engine_build(backend, source, cfg, inst, result)
        with inst.recorder.window("model_load"):
            backend.load(source, cfg.precision, [0])
        result.engine = backend.engine_info()
    finally:
        backend.close()
        inst.close(tmp_path)
    return result, inst.recorder.windows


def test_engine_build_is_its_own_measured_window_and_a_cache_hit_opens_none(
        compose, tmp_path, replayed_h200, trt):
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "config.json").write_text(json.dumps({"vocab_size": 100}))
    source = ModelSource("ckpt", "hub", path=str(ckpt))

    result, windows = _load_like_the_runner(compose, tmp_path, source)
    assert [w.name for w in windows] == ["engine_build", "model_load"]
    build = windows[0]
    assert build.duration_s >= 0.4 and build.reason is None
    assert build.energy_j is not None and build.energy_j > 0  # the replayed H200's counter
    assert result.phase_s["engine_build"] >= 0.4
    assert result.engine["cache_hit"] is False and len(trt.BUILDS) == 1

    again, windows = _load_like_the_runner(compose, tmp_path, source)
    assert [w.name for w in windows] == ["model_load"] and "engine_build" not in again.phase_s
    assert again.engine["cache_hit"] is True and len(trt.BUILDS) == 1
    assert again.engine["cache_key"] == result.engine["cache_key"]


# -- validation ----------------------------------------------------------------------------------
def test_a_plain_tensorrt_config_is_valid_on_an_h200(compose):
    assert _problems(_cfg(compose), _host()) == []
    assert _problems(_cfg(compose, "backend.workflow=engine", "precision=fp8", "gpus=[0,1]"), _host()) == []


def test_tensorrt_needs_the_library_and_a_gpu(compose):
    problems = _problems(_cfg(compose, "gpus=[]"), HostInfo(nvml_error="no NVML", packages={}))
    assert any("needs the tensorrt_llm package" in p and "docker compose run" in p for p in problems)
    assert any("GPUs only" in p and "gpus=[0]" in p for p in problems)


def test_fp8_needs_ada_or_newer_and_quantization_needs_the_engine_workflow(compose):
    a100 = _host(cc=(8, 0))
    problems = _problems(_cfg(compose, "backend.workflow=engine", "precision=fp8"), a100)
    assert len(problems) == 1 and "compute capability < 8.9" in problems[0]
    assert _problems(_cfg(compose, "backend.workflow=engine", "precision=int8-wo"), a100) == []
    problems = _problems(_cfg(compose, "precision=int4-wo"), _host())  # workflow=pytorch
    assert len(problems) == 1 and "backend.workflow=engine" in problems[0]


def test_precisions_tensorrt_cannot_run_are_refused_with_the_reason(compose):
    assert "float16 or bfloat16" in _problems(_cfg(compose, "precision=fp32"), _host())[0]
    bnb = _problems(_cfg(compose, "precision=int8", "backend.workflow=engine"), _host())
    assert any("backend=tensorrt cannot run it" in p for p in bnb)
    vllm = _problems(compose(["backend=vllm", "precision=int4-wo", "gpus=[]"]),
                     HostInfo(packages={"vllm": True}))
    assert any("backend=tensorrt" in p for p in vllm)  # int4 weight-only is TensorRT-LLM's


def test_backend_options_lem_owns_are_refused(compose):
    cfg = _cfg(compose, "+backend.llm_args.tensor_parallel_size=4", "+backend.llm_args.build_config={}",
               "backend.free_gpu_memory_fraction=1.5", "backend.max_batch_size=0", "backend.workflow=tensorrt")
    problems = "\n".join(_problems(cfg, _host()))
    assert "llm_args.tensor_parallel_size is set by lem: it belongs to gpus" in problems
    assert "llm_args.build_config is set by lem" in problems
    assert "free_gpu_memory_fraction=1.5" in problems and "max_batch_size=0" in problems
    assert "workflow=tensorrt is unknown" in problems
    assert _problems(_cfg(compose, "batching=continuous", "batching.max_concurrency=8"), _host()) == []


# -- CLI -------------------------------------------------------------------------------------------
def test_cli_refuses_tensorrt_on_the_cpu_with_the_fix(run_lem):
    r = run_lem("backend=tensorrt", "gpus=[]", "precision=bf16")
    assert r.returncode != 0
    assert "backend=tensorrt runs on NVIDIA GPUs only" in r.stderr + r.stdout


def test_cli_validates_a_tensorrt_run_with_the_stand_in_on_a_replayed_h200(run_lem, monkeypatch):
    """`python -m lem backend=tensorrt` with the stand-in importable and NVML replaying an H200:
    composed, schema-checked and validated (dry run: a real run would need CUDA)."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(FAKES), str(ROOT)]))
    monkeypatch.setenv("LEM_NVML_MODULE", "tests.fakes.replay_nvml")
    monkeypatch.setenv("LEM_REPLAY_TRACE", str(TRACE))
    monkeypatch.setenv("LEM_REPLAY_T0_NS", str(time.time_ns()))
    r = run_lem("backend=tensorrt", "backend.workflow=engine", "precision=fp8", "gpus=[0]", "dry_run=true")
    assert r.returncode == 0, r.stderr
    assert ": valid" in r.stdout
    bad = run_lem("backend=tensorrt", "precision=fp8", "gpus=[0]", "dry_run=true")  # pytorch workflow
    assert "backend.workflow=engine" in bad.stdout + bad.stderr


# -- pre-flight: TensorRT-LLM imports, and is a 1.x release ------------------------------------------
def test_preflight_imports_tensorrt_llm_in_a_child_process(monkeypatch):
    from lem.backends.tensorrt import preflight as pt

    assert pt.check_tensorrt_import("vllm").verdict == "skipped"
    monkeypatch.setenv("PYTHONPATH", str(FAKES))  # the child imports the stand-in
    ok = pt.check_tensorrt_import("tensorrt")
    assert ok.verdict == "pass" and "1.0.0+lem.standin" in ok.detail
    monkeypatch.setenv("PYTHONPATH", "")
    monkeypatch.setattr(pt, "IMPORT_PROBE", [sys.executable, "-c", "import tensorrt_llm_absent"])
    broken = pt.check_tensorrt_import("tensorrt")
    assert broken.verdict == "fail" and "ModuleNotFoundError" in broken.detail and "container" in broken.fix
    monkeypatch.setattr(pt, "IMPORT_PROBE", [sys.executable, "-c", "import time; time.sleep(5)"])
    assert "hung" in pt.check_tensorrt_import("tensorrt", timeout_s=0.5).detail


def test_preflight_refuses_tensorrt_llm_older_than_the_1x_api():
    from lem.backends.tensorrt.preflight import version_check

    assert version_check("0.21.0").verdict == "fail"
    assert version_check("1.0.0rc4").verdict == "pass" and version_check("1.4.0rc4").verdict == "pass"


def test_the_printed_summary_shows_the_engine_build_or_the_cache_hit():
    from lem.result.console import summary_table

    r = Result(status="ok", config={"backend": {"name": "tensorrt"}, "model": {"name": "m"},
                                    "precision": {"name": "bf16"}, "batching": {"batch_size": 4}, "gpus": [0]})
    assert "engine build" not in summary_table(r, "x")  # backends that build nothing
    r.engine = {"cache_hit": False, "cache_key": "k1"}
    r.windows = [Window("engine_build", 0, 41_500_000_000, 41.5, energy_j=9120.0)]
    line = next(x for x in summary_table(r, "x").splitlines() if "engine build" in x)
    assert line.endswith("41.5 s, 9.12e+03 J")
    r.engine = {"cache_hit": True, "cache_key": "k1"}
    assert "cached (k1)" in summary_table(r, "x")
