"""The one serving scheduler of every streaming backend: requests go to the engine at their
arrival times (batching=continuous: all at once, fixed rate or Poisson, lem.workload.arrivals),
at most `batching.max_concurrency` in flight; offline, the whole batch goes in at once.

The engine's part is one coroutine per request (`stream_one`), which submits it and streams its
tokens; this module owns when it is called. A request's submit time is when it was handed to
the engine (after its arrival time and a free slot), so TTFT includes queueing inside the engine
but not lem's own wait for a slot."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from lem.workload.arrivals import arrival_offsets_s
from lem.workload.requests import Request

T = TypeVar("T")


async def schedule(batch: list[Request], batching: Any,
                   stream_one: Callable[[Request], Awaitable[T]]) -> tuple[float, list[tuple[float, T]]]:
    """(t0, [(submit time, stream_one's result) per request, in batch order]); perf_counter times.
    `batching` is the run's batching config (None or not continuous: offline)."""
    serving = batching is not None and batching.strategy == "continuous"
    offsets = arrival_offsets_s(len(batch), batching.arrival, batching.rate_rps,
                                batching.arrival_seed) if serving else [0.0] * len(batch)
    slots = asyncio.Semaphore(batching.max_concurrency) if serving and batching.max_concurrency \
        else contextlib.nullcontext()

    async def one(r: Request, arrive_at: float) -> tuple[float, T]:
        # offline every coroutine submits before its first await: the batch goes in at once
        if arrive_at > time.perf_counter():
            await asyncio.sleep(arrive_at - time.perf_counter())
        async with slots:
            submit_s = time.perf_counter()
            return submit_s, await stream_one(r)

    t0 = time.perf_counter()
    return t0, await asyncio.gather(*(one(r, t0 + dt) for r, dt in zip(batch, offsets)))
