"""The measurement engine end to end on a CPU machine: the real sampler process, meter, windows,
baseline, warmup, cycles, attribution and validity, with NVML replaying a trace recorded on an
H200 and a stand-in backend that spends fixed time per token. Trace phases (seconds from its
start): no CUDA context 0-8.1 (~79 W), context idle 8.6-11.8 (~122 W), matmul burst 11.9-16.9
(~690 W), idle with context after it. The steps below are timed to land in those phases."""

import time
from pathlib import Path

import pandas as pd
import pytest
from tests.fakes.timed_backend import TimedBackend

from lem.analysis.analyse import analyse
from lem.job import phases as runner
from lem.measure.instruments import Instruments
from lem.result.schema import Result, write_result
from lem.workload.requests import Request

TRACE = Path(__file__).parent / "data" / "h200_nvml_trace_2026-11-29.csv"


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        yield mp


@pytest.fixture(scope="module")
def compose_module():
    from hydra import compose, initialize_config_dir

    import lem.config.schema
    import lem.paths

    lem.config.schema.register_configs()
    with initialize_config_dir(config_dir=str(lem.paths.conf_dir()), version_base="1.3"):
        yield lambda overrides: compose(config_name="config", overrides=overrides)


@pytest.fixture(scope="module")
def replay(monkeypatch_module):
    monkeypatch = monkeypatch_module
    monkeypatch.setenv("LEM_NVML_MODULE", "tests.fakes.replay_nvml")
    monkeypatch.setenv("LEM_REPLAY_TRACE", str(TRACE))
    import tests.fakes.replay_nvml as fake

    fake._trace = None
    def start_at(trace_s: float):
        t0 = time.time_ns() - int(trace_s * 1e9)
        monkeypatch.setenv("LEM_REPLAY_T0_NS", str(t0))
        return lambda until_s: time.sleep(max(0.0, until_s - (time.time_ns() - t0) / 1e9))

    return start_at


@pytest.fixture(scope="module")
def measured(replay, compose_module, tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("replay-run")
    cfg = compose_module(["gpus=[0]", "energy.baseline_s=1.0", "energy.settle_window_s=0.5",
                   "energy.settle_max_s=1.5", "energy.device_idle_s=1.0", "energy.cpu=none",
                   "measurement.cycles=2", "measurement.cooldown_max_s=0.2",
                   "measurement.warmup_max_batches=3", "measurement.warmup_output_len=8",
                   "dataset.output_len=40", "progress=false"])
    sleep_until = replay(5.0)  # this process and the sampler process replay from trace second 5
    inst = Instruments(cfg, None)
    result, backend = Result(), TimedBackend(load_s=1.5)
    batches = [[Request(i, [1] * 8, 40) for i in range(b * 4, b * 4 + 4)] for b in range(2)]
    try:
        inst.sample_device_idle(cfg.energy.device_idle_s)         # ~5.5-6.5: no context yet
        with inst.recorder.window("model_load"):                  # ~6.5-8.0
            result.precision = backend.load(None, cfg.precision, [0])
        result.environment = {"gpus": [{"name": "NVIDIA H200"}]}
        sleep_until(8.8)
        result.baseline = runner._baseline(cfg, inst)             # ~8.8-10.3: context idle
        with inst.recorder.window("warmup"):
            result.warmup = runner._warmup(backend, batches, cfg)
        sleep_until(12.2)
        timings = runner._cycles(backend, batches, cfg, inst, result)  # ~12.2-15.8: the burst
        analyse(result, timings, cfg, inst, backend.model_info(), [])
    finally:
        result.windows = inst.recorder.windows
        result.timeseries = inst.close(tmp_path)
    return result, tmp_path


def test_replayed_h200_run_measures_idle_baselines_and_cycles(measured):
    r, out = measured
    b, s = r.baseline, r.summary
    assert 70 < b.device_idle_power_w < 90  # the trace's no-context idle: ~79.8 W
    assert 100 < b.idle_power_w < 140  # engine-ready idle with a context: ~120 W
    assert b.settle.rule and b.idle_power_std_w is not None
    assert [w.name for w in r.windows] == ["model_load", "baseline", "warmup", "cycle_0", "cycle_1"]
    burst = r.windows[-1]
    # the matmul burst, ~690 W by counter; a 1.7 s window carries +-0.1 s of counter steps (~6 %)
    assert 550 < burst.energy_j / burst.duration_s < 780
    assert s.energy_j == pytest.approx(sum(w.energy_j for w in r.windows[3:]))
    assert s.dynamic_energy_j == pytest.approx(s.energy_j - b.idle_power_w * s.duration_s)
    assert s.j_per_output_token == pytest.approx(s.energy_j / s.output_tokens)
    assert s.output_tokens == 2 * 8 * 40 and s.cycles == 2


def test_replayed_run_attributes_prefill_and_decode_energy(measured):
    r, _ = measured
    a = r.attribution
    assert a.prefill_energy_j > 0 and a.decode_energy_j > a.prefill_energy_j  # 50 ms vs 800 ms
    assert a.prefill_energy_j + a.decode_energy_j <= r.summary.energy_j * 1.05
    assert a.decode_s == pytest.approx(2 * 2 * 39 * 0.02, rel=0.25)


def test_replayed_run_has_statistics_roofline_and_verdicts(measured):
    r, _ = measured
    assert r.statistics["j_per_output_token"].n == 2
    assert r.roofline.mbu is not None and 0 < r.roofline.mbu < 0.2  # 20 ms steps of a 16 GB model
    verdicts = {c.name: c.verdict for c in r.validity.checks}
    assert verdicts["tokens"] == "pass" and verdicts["foreign_processes"] == "pass"
    assert verdicts["sample_coverage"] == "pass"
    assert r.warmup.batches <= 3


def test_replayed_run_writes_a_labelled_timeseries(measured):
    r, out = measured
    df = pd.read_parquet(out / "timeseries.parquet")
    assert r.timeseries.rows == len(df) and r.timeseries.power_source == {"0": "instant"}
    assert set(df.window.dropna()) == {"model_load", "baseline", "warmup", "cycle_0", "cycle_1"}
    assert df.t_ns.is_monotonic_increasing and (df.power_w > 50).all()
    cycle_1 = df[df.window == "cycle_1"]
    assert cycle_1.power_w.mean() > 500  # the burst, sampled


def test_replayed_result_reads_back_equal_from_its_result_json(measured):
    """The typed reader against a result as the measuring code builds it (numpy scalars, tuples and all)."""
    r, out = measured
    assert Result.read(write_result(r, out / "written")) == r
