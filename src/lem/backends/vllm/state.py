"""vLLM's own state over time: running and waiting requests, KV-cache use, preemptions.

A stat logger handed to the engine receives the scheduler's stats after every engine step, in
lem's process (the engine core sends them with its outputs); each is stamped with
time.perf_counter() on arrival and kept at most every `period_s` (a preemption, and a new peak
of running requests, are always kept).
Imported only once vLLM is (inside the backend's `load`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from vllm.v1.metrics.loggers import StatLoggerBase

FIELDS = ("t_s", "num_running", "num_waiting", "kv_cache_usage", "preemptions")
SOURCE = ("vllm.v1.metrics SchedulerStats (num_running_reqs, num_waiting_reqs, kv_cache_usage) "
          "and IterationStats.num_preempted_reqs, via a stat logger, stamped on arrival")


@dataclass
class EngineStateLog:
    period_s: float
    rows: list[tuple] = field(default_factory=list)  # FIELDS; preemptions cumulative
    preemptions: int = 0
    _last_kept: float = float("-inf")
    _peak_running: int = 0

    def clear(self) -> None:
        self.rows, self.preemptions, self._last_kept, self._peak_running = [], 0, float("-inf"), 0

    def record(self, scheduler_stats, iteration_stats) -> None:
        now = time.perf_counter()
        new = iteration_stats.num_preempted_reqs if iteration_stats is not None else 0
        self.preemptions += new
        if scheduler_stats is None:
            return
        # a new peak of running requests is always kept, so the peak is exact, not sampled
        peak = scheduler_stats.num_running_reqs > self._peak_running
        if now - self._last_kept < self.period_s and not new and not peak:
            return
        self._last_kept = now
        self._peak_running = max(self._peak_running, scheduler_stats.num_running_reqs)
        self.rows.append((now, scheduler_stats.num_running_reqs, scheduler_stats.num_waiting_reqs,
                          float(scheduler_stats.kv_cache_usage), self.preemptions))

    def snapshot(self) -> dict:
        return {"fields": list(FIELDS), "rows": list(self.rows), "source": SOURCE}


class _Logger(StatLoggerBase):
    def __init__(self, state: EngineStateLog):
        self.state = state  # not `log`: StatLoggerBase.log() is a method vLLM calls

    def record(self, scheduler_stats, iteration_stats, mm_cache_stats=None, engine_idx: int = 0):
        self.state.record(scheduler_stats, iteration_stats)

    def log_engine_initialized(self):
        pass


def stat_logger_factory(state: EngineStateLog):
    """vLLM calls factory(vllm_config, engine_index) once per engine."""
    return lambda vllm_config, engine_index=0: _Logger(state)
