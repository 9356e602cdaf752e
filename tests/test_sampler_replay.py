"""The sampler process and the NVML meter against a trace recorded on a real H200, replayed."""

import time
from pathlib import Path

import pytest

from lem.measure.energy import NvmlMeter
from lem.measure.sampler import COLUMNS, Sampler

TRACE = Path(__file__).parent / "data" / "h200_nvml_trace_2026-11-29.csv"


@pytest.fixture
def replay(monkeypatch):
    """Replay the trace from its start, now, in this process and in spawned ones."""
    monkeypatch.setenv("LEM_NVML_MODULE", "tests.fakes.replay_nvml")
    monkeypatch.setenv("LEM_REPLAY_TRACE", str(TRACE))
    monkeypatch.setenv("LEM_REPLAY_T0_NS", str(time.time_ns()))
    import tests.fakes.replay_nvml as fake

    fake._trace = None
    return fake


def test_sampler_process_samples_instant_power_on_the_shared_clock(replay):
    s = Sampler([0], period_s=0.05)
    t0 = time.time_ns()
    s.start()
    time.sleep(1.0)
    rows = s.stop()
    t1 = time.time_ns()
    assert len(COLUMNS) == len(rows[0])
    assert 10 <= len(rows) <= 25  # ~20 ticks at 50 ms in 1 s, process start included
    assert all(t0 <= r[0] <= t1 for r in rows)
    assert all(r[3] == "instant" for r in rows)
    assert 70 < rows[0][2] < 90  # the trace opens at device idle, ~79 W
    assert s.power_fallback == {0: False}


def test_nvml_meter_reads_the_counter_at_window_edges(replay, monkeypatch):
    monkeypatch.setenv("LEM_REPLAY_SPEED", "4")  # 6 trace-seconds of idle in 1.5 s
    meter = NvmlMeter([0])
    meter.start()
    time.sleep(1.5)
    reading = meter.stop()
    trace_s = reading.duration_s * 4
    # the trace's first 6 s are idle at ~80-120 W: energy must be in that band (100 ms steps)
    assert 70 * (trace_s - 0.4) < reading.total_j < 130 * (trace_s + 0.4)
    assert reading.devices[0].uuid == "GPU-replay-0"


def test_thermal_gap_waits_while_the_gpu_cools_after_a_burst(replay, monkeypatch):
    from lem.machine.devices import wait_for_steady_temperature

    # trace second 17: the matmul burst just ended, the GPU cools from 58 C for a few seconds
    monkeypatch.setenv("LEM_REPLAY_T0_NS", str(time.time_ns() - 17_000_000_000))
    after_burst = wait_for_steady_temperature([0], max_s=15, range_c=1.0)
    # trace second 2: long idle, already steady
    monkeypatch.setenv("LEM_REPLAY_T0_NS", str(time.time_ns() - 2_000_000_000))
    idle = wait_for_steady_temperature([0], max_s=15, range_c=1.0)
    assert after_burst.steady and idle.steady
    assert after_burst.waited_s > idle.waited_s + 1.0
    assert wait_for_steady_temperature([], max_s=15, range_c=1.0) is None  # CPU run: no gap
