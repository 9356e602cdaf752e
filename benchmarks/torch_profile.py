"""Where a PyTorch-backend decode step spends its device time: torch.profiler over a few steps.

Why: on an H100 (2026-12-08, results/2026-12-08_h100.md §2) `pytorch_fast` (static cache,
compiled, CUDA graphs) took 8.6 ms per step at batch 1 but 19.1 ms at batch 64, drawing 580 W
against eager's 370 W, while the roofline's bytes per step grow only from 15.1 to 17.8 GB. Something
in the compiled batch-64 step does far more work than the model needs; this names the kernels.

One process builds the random-weight model (bf16) once, then for each configuration warms up
(compiles, records graphs) and profiles one batch of `--new-tokens` steps. Prints the top kernels
by device time and writes the whole table as JSON lines (one per config) to stdout's last lines.

    python3 benchmarks/torch_profile.py --batch-size 64 --configs compiled,compiled_lemloop
    python3 benchmarks/torch_profile.py --cpu --model tiny --batch-size 2 --configs static  # smoke
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from torch_gpu_paired import CONFIGS, build_backend  # noqa: E402


def profile(backend, batch, name: str, top: int) -> dict:
    import torch
    from torch.profiler import ProfilerActivity

    backend.cfg.update(CONFIGS[name])
    for _ in range(2):  # compile, record CUDA graphs, then once more warm
        backend.generate(batch, True)
    cuda = backend.device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with torch.profiler.profile(activities=activities) as prof:
        rec = backend.generate(batch, True)
    key = "self_device_time_total" if cuda else "self_cpu_time_total"
    rows = sorted(prof.key_averages(), key=lambda e: getattr(e, key, 0), reverse=True)
    table = [{"name": e.key, "calls": e.count, "self_us": getattr(e, key, 0)} for e in rows[:top]]
    steps = len(rec.token_times_s[0])
    return {"config": name, "batch_size": len(batch), "steps": steps,
            "step_ms_median": _median_gap_ms(rec.token_times_s[0]), "engine": backend.engine_info(),
            "device_time_key": key, "top": table}


def _median_gap_ms(times: list[float]):
    gaps = sorted(b - a for a, b in zip(times, times[1:]))
    return gaps[len(gaps) // 2] * 1e3 if gaps else None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--input-len", type=int, default=256)
    ap.add_argument("--new-tokens", type=int, default=16)
    ap.add_argument("--configs", default="compiled,compiled_lemloop")
    ap.add_argument("--model", default="llama3-8b-random")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--cpu", action="store_true")
    a = ap.parse_args()
    import numpy as np

    from lem.workload.requests import Request

    backend = build_backend(a.model, [] if a.cpu else [0])
    vocab = backend.model.config.vocab_size
    rng = np.random.default_rng(0)
    batch = [Request(i, rng.integers(10, vocab, a.input_len).tolist(), a.new_tokens)
             for i in range(a.batch_size)]
    for name in a.configs.split(","):
        out = profile(backend, batch, name, a.top)
        print(f"== {name} bs{a.batch_size}: step {out['step_ms_median']:.2f} ms (median gap)")
        for row in out["top"]:
            per_step_ms = row["self_us"] / 1e3 / out["steps"]
            print(f"  {per_step_ms:9.3f} ms/step  {row['calls']:6d}  {row['name'][:80]}")
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
