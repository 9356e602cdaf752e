"""Pure measurement logic: power integration, steadiness, warmup stopping, attribution,
cycle pooling and the validity verdicts."""

import numpy as np
import pytest

from lem.analysis import validity as v
from lem.analysis.attribution import attribute
from lem.measure.baseline import is_steady
from lem.measure.cycles import dynamic_j
from lem.measure.sample import Sample
from lem.measure.warmup import warm_up
from lem.measure.windows import GpuWindow, Window, integrate_power_j

S = 1_000_000_000  # ns per s


def test_integral_of_constant_power_is_power_times_time_with_interpolated_edges():
    t = np.arange(0, 11) * S // 10 * 10  # samples every 1 s for 10 s
    p = np.full(len(t), 100.0)
    joules, coverage = integrate_power_j(t, p, int(2.5 * S), int(7.5 * S))
    assert joules == pytest.approx(500.0) and coverage == 1.0


def test_integral_of_a_ramp_is_exact_between_samples():
    t = np.array([0, 1, 2]) * S
    p = np.array([0.0, 100.0, 200.0])
    joules, _ = integrate_power_j(t, p, int(0.5 * S), int(1.5 * S))
    assert joules == pytest.approx(100.0)


def test_integral_refuses_a_window_mostly_outside_the_samples():
    t = np.array([0, 1]) * S
    joules, coverage = integrate_power_j(t, np.array([1.0, 1.0]), 0, 4 * S)
    assert joules is None and coverage == pytest.approx(0.25)


def _rows(power, temps, period_s=0.1, gpu=0):
    return [Sample(int(i * period_s * S), gpu, p, "instant", 0, 0, 0, t, 0)
            for i, (p, t) in enumerate(zip(power, temps))]


def test_steady_needs_flat_temperature_and_power():
    flat = _rows([120.0] * 20, [35] * 20)
    assert is_steady(flat, now_ns=2 * S, window_s=1.0, temp_range_c=1.0, power_cv=0.05)
    cooling = _rows([120.0] * 20, list(range(50, 30, -1)))
    assert not is_steady(cooling, now_ns=2 * S, window_s=1.0, temp_range_c=1.0, power_cv=0.05)
    noisy = _rows([80.0, 160.0] * 10, [35] * 20)
    assert not is_steady(noisy, now_ns=2 * S, window_s=1.0, temp_range_c=1.0, power_cv=0.05)


def test_warmup_stops_when_latencies_are_stable():
    latencies = iter([5.0, 1.3, 1.0, 1.01, 0.99, 1.0])
    report = warm_up(lambda: next(latencies), k=3, cv_threshold=0.05, max_batches=20, max_s=60)
    assert report.converged and report.batches == 5 and report.final_cv < 0.05


def test_priming_batch_runs_once_first_and_stays_out_of_the_cv():
    calls = []
    short = iter([1.0, 1.01, 0.99])
    report = warm_up(lambda: calls.append("short") or next(short), k=3, cv_threshold=0.05,
                     max_batches=20, max_s=60, prime=lambda: calls.append("prime") or 9.0)
    assert calls == ["prime", "short", "short", "short"]
    assert report.prime_s == 9.0 and report.latencies_s == [1.0, 1.01, 0.99]
    assert report.converged and report.batches == 4 and report.final_cv < 0.05
    assert "priming" in report.rule


def test_priming_batch_counts_toward_the_batch_bound():
    report = warm_up(lambda: 1.0, k=3, cv_threshold=0.0, max_batches=3, max_s=60,
                     prime=lambda: 5.0)
    assert report.stop_reason == "max_batches" and report.batches == 3
    assert len(report.latencies_s) == 2


def test_warmup_that_never_settles_stops_at_the_bound_and_says_so():
    latencies = iter([1.0, 2.0] * 10)
    report = warm_up(lambda: next(latencies), k=3, cv_threshold=0.05, max_batches=6, max_s=60)
    assert not report.converged and report.stop_reason == "max_batches" and report.batches == 6


def test_attribution_splits_prefill_and_decode_by_token_timestamps():
    rows = _rows([600.0] * 31, [40] * 31)  # 600 W for 3 s
    spans = [(0, int(0.5 * S), int(1.5 * S)), (int(2.0 * S), int(2.25 * S), int(2.75 * S))]
    a = attribute(spans, rows, [0], window_energy_j=1800.0)
    assert a.prefill_energy_j == pytest.approx(600 * 0.75)
    assert a.decode_energy_j == pytest.approx(600 * 1.5)
    assert a.other_energy_j == pytest.approx(1800 - 450 - 900)
    assert a.prefill_s == pytest.approx(0.75) and a.decode_s == pytest.approx(1.5)


def test_attribution_without_samples_says_why():
    assert attribute([(0, 1, 2)], [], [], 10.0).reason


def test_dynamic_energy_subtracts_idle_power_times_duration():
    assert dynamic_j(1000.0, 120.0, 5.0) == pytest.approx(400.0)
    assert dynamic_j(None, 120.0, 5.0) is None and dynamic_j(1000.0, None, 5.0) is None


def _window(name="cycle_0", duration_s=10.0, energy=1000.0, integral=1000.0, reasons=0, temp=40):
    g = GpuWindow(0, energy, integral, energy / duration_s, 100, 1.0, temp, reasons)
    return Window(name, 0, int(duration_s * S), duration_s, [g], energy)


def test_counter_vs_integral_passes_within_tolerance_and_warns_beyond():
    assert v.counter_vs_integral([_window(integral=1010.0)]).verdict == "pass"
    assert v.counter_vs_integral([_window(integral=1100.0)]).verdict == "warn"
    assert v.counter_vs_integral([_window(duration_s=2.0)]).verdict == "skipped"


def test_throttling_verdicts_by_reason():
    assert v.throttling([_window(reasons=0)]).verdict == "pass"
    assert v.throttling([_window(reasons=v.SW_POWER_CAP)]).verdict == "warn"
    assert v.throttling([_window(reasons=v.HW_THERMAL)]).verdict == "fail"


def test_short_windows_hot_gpus_and_foreign_processes_are_flagged():
    assert v.window_length([_window(duration_s=0.4)]).verdict == "warn"
    unmetered = Window("cycle_0", 0, int(0.4 * S), 0.4, [], None, "the run uses no GPU")
    assert v.window_length([unmetered]).verdict == "skipped"  # a CPU run: no counter to be coarse
    assert v.temperature([_window(temp=90)], max_c=85).verdict == "warn"
    assert v.foreign_processes({"0": [4242]}).verdict == "fail"
    assert v.foreign_processes({"0": []}).verdict == "pass"
    assert v.foreign_processes(None).verdict == "skipped"


def test_forced_lengths_must_all_be_met_for_a_valid_result():
    reqs = [{"index": 0, "output_tokens": 32, "requested_output_tokens": 32},
            {"index": 1, "output_tokens": 7, "requested_output_tokens": 32}]
    verdict = v.verdict([v.tokens(reqs, forced=True)])
    assert not verdict.valid and "tokens" in verdict.reasons[0]
    assert v.tokens(reqs, forced=False).verdict == "pass"


def test_inside_slurm_the_allotted_gpus_are_measured(monkeypatch):
    from lem.machine.devices import scheduler_gpus

    monkeypatch.setenv("SLURM_JOB_ID", "42")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    assert scheduler_gpus([0]) == ([3], "gpus=[0] mapped to the GPUs SLURM allotted to this job: [3]")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-5e0c")
    gpus, note = scheduler_gpus([0])
    assert gpus == [0] and "does not map" in note
    monkeypatch.delenv("SLURM_JOB_ID")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    assert scheduler_gpus([0]) == ([0], None)


def test_data_parallel_attribution_charges_each_batch_to_its_own_gpu():
    # GPU 0 at 600 W, GPU 1 at 100 W for 3 s; one batch on each GPU over the same interval
    rows = sorted(_rows([600.0] * 31, [40] * 31) + _rows([100.0] * 31, [40] * 31, gpu=1))
    spans = [(0, int(0.5 * S), int(1.5 * S)), (0, int(0.5 * S), int(1.5 * S))]
    split = attribute(spans, rows, [0, 1], None, span_gpus=[[0], [1]])
    assert split.prefill_energy_j == pytest.approx(600 * 0.5 + 100 * 0.5)
    assert split.decode_energy_j == pytest.approx(600 * 1.0 + 100 * 1.0)
    both = attribute(spans, rows, [0, 1], None)  # without it, each batch would take both GPUs
    assert both.decode_energy_j == pytest.approx(2 * split.decode_energy_j)


def test_a_static_batch_larger_than_the_engines_per_step_limit_is_flagged_with_the_fix():
    from omegaconf import OmegaConf

    static = OmegaConf.create({"strategy": "static", "batch_size": 512})
    over = v.batch_runs_whole(static, {"max_seqs_per_step": 128})
    assert over.verdict == "warn" and "at most 128 ran at once" in over.detail
    assert "backend.max_num_seqs=512" in over.detail
    assert v.batch_runs_whole(static, {"max_seqs_per_step": 1024}).verdict == "pass"
    assert v.batch_runs_whole(static, {"library": "transformers"}).verdict == "skipped"
    assert v.batch_runs_whole(static, None).verdict == "skipped"
    # the engine's own count is the stronger evidence: it catches a cap the config does not show
    measured = [{"peak_running": 96, "largest_batch": 128}, {"peak_running": 128, "largest_batch": 128}]
    kv_capped = v.batch_runs_whole(OmegaConf.create({"strategy": "static", "batch_size": 128}),
                                   {"max_seqs_per_step": 1024}, measured)
    assert kv_capped.verdict == "warn" and "peaked at 96 running" in kv_capped.detail
    assert "KV-cache" in kv_capped.detail  # the limit is not max_num_seqs here
    whole = [{"peak_running": 128, "largest_batch": 128}]
    assert v.batch_runs_whole(OmegaConf.create({"strategy": "static", "batch_size": 128}),
                              {"max_seqs_per_step": 1024}, whole).verdict == "pass"
    unbounded = OmegaConf.create({"strategy": "continuous", "batch_size": 4, "max_concurrency": None})
    assert v.batch_runs_whole(unbounded, {"max_seqs_per_step": 2}).verdict == "skipped"
    bounded = OmegaConf.create({"strategy": "continuous", "batch_size": 4, "max_concurrency": 64})
    capped = v.batch_runs_whole(bounded, {"max_seqs_per_step": 32})
    assert capped.verdict == "warn" and "batching.max_concurrency=64" in capped.detail
