"""Prefill/decode attribution of a window's GPU energy, from token timestamps and power samples.

Per batch, prefill is [submission, first token] and decode is [first token, last token]; the
energy of each is the integral of the sampled instantaneous power over those intervals, summed
over GPUs. What lies in neither (host work between batches) is the counter energy minus both.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from lem.measure.sample import Sample
from lem.measure.windows import integrate_power_j

METHOD = ("integral of sampled instantaneous GPU power (linear between samples) over each "
          "batch's prefill [submit, first token] and decode [first token, last token] intervals, "
          "summed over GPUs; other = window counter energy - prefill - decode. Intervals shorter "
          "than the sampling period are resolved only as finely as the samples allow")


@dataclass
class Attribution:
    prefill_energy_j: Optional[float] = None
    decode_energy_j: Optional[float] = None
    other_energy_j: Optional[float] = None
    prefill_s: Optional[float] = None
    decode_s: Optional[float] = None
    method: str = METHOD
    reason: Optional[str] = None


def attribute(spans_ns: list[tuple[int, int, int]], rows: list[Sample], gpus: list[int],
              window_energy_j: Optional[float], span_gpus: Optional[list] = None) -> Attribution:
    """spans_ns: per batch (submit, first token, last token) on the time.time_ns clock.
    span_gpus: per batch, the GPUs that ran it (data parallel: its worker's one GPU, whose power
    alone is that batch's; batches of other workers overlap it in time); None: all `gpus`."""
    if not gpus or not rows:
        return Attribution(reason="no GPU power samples (CPU run or energy=none)")
    on = span_gpus or [gpus] * len(spans_ns)
    prefill = _phase_j([(s, f, g) for (s, f, _), g in zip(spans_ns, on)], rows, gpus)
    decode = _phase_j([(f, e, g) for (_, f, e), g in zip(spans_ns, on)], rows, gpus)
    if prefill is None or decode is None:
        return Attribution(reason="power samples do not cover the batches")
    other = window_energy_j - prefill - decode if window_energy_j is not None else None
    return Attribution(prefill, decode, other,
                       sum(f - s for s, f, _ in spans_ns) / 1e9,
                       sum(e - f for _, f, e in spans_ns) / 1e9)


def _phase_j(intervals: list[tuple[int, int, list]], rows: list[Sample], gpus: list[int]
             ) -> Optional[float]:
    total = 0.0
    for g in gpus:
        t = np.array([r.t_ns for r in rows if r.gpu == g], dtype=np.int64)
        p = np.array([r.power_w for r in rows if r.gpu == g], dtype=float)
        for a, b, on in intervals:
            if b <= a or g not in on:
                continue
            joules, _ = integrate_power_j(t, p, a, b)
            if joules is None:
                return None
            total += joules
    return total
