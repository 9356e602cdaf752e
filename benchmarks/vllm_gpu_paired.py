"""lem's vLLM backend vs a plain `LLM.generate` loop on one GPU: one engine, passes interleaved.

One process builds vLLM's `LLM` once with the engine arguments lem's backend uses
(llama3-8b-random, bf16, dummy weights, CUDA graphs on, prefix caching off). Passes over the same
requests then alternate between the plain loop (`llm.generate(prompts, params)` per batch) and
lem's `VLLMBackend.generate` (per-token streaming, as `python -m lem` runs it) on the same
LLMEngine, the order flipping each round. Each pass is timed with time.perf_counter() and metered
with NVML's energy counter read at its edges, and its output tokens are counted from token ids.
Adjacent passes share the GPU's state, so their ratio isolates lem's code path from engine and
thermal drift. Prints one JSON line per pass and a summary line.

    VLLM_USE_FLASHINFER_SAMPLER=0 python3 benchmarks/vllm_gpu_paired.py --batches 1:8,64:256 --rounds 5

`--batches` lists batch_size:num_requests pairs measured one after another on the same engine (one
engine start for all). `--model tiny --cpu` runs the same code on vLLM's CPU build (a smoke test).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))


def build(cache: str, model: str, gpus: list[int]):
    from omegaconf import OmegaConf
    from vllm import LLM

    from lem.backends.vllm.backend import VLLMBackend, engine_kwargs
    from lem.backends.vllm.setup import config_only_dir
    from lem.backends.vllm.state import EngineStateLog
    from lem.models.source import ModelSource

    arch = OmegaConf.to_container(OmegaConf.load(ROOT / f"conf/model/{model}.yaml")["config"])
    source = ModelSource(model, "random", config=arch)
    cfg = OmegaConf.load(ROOT / "conf/backend/vllm.yaml")
    cfg.pop("defaults")
    cfg.update(seed=0)
    precision = OmegaConf.create({"name": "bf16", "dtype": "bfloat16", "quantization": None})
    kwargs = engine_kwargs(cfg, source, precision, gpus, config_only_dir(source, cache))
    llm = LLM(**kwargs)
    lem = VLLMBackend(cfg, None)
    lem.engine, lem.state = llm.llm_engine, EngineStateLog(cfg.engine_state_period_s)
    return llm, lem, kwargs


def requests(n: int, input_len: int, output_len: int):
    import numpy as np

    from lem.workload.requests import Request

    rng = np.random.default_rng(0)
    return [Request(i, rng.integers(10, 128000, input_len).tolist(), output_len) for i in range(n)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batches", default="1:8,64:256", help="batch_size:num_requests,...")
    ap.add_argument("--input-len", type=int, default=256)
    ap.add_argument("--output-len", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--model", default="llama3-8b-random")
    ap.add_argument("--cpu", action="store_true", help="vLLM's CPU build: no NVML, time only")
    ap.add_argument("--cache", default=os.path.expanduser("~/.cache/lem"))
    a = ap.parse_args()
    llm, lem, kwargs = build(a.cache, a.model, [] if a.cpu else [0])
    energy_mj = nvml_counter() if not a.cpu else (lambda: 0)
    for spec in a.batches.split(","):
        batch_size, num_requests = (int(x) for x in spec.split(":"))
        rows = measure(llm, lem, energy_mj, a, batch_size, num_requests)
        print(json.dumps(summary(rows, a, batch_size, num_requests, kwargs)), flush=True)


def nvml_counter():
    import pynvml

    pynvml.nvmlInit()
    h = pynvml.nvmlDeviceGetHandleByIndex(0)
    return lambda: pynvml.nvmlDeviceGetTotalEnergyConsumption(h)


def measure(llm, lem, energy_mj, a, batch_size: int, num_requests: int) -> list[dict]:
    """Warm both paths, then `rounds` interleaved pairs (order flipping each round)."""
    from vllm import SamplingParams

    reqs = requests(num_requests, a.input_len, a.output_len)
    batches = [reqs[i:i + batch_size] for i in range(0, len(reqs), batch_size)]
    n = a.output_len
    sp = SamplingParams(max_tokens=n, min_tokens=n, ignore_eos=True, temperature=0.0, detokenize=False)

    def plain() -> int:
        tokens = 0
        for b in batches:
            outs = llm.generate([{"prompt_token_ids": r.prompt_ids} for r in b], sp, use_tqdm=False)
            tokens += sum(len(o.outputs[0].token_ids) for o in outs)
        return tokens

    def lem_pass() -> int:
        return sum(sum(lem.generate(b, True).output_tokens) for b in batches)

    modes = {"plain": plain, "lem": lem_pass}
    for fn in modes.values():
        fn()  # warmup, unmeasured
    rows = []
    for k in range(a.rounds):
        for mode in (["plain", "lem"] if k % 2 == 0 else ["lem", "plain"]):
            e0, t0 = energy_mj(), time.perf_counter()
            tokens = modes[mode]()
            t1, e1 = time.perf_counter(), energy_mj()
            row = {"round": k, "mode": mode, "batch_size": batch_size, "output_tokens": tokens,
                   "duration_s": t1 - t0, "energy_j": (e1 - e0) / 1e3,
                   "tokens_per_s": tokens / (t1 - t0), "j_per_output_token": (e1 - e0) / 1e3 / tokens}
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def summary(rows: list[dict], a, batch_size: int, num_requests: int, kwargs) -> dict:
    by = {m: [r for r in rows if r["mode"] == m] for m in ("plain", "lem")}
    tput = [lr["tokens_per_s"] / pr["tokens_per_s"] for pr, lr in zip(by["plain"], by["lem"])]
    energy = [lr["j_per_output_token"] / pr["j_per_output_token"] if pr["j_per_output_token"] else None
              for pr, lr in zip(by["plain"], by["lem"])]
    energy = [e for e in energy if e is not None] or [float("nan")]  # --cpu: no energy counter
    return {"summary": True, "batch_size": batch_size, "num_requests": num_requests,
            "input_len": a.input_len, "output_len": a.output_len, "rounds": a.rounds,
            "identical_token_counts": len({r["output_tokens"] for r in rows}) == 1,
            "plain_tokens_per_s_median": statistics.median(r["tokens_per_s"] for r in by["plain"]),
            "lem_tokens_per_s_median": statistics.median(r["tokens_per_s"] for r in by["lem"]),
            "plain_j_per_token_median": statistics.median(r["j_per_output_token"] for r in by["plain"]),
            "lem_j_per_token_median": statistics.median(r["j_per_output_token"] for r in by["lem"]),
            "throughput_ratio_paired_median": statistics.median(tput),
            "throughput_ratio_paired_min_max": [min(tput), max(tput)],
            "energy_ratio_paired_median": statistics.median(energy),
            "energy_ratio_paired_min_max": [min(energy), max(energy)],
            "engine_kwargs": {k: v for k, v in kwargs.items() if k != "model"}}


if __name__ == "__main__":
    main()
