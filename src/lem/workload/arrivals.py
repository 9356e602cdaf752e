"""When each request of a serving-style run arrives: all at once, at a fixed rate, or as a seeded
Poisson process. Pure: offsets in seconds from the start of the run, one per request."""

from __future__ import annotations

import numpy as np


def arrival_offsets_s(n: int, arrival: str, rate_rps: float | None, seed: int) -> list[float]:
    """n offsets, non-decreasing, the first at 0 (the run starts with a request)."""
    if arrival == "all_at_once":
        return [0.0] * n
    if not rate_rps or rate_rps <= 0:
        raise ValueError(f"batching.arrival={arrival} needs batching.rate_rps > 0")
    if arrival == "fixed_rate":
        return [i / rate_rps for i in range(n)]
    if arrival == "poisson":
        gaps = np.random.default_rng(seed).exponential(1.0 / rate_rps, size=max(n - 1, 0))
        return [0.0, *np.cumsum(gaps).tolist()][:n]
    raise ValueError(f"batching.arrival={arrival} is unknown; use all_at_once|fixed_rate|poisson")
