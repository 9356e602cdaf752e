"""Metrics: percentiles, per-request latencies from timestamps, and the run summary."""

from __future__ import annotations

import pytest

from lem.analysis.metrics import Percentiles, RequestTiming, latency_stats, per_unit, percentiles


def _timing(index: int, input_tokens: int, submit_s: float, token_times_s: list[float],
            requested: int = 4) -> RequestTiming:
    return RequestTiming(index=index, batch=0, input_tokens=input_tokens,
                         requested_output_tokens=requested, output_tokens=len(token_times_s),
                         submit_s=submit_s, token_times_s=token_times_s)


def test_stats_of_1_to_101():
    s = percentiles([float(v) for v in range(101, 0, -1)])  # order does not matter
    assert s == Percentiles(n=101, mean=51.0, p50=51.0, p90=91.0, p95=96.0, p99=100.0)


def test_stats_of_one_value():
    assert percentiles([2.5]) == Percentiles(1, 2.5, 2.5, 2.5, 2.5, 2.5)


def test_stats_of_nothing_is_null():
    assert percentiles([]) == Percentiles(n=0, mean=None, p50=None, p90=None, p95=None, p99=None)


def test_request_timing_from_known_timestamps():
    t = _timing(0, 10, submit_s=1.0, token_times_s=[1.5, 1.75, 2.0, 2.125])
    assert t.ttft_s == pytest.approx(0.5)
    assert t.e2e_s == pytest.approx(1.125)
    assert t.itl_s == pytest.approx([0.25, 0.25, 0.125])
    assert t.tpot_s == pytest.approx((2.125 - 1.5) / 3)


def test_request_timing_with_one_token_has_no_gaps():
    t = _timing(0, 10, submit_s=1.0, token_times_s=[1.25])
    assert t.ttft_s == t.e2e_s == pytest.approx(0.25)
    assert t.itl_s == [] and t.tpot_s is None


def test_request_timing_without_tokens_is_null():
    t = _timing(0, 10, submit_s=1.0, token_times_s=[])
    assert (t.ttft_s, t.e2e_s, t.tpot_s, t.itl_s) == (None, None, None, [])


def test_latency_stats_pools_itl_over_every_gap():
    a = _timing(0, 10, 0.0, [1.0, 1.1, 1.2, 1.3])  # three gaps of 0.1
    b = _timing(1, 10, 0.0, [2.0, 2.5])  # one gap of 0.5
    s = latency_stats([a, b])
    assert s["itl_s"].n == 4 and s["itl_s"].mean == pytest.approx(0.2)  # pooled over gaps
    assert s["tpot_s"].n == 2 and s["tpot_s"].mean == pytest.approx(0.3)  # mean over requests
    assert s["ttft_s"].mean == pytest.approx(1.5)
    assert s["e2e_s"].mean == pytest.approx(1.9)


def test_latency_stats_skips_requests_without_tokens():
    s = latency_stats([_timing(0, 10, 0.0, [1.0, 2.0]), _timing(1, 10, 0.0, [])])
    assert s["ttft_s"].n == 1 and s["e2e_s"].n == 1 and s["tpot_s"].n == 1


def test_per_unit_is_null_on_missing_or_zero():
    assert per_unit(6.0, 3) == 2.0
    assert per_unit(None, 3) is None
    assert per_unit(6.0, 0) is None


def _two_requests() -> list[RequestTiming]:
    return [_timing(0, 10, 0.0, [0.5, 0.6, 0.7, 0.8]), _timing(1, 20, 0.0, [0.5, 0.9])]


def _cycle(index: int, timings, duration_s: float, energy_j, idle_w=None):
    from lem.analysis.attribution import Attribution
    from lem.measure.cycles import cycle_figures
    from lem.measure.windows import Window

    window = Window(f"cycle_{index}", 0, int(duration_s * 1e9), duration_s, [], energy_j)
    return cycle_figures(index, timings, window, idle_w, Attribution(1.0, 2.0, 0.0, 0.1, 0.2), 0.0)


def test_pooling_sums_tokens_time_and_energy_across_cycles_then_divides():
    from lem.measure.cycles import pooled

    a, b = _two_requests(), _two_requests()
    cycles = [_cycle(0, a, 2.0, 12.0, idle_w=1.0), _cycle(1, b, 1.0, 6.0, idle_w=1.0)]
    fields = pooled(cycles, a + b)
    assert fields["cycles"] == 2 and fields["num_requests"] == 4
    assert fields["input_tokens"] == 60 and fields["output_tokens"] == 12
    assert fields["duration_s"] == 3.0 and fields["output_tokens_per_s"] == pytest.approx(4.0)
    assert fields["energy_j"] == 18.0 and fields["j_per_output_token"] == pytest.approx(1.5)
    assert fields["dynamic_energy_j"] == pytest.approx(18.0 - 1.0 * 3.0)
    assert fields["output_tokens_per_j"] == pytest.approx(12 / 18)
    assert fields["itl_s"].n == 8  # every token gap of every request of every cycle
    assert cycles[0]["j_per_output_token"] == pytest.approx(2.0)


def test_pooling_without_energy_in_any_cycle_gives_null():
    from lem.measure.cycles import pooled

    cycles = [_cycle(0, _two_requests(), 2.0, 12.0), _cycle(1, _two_requests(), 2.0, None)]
    fields = pooled(cycles, _two_requests())
    assert fields["energy_j"] is None and fields["j_per_output_token"] is None
    assert fields["output_tokens_per_s"] == pytest.approx(3.0)  # the rest is still measured
