"""Serving-style load through vLLM's AsyncLLM: requests arrive on lem's one schedule
(lem.backends.scheduler: all at once, fixed rate, Poisson, an optional bound on how many are in
flight), and every output is stamped with time.perf_counter() as it reaches lem.

The async engine runs on an event loop this module owns; the runner stays synchronous and calls
`serve` once per pass over the workload. Each request's submit time is when lem handed it to the
engine (after its arrival time and, with max_concurrency, a free slot).
"""

from __future__ import annotations

import asyncio
import time

from lem.backends.scheduler import schedule
from lem.workload.requests import Request


class Server:
    def __init__(self, engine_kwargs: dict, stat_loggers: list, backend):
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.usage.usage_lib import UsageContext
        from vllm.v1.engine.async_llm import AsyncLLM

        self.backend = backend
        self.batching = backend.run.batching
        self.loop = asyncio.new_event_loop()

        async def start():
            # OPENAI_API_SERVER: the scheduler defaults of `vllm serve`, which serving mode stands
            # in for (AsyncLLM's own default context gets 128 sequences, 2048 tokens per step)
            return AsyncLLM.from_engine_args(AsyncEngineArgs(**engine_kwargs), stat_loggers=stat_loggers,
                                             usage_context=UsageContext.OPENAI_API_SERVER)

        self.engine = self.loop.run_until_complete(start())

    def serve(self, batch: list[Request], forced: bool):
        return self.loop.run_until_complete(self._serve(batch, forced))

    async def _serve(self, batch: list[Request], forced: bool):
        from lem.backends.vllm.backend import streams_record

        t0, done = await schedule(batch, self.batching, lambda r: self._stream(r, forced))
        return streams_record(t0, [s for _, s in done], self.backend.cfg.per_token_timestamps,
                              request_submit_s=[t for t, _ in done])

    async def _stream(self, r: Request, forced: bool):
        from lem.backends.vllm.backend import TokenStream

        stream = TokenStream(self.backend.clock_offset_s)
        params = self.backend.sampling_params(r, forced)
        async for out in self.engine.generate({"prompt_token_ids": r.prompt_ids}, params,
                                              self.backend.next_id()):
            stream.add(out, time.perf_counter())
        return stream

    def rpc(self, method: str) -> list:
        """One call of a worker-extension method on every worker (lem.backends.vllm.worker)."""
        return self.loop.run_until_complete(self.engine.collective_rpc(method))

    def close(self) -> None:
        """Stop the engine core, then let the engine's own tasks (its output handler) finish
        being cancelled before the loop closes, so none is left to run on a closed loop."""
        self.engine.shutdown()
        pending = asyncio.all_tasks(self.loop)
        for task in pending:
            task.cancel()
        self.loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        self.loop.run_until_complete(self.loop.shutdown_asyncgens())
        self.loop.close()
