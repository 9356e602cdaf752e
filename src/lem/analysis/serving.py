"""Serving-style figures of one measured cycle (batching=continuous): goodput under latency
bounds, the steady-state window and its energy, and the engine's state over time. Pure: reads the
backend's record, the request timings, the cycle's window and the GPU power samples.

The steady state runs from the first engine sample with at least the typical number of requests
running (the median over the engine samples with any running: ramp-up is over) to the last one
(the engine starts to drain): its edges are as fine as the engine-state sampling period
(backend.engine_state_period_s). The median, not the peak, because under open-loop arrivals
(poisson, fixed_rate) the peak is a momentary spike: on an H100 at 4 req/s the peak span was 0.1 s
of a 16 s cycle, while the typical level held for most of it. With every request arriving at once
the median is the full batch, so the span is the full-batch span. Its energy is the integral of
the sampled instantaneous GPU power over that span, since the energy counter is read only at window
edges; the whole cycle's energy is the counter's, as for every window.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from lem.analysis.metrics import RequestTiming, per_unit
from lem.measure.clock import Clock
from lem.measure.sample import Sample
from lem.measure.windows import integrate_power_j

STEADY_METHOD = ("integral of sampled instantaneous GPU power over [first, last] engine sample "
                 "with at least the median number of running requests (over busy samples), "
                 "summed over GPUs")
SLO_KEYS = ("slo_ttft_s", "slo_tpot_s", "slo_e2e_s")


def goodput(timings: list[RequestTiming], duration_s: float, b) -> dict[str, Any]:
    """Requests meeting every bound that is set; with none set, every finished request counts."""
    bounds = {k: b[k] for k in SLO_KEYS if b[k] is not None}
    ok = [t for t in timings if _meets(t, bounds)]
    return {"bounds": bounds, "requests": len(timings), "requests_ok": len(ok),
            "fraction": per_unit(len(ok), len(timings)), "goodput_rps": per_unit(len(ok), duration_s)}


def _meets(t: RequestTiming, bounds: dict[str, float]) -> bool:
    values = {"slo_ttft_s": t.ttft_s, "slo_tpot_s": t.tpot_s, "slo_e2e_s": t.e2e_s}
    for key, bound in bounds.items():
        v = values[key]
        if v is None and key == "slo_tpot_s" and t.output_tokens == 1:
            continue  # one token: no time per output token to bound
        if v is None or v > bound:
            return False
    return True


def steady_span(state: Optional[dict]) -> tuple[Optional[tuple[float, float, int, int]], Optional[str]]:
    """(start, end, typical running, peak running) on perf_counter, or (None, reason)."""
    rows = (state or {}).get("rows") or []
    if not rows:
        return None, "no engine-state samples (the engine reported no scheduler stats)"
    busy = [r[1] for r in rows if r[1] > 0]
    if not busy:
        return None, "no engine sample had a running request"
    level = int(np.median(busy))  # the typical batch while busy; ramp-up and drain lie below it
    at_level = [r[0] for r in rows if r[1] >= level]
    if at_level[-1] <= at_level[0]:
        return None, f"{level} or more requests ran in one engine sample only: no span"
    return (at_level[0], at_level[-1], level, max(busy)), None


def steady_state(rec, timings: list[RequestTiming], rows: list[Sample], gpus: list[int],
                 clock: Clock) -> dict[str, Any]:
    span, reason = steady_span(rec.engine_state)
    out: dict[str, Any] = {"start_s": None, "end_s": None, "duration_s": None, "level_running": None,
                           "peak_running": None,
                           "output_tokens": None, "output_tokens_per_s": None, "energy_j": None,
                           "j_per_output_token": None, "method": STEADY_METHOD, "reason": reason}
    if span is None:
        return out
    start, end, level, peak = span
    start_s, end_s = clock.since_s(start), clock.since_s(end)
    tokens = sum(1 for t in timings for x in t.token_times_s if start_s <= x <= end_s) \
        if rec.per_token else None
    energy = _power_integral_j(rows, gpus, clock.to_ns(start), clock.to_ns(end))
    out.update(start_s=start_s, end_s=end_s, duration_s=end - start, level_running=level,
               peak_running=peak,
               output_tokens=tokens, output_tokens_per_s=per_unit(tokens, end - start),
               energy_j=energy, j_per_output_token=per_unit(energy, tokens or 0))
    if energy is None:
        out["reason"] = "no GPU power samples covering the span (CPU run, energy=none, or sampler off)"
    if tokens is None:
        out["reason"] = "tokens in the span need per-token timestamps (backend.per_token_timestamps)"
    return out


def _power_integral_j(rows: list[Sample], gpus: list[int], start_ns: int, end_ns: int) -> Optional[float]:
    if not gpus or not rows:
        return None
    total = 0.0
    for g in gpus:
        t = np.array([r.t_ns for r in rows if r.gpu == g], dtype=np.int64)
        p = np.array([r.power_w for r in rows if r.gpu == g], dtype=float)
        joules, _ = integrate_power_j(t, p, start_ns, end_ns)
        if joules is None:
            return None
        total += joules
    return total


def engine_concurrency(records) -> dict[str, Any]:
    """Offline batches: the most requests the engine itself said were running at once, against
    the largest batch handed to it (None where the backend exposes no engine state)."""
    peaks = []
    for _, rec in records:
        state = rec.engine_state or {}
        fields, rows = state.get("fields") or [], state.get("rows") or []
        if "num_running" in fields and rows:
            peaks.append(max(r[fields.index("num_running")] for r in rows))
    return {"peak_running": max(peaks) if peaks else None,
            "largest_batch": max((len(batch) for batch, _ in records), default=0),
            "source": "the engine's own running count (engine state)" if peaks else
                      "the backend exposes no engine state"}


def engine_state(rec, t0_perf: float) -> dict[str, Any]:
    """The engine's samples with times relative to the cycle's start."""
    state = rec.engine_state or {}
    rows = [(r[0] - t0_perf, *r[1:]) for r in state.get("rows") or []]
    return {"fields": state.get("fields"), "rows": rows, "source": state.get("source"),
            "preemptions": rows[-1][4] if rows else None,
            "reason": None if rows else "the backend exposes no engine state"}


def serving_figures(records, timings: list[RequestTiming], window, rows: list[Sample], gpus: list[int],
                    clock: Clock, b) -> dict[str, Any]:
    rec = records[0][1]  # continuous batching: the whole workload is one submission
    whole_j = window.energy_j
    n_out = sum(t.output_tokens for t in timings)
    return {
        "arrival": b.arrival, "rate_rps": b.rate_rps, "max_concurrency": b.max_concurrency,
        "goodput": goodput(timings, window.duration_s, b),
        "steady_state": steady_state(rec, timings, rows, gpus, clock),
        "whole_run": {"duration_s": window.duration_s, "energy_j": whole_j, "output_tokens": n_out,
                      "j_per_output_token": per_unit(whole_j, n_out), "method": "energy counter"},
        "engine_state": engine_state(rec, clock.perf_s),
    }


@dataclass
class ServingSummary:
    """result.serving: the serving cycles pooled (per cycle, with the engine's state over time,
    in cycles[i]["serving"]). A steady-state figure is null when any cycle had none (steady_reason)."""

    cycles: int = 0
    requests: int = 0
    requests_ok: int = 0  # meeting every latency bound that is set (batching.slo_*)
    goodput_fraction: Optional[float] = None
    goodput_rps: Optional[float] = None
    steady_duration_s: Optional[float] = None
    steady_output_tokens: Optional[int] = None
    steady_output_tokens_per_s: Optional[float] = None
    steady_energy_j: Optional[float] = None
    steady_j_per_output_token: Optional[float] = None
    steady_reason: Optional[str] = None
    whole_run_energy_j: Optional[float] = None  # the energy counter over every whole cycle
    preemptions: Optional[int] = None


def pooled_serving(cycles: list[dict]) -> ServingSummary:
    """Sums over cycles, then ratios (late aggregation)."""
    parts = [c["serving"] for c in cycles if c.get("serving")]
    ok = sum(p["goodput"]["requests_ok"] for p in parts)
    n = sum(p["goodput"]["requests"] for p in parts)
    duration = sum(p["whole_run"]["duration_s"] for p in parts)
    steady = [p["steady_state"] for p in parts]
    s_j = _sum_or_none(s["energy_j"] for s in steady)
    s_tok = _sum_or_none(s["output_tokens"] for s in steady)
    s_dur = _sum_or_none(s["duration_s"] for s in steady)
    preempt = _sum_or_none(p["engine_state"]["preemptions"] for p in parts)
    return ServingSummary(
        cycles=len(parts), requests=n, requests_ok=ok, goodput_fraction=per_unit(ok, n),
        goodput_rps=per_unit(ok, duration), steady_duration_s=s_dur, steady_output_tokens=s_tok,
        steady_output_tokens_per_s=per_unit(s_tok, s_dur or 0), steady_energy_j=s_j,
        steady_j_per_output_token=per_unit(s_j, s_tok or 0), steady_reason=_steady_reason(steady),
        whole_run_energy_j=_sum_or_none(p["whole_run"]["energy_j"] for p in parts),
        preemptions=preempt)


def _steady_reason(steady: list[dict]) -> Optional[str]:
    """Why the pooled steady-state figures are null: the first cycle that had none, and why."""
    for k, s in enumerate(steady):
        if s["energy_j"] is None or s["output_tokens"] is None or s["duration_s"] is None:
            return f"cycle {k}: {s['reason']} (pooled steady-state figures need every cycle's)"
    return None if steady else "no serving cycles"


def _sum_or_none(values) -> Optional[float]:
    values = list(values)
    if not values or any(v is None for v in values):
        return None
    return sum(values)
