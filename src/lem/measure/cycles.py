"""Per-cycle figures and their pooling: pure functions over timings, windows and the baseline.

Pooling is late aggregation: sums of tokens, time and energy, and latency percentiles over every
request of every cycle; never averages of per-cycle averages.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any, Optional

from lem.analysis.metrics import RequestTiming, latency_stats, per_unit

CYCLE_METRICS = ["j_per_output_token", "dynamic_j_per_output_token", "output_tokens_per_s",
                 "energy_j", "ttft_s.mean", "ttft_s.p50", "ttft_s.p99", "itl_s.mean", "itl_s.p50",
                 "itl_s.p99", "tpot_s.mean", "e2e_s.mean", "e2e_s.p99"]


def dynamic_j(energy_j: Optional[float], idle_power_w: Optional[float], duration_s: float
              ) -> Optional[float]:
    """Energy above engine-ready idle: total - idle power x duration."""
    if energy_j is None or idle_power_w is None:
        return None
    return energy_j - idle_power_w * duration_s


def cycle_figures(index: int, timings: list[RequestTiming], window, idle_power_w: Optional[float],
                  attribution, cooldown_s: float) -> dict[str, Any]:
    n_out = sum(t.output_tokens for t in timings)
    dyn = dynamic_j(window.energy_j, idle_power_w, window.duration_s)
    cpu = window.cpu
    return {
        "index": index, "window": window.name, "duration_s": window.duration_s,
        "cooldown_s": cooldown_s, "num_requests": len(timings),
        "input_tokens": sum(t.input_tokens for t in timings), "output_tokens": n_out,
        "output_tokens_per_s": per_unit(n_out, window.duration_s),
        "energy_j": window.energy_j, "j_per_output_token": per_unit(window.energy_j, n_out),
        "dynamic_energy_j": dyn, "dynamic_j_per_output_token": per_unit(dyn, n_out),
        "cpu_energy_j": getattr(cpu, "total_j", None),
        **{k: asdict(v) for k, v in latency_stats(timings).items()},
        "attribution": asdict(attribution),
    }


def pooled(cycles: list[dict], timings: list[RequestTiming]) -> dict[str, Any]:
    """Summary fields over all cycles: sums, then ratios; latencies over all requests."""
    duration = sum(c["duration_s"] for c in cycles)
    n_out = sum(c["output_tokens"] for c in cycles)
    n_in = sum(c["input_tokens"] for c in cycles)
    n_req = sum(c["num_requests"] for c in cycles)
    energy = _sum_or_none(c["energy_j"] for c in cycles)
    dyn = _sum_or_none(c["dynamic_energy_j"] for c in cycles)
    return {
        "cycles": len(cycles), "num_requests": n_req, "input_tokens": n_in,
        "output_tokens": n_out, "duration_s": duration,
        "output_tokens_per_s": per_unit(n_out, duration),
        "total_tokens_per_s": per_unit(n_in + n_out, duration),
        "requests_per_s": per_unit(n_req, duration),
        **latency_stats(timings),
        "energy_j": energy, "j_per_output_token": per_unit(energy, n_out),
        "j_per_request": per_unit(energy, n_req), "output_tokens_per_j": per_unit(n_out, energy),
        "dynamic_energy_j": dyn, "dynamic_j_per_output_token": per_unit(dyn, n_out),
        "prefill_energy_j": _sum_or_none(c["attribution"]["prefill_energy_j"] for c in cycles),
        "decode_energy_j": _sum_or_none(c["attribution"]["decode_energy_j"] for c in cycles),
        "cpu_energy_j": _sum_or_none(c["cpu_energy_j"] for c in cycles),
    }


def _sum_or_none(values) -> Optional[float]:
    values = list(values)
    if not values or any(v is None for v in values):
        return None
    return float(sum(values))
