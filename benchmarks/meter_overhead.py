"""Overhead of lem's meter on the workload it measures: the same generate with the meter on vs
off, in one process with one loaded model, so only the meter differs.

On  = lem's sampler process polling NVML at `--period-s`, the energy counter read at both edges
      of the timed generate and the sampler's queue drained inside it (lem drains after every
      batch, reads the counter at window edges: per generate is the conservative case).
Off = the same sampler process stopped with SIGSTOP (no NVML calls, no CPU), no counter reads.

Toggling one process instead of spawning a sampler per repetition keeps process start-up out of
both modes. Pairs run back to back in alternating order (on-off, off-on, ...) and the statistic
is the paired slowdown t_on / t_off - 1. On the H200 host that statistic still spread +-13-18 % for
generate (host jitter), so `--probes` adds a GPU-bound matmul loop and a host-bound Python loop,
whose noise is small enough to resolve 1 %, and `--no-edge-reads` separates the fixed cost of
the two counter reads from the sampler's running cost. Results:
benchmarks/results/2026-11-30_h200_measurement.md.

    python benchmarks/meter_overhead.py --pairs 60 --batch-sizes 1 16      (on a GPU machine)
    python benchmarks/meter_overhead.py --batch-sizes --probes matmul python --no-edge-reads
Prints one JSON line per measurement and a summary per workload (median slowdown, bootstrap
95 % CI of the median, both modes' medians and ranges).
"""

import argparse
import json
import os
import signal
import statistics
import time

import numpy as np
import torch
from scipy.stats import (
    bootstrap,  # a CI of the median: lem.analysis.bootstrap does means; scipy: the test extra
)
from transformers import AutoConfig, AutoModelForCausalLM

from lem.backends.pytorch.backend import _fill_random, _no_init_weights
from lem.measure.energy import NvmlMeter
from lem.measure.sampler import Sampler

LLAMA3_8B = dict(model_type="llama", hidden_size=4096, intermediate_size=14336,
                 num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
                 vocab_size=128256, max_position_embeddings=8192, rope_theta=500000.0,
                 tie_word_embeddings=False)
SETTLE_S = 0.3  # after SIGCONT/SIGSTOP, before the timed generate


EDGE_READS = True  # --no-edge-reads: time the sampler alone (lem's own windows read outside)


def timed(work, sampler: Sampler, meter_on: bool) -> float:
    os.kill(sampler._proc.pid, signal.SIGCONT if meter_on else signal.SIGSTOP)
    time.sleep(SETTLE_S)
    meter = NvmlMeter([0]) if meter_on and EDGE_READS else None
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    if meter:
        meter.start()
    work()
    torch.cuda.synchronize()
    if meter_on:
        sampler.drain()
    if meter:
        meter.stop()
    return time.perf_counter() - t0


def counter_read_s(reads: int = 50) -> dict:
    """What one energy-counter read costs the caller (MEASUREMENT.md: ~4 ms on the H200)."""
    meter, times = NvmlMeter([0]), []
    for _ in range(reads):
        t0 = time.perf_counter()
        meter.start()
        times.append(time.perf_counter() - t0)
    return {"median": statistics.median(times), "max": max(times), "reads": reads}


def summarise(label: str, times: dict, pairs: list) -> dict:
    slow = np.array([on / off - 1 for on, off in pairs])
    ci = bootstrap((slow,), np.median, confidence_level=0.95, n_resamples=5000,
                   random_state=0).confidence_interval
    return {"summary": True, "workload": label, "pairs": len(pairs),
            "median_slowdown": float(np.median(slow)), "mean_slowdown": float(slow.mean()),
            "median_slowdown_ci95": [float(ci.low), float(ci.high)],
            "std_slowdown": float(slow.std(ddof=1)),
            "median_s_on": statistics.median(times[True]),
            "median_s_off": statistics.median(times[False]),
            "range_s_on": [min(times[True]), max(times[True])],
            "range_s_off": [min(times[False]), max(times[False])]}


def generate_work(model, bs: int, a):
    ids = torch.randint(10, 128000, (bs, a.prompt_tokens), device="cuda")
    return lambda: model.generate(ids, attention_mask=torch.ones_like(ids),
                                  max_new_tokens=a.new_tokens, min_new_tokens=a.new_tokens,
                                  do_sample=False, pad_token_id=0)


def matmul_work():
    """GPU-bound, few launches: isolates what NVML polling does to the GPU's own speed."""
    x = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)

    def work():
        for _ in range(400):
            torch.matmul(x, x)
    return work


def python_work():
    """Host-bound, one interpreter thread: isolates CPU contention from the sampler process."""
    def work():
        total = 0
        for i in range(3_000_000):
            total += i * i
    return work


def run_pairs(work, label, a, sampler: Sampler, deadline: float, tokens: int = 0) -> dict:
    for _ in range(3):  # warm this shape
        timed(work, sampler, True)
    times, pairs = {True: [], False: []}, []
    for i in range(a.pairs):
        if time.monotonic() > deadline:
            print(json.dumps({"note": f"time budget reached after {i} pairs", "workload": label}))
            break
        order = (True, False) if i % 2 == 0 else (False, True)
        got = {on: timed(work, sampler, on) for on in order}
        for on in order:
            times[on].append(got[on])
            print(json.dumps({"workload": label, "pair": i, "meter_on": on, "s": got[on],
                              "output_tokens_per_s": tokens / got[on] if tokens else None}),
                  flush=True)
        pairs.append((got[True], got[False]))
    return summarise(label, times, pairs)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=40)
    ap.add_argument("--batch-sizes", type=int, nargs="*", default=[1, 16])
    ap.add_argument("--probes", nargs="*", default=[], choices=["matmul", "python"],
                    help="also run the GPU-bound and host-bound probes")
    ap.add_argument("--period-s", type=float, default=0.1)
    ap.add_argument("--prompt-tokens", type=int, default=256)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--max-s", type=float, default=480.0,
                    help="stop adding pairs after this (shared equally by the workloads)")
    ap.add_argument("--no-edge-reads", action="store_true",
                    help="leave the energy-counter reads out of the timed span")
    a = ap.parse_args()
    global EDGE_READS
    EDGE_READS = not a.no_edge_reads
    print(json.dumps({"counter_read_s": counter_read_s()}), flush=True)
    torch.manual_seed(0)
    with torch.device("cuda"), _no_init_weights():
        model = AutoModelForCausalLM.from_config(AutoConfig.for_model(**LLAMA3_8B),
                                                 dtype=torch.bfloat16).eval()
    _fill_random(model, 0.02, 0)
    print(json.dumps({"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__,
                      "cpus": os.cpu_count(), "period_s": a.period_s,
                      "prompt_tokens": a.prompt_tokens, "new_tokens": a.new_tokens}), flush=True)
    sampler = Sampler([0], a.period_s)
    sampler.start()
    try:
        with torch.inference_mode():
            jobs = [(generate_work(model, bs, a), f"generate_bs{bs}", bs * a.new_tokens)
                    for bs in a.batch_sizes]
            jobs += [({"matmul": matmul_work, "python": python_work}[p](), p, 0) for p in a.probes]
            for work, label, tokens in jobs:  # an equal share of the time budget each
                deadline = time.monotonic() + a.max_s / len(jobs)
                print(json.dumps(run_pairs(work, label, a, sampler, deadline, tokens)), flush=True)
    finally:
        os.kill(sampler._proc.pid, signal.SIGCONT)
        sampler.stop()


if __name__ == "__main__":
    main()
