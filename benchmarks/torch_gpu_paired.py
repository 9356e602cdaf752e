"""lem's PyTorch backend vs a plain `model.generate` loop on one GPU: one model, passes interleaved.

One process builds a random-weight Llama-3-8B-shaped model on the GPU (bf16) once. For each
generate configuration (eager dynamic cache; static cache eager; static cache with the decode step
compiled, mode reduce-overhead; the last two with lem's own decode loop, `backend.decode_loop=lem`)
passes over the same requests alternate between:
- plain:    `model.generate(...)` with nothing attached (no streamer, no stopping criterion);
- lem:      `PyTorchBackend.generate`, as `python -m lem` runs it (CUDA-event step clock; generate,
            or lem's loop for the *_lemloop configs);
- streamer: plain plus a streamer that timestamps each step (lem's clock before issue 19),
the order rotating each round. Each pass is timed with time.perf_counter() and metered with NVML's
energy counter read at its edges; output tokens are counted from the returned ids. Adjacent
passes share the GPU's state, so their ratios isolate the code path from thermal drift.
ITL: lem's and the streamer's per-token gaps (median over every gap of every pass); plain has no
per-token times, so its figure is the mean decode step, (pass time - TTFT) / (tokens - 1), with
lem's median TTFT: an estimate, labelled so in the output.

    python3 benchmarks/torch_gpu_paired.py --batch-size 1 --num-requests 2 --rounds 3 \
        --configs eager,static,compiled
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

CONFIGS = {  # name -> the PyTorch backend keys it sets ("plain" always runs model.generate)
    "eager": {"cache_implementation": None, "torch_compile": False, "decode_loop": "generate"},
    "static": {"cache_implementation": "static", "torch_compile": False, "decode_loop": "generate"},
    "compiled": {"cache_implementation": "static", "torch_compile": True, "decode_loop": "generate"},
    # lem's own greedy loop (backend.decode_loop=lem) against generate with the same cache/compile
    "static_lemloop": {"cache_implementation": "static", "torch_compile": False, "decode_loop": "lem"},
    "compiled_lemloop": {"cache_implementation": "static", "torch_compile": True, "decode_loop": "lem"},
}


def build_backend(model: str, gpus: list[int]):
    from omegaconf import OmegaConf

    from lem.backends.pytorch.backend import PyTorchBackend
    from lem.models.source import ModelSource

    arch = OmegaConf.to_container(OmegaConf.load(ROOT / f"conf/model/{model}.yaml")["config"])
    cfg = OmegaConf.load(ROOT / "conf/backend/pytorch.yaml")
    cfg.pop("defaults")
    backend = PyTorchBackend(cfg, None)
    precision = OmegaConf.create({"name": "bf16", "dtype": "bfloat16", "quantization": None})
    backend.load(ModelSource(model, "random", config=arch), precision, gpus)
    return backend


class StepStreamer:
    """lem's clock before issue 19: generate copies each step's tokens to the host for it."""

    def __init__(self):
        self.times_s, self._prompt = [], True

    def put(self, value):
        if not self._prompt:
            self.times_s.append(time.perf_counter())
        self._prompt = False

    def end(self):
        pass


def passes(backend, batches, n: int):
    import torch

    def plain_kwargs():
        kw = backend.generate_kwargs([n], True)  # the same generate options as lem's
        return kw

    def plain(streamer=None):
        tokens, gaps = 0, []
        for b in batches:
            ids = torch.tensor([r.prompt_ids for r in b], device=backend.device)
            s = StepStreamer() if streamer else None
            with torch.inference_mode():
                out = backend.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                                             streamer=s, **plain_kwargs())
            tokens += (out.shape[1] - ids.shape[1]) * ids.shape[0]
            if s:
                gaps += [b - a for a, b in zip(s.times_s, s.times_s[1:])]
        return tokens, gaps, []

    def lem():
        tokens, gaps, ttft = 0, [], []
        for b in batches:
            rec = backend.generate(b, True)
            tokens += sum(rec.output_tokens)
            t = rec.token_times_s[0]
            gaps += [y - x for x, y in zip(t, t[1:])]
            ttft.append(t[0] - rec.submit_s)
        return tokens, gaps, ttft

    return {"plain": plain, "lem": lem, "streamer": lambda: plain(streamer=True)}


def energy_mj(h):
    """NVML's energy counter (mJ); on a machine without a GPU (a smoke run) 0."""
    import pynvml

    return pynvml.nvmlDeviceGetTotalEnergyConsumption(h) if h is not None else 0


def run_config(name, backend, batches, a, h):
    backend.cfg.update(CONFIGS[name])
    modes = passes(backend, batches, a.output_len)
    t0 = time.perf_counter()
    for fn in modes.values():
        fn()  # warmup, unmeasured (compiles here)
    warmup_s = time.perf_counter() - t0
    order = list(modes)
    rows = []
    for k in range(a.rounds):
        for mode in order[k % 3:] + order[:k % 3]:
            e0, t0 = energy_mj(h), time.perf_counter()
            tokens, gaps, ttft = modes[mode]()
            t1, e1 = time.perf_counter(), energy_mj(h)
            row = {"config": name, "round": k, "mode": mode, "batch_size": a.batch_size,
                   "output_tokens": tokens, "duration_s": t1 - t0, "energy_j": (e1 - e0) / 1e3,
                   "tokens_per_s": tokens / (t1 - t0),
                   "j_per_output_token": (e1 - e0) / 1e3 / tokens if h is not None else None,
                   "itl_median_ms": statistics.median(gaps) * 1e3 if gaps else None,
                   "ttft_median_ms": statistics.median(ttft) * 1e3 if ttft else None}
            rows.append(row)
            print(json.dumps(row), flush=True)
    return summary(name, rows, a, warmup_s, backend.engine_info())


def summary(name, rows, a, warmup_s, engine) -> dict:
    by = {m: [r for r in rows if r["mode"] == m] for m in ("plain", "lem", "streamer")}

    def ratios(mode, key):
        return [o[key] / p[key] for p, o in zip(by["plain"], by[mode])]

    lem_ttft_s = statistics.median(r["ttft_median_ms"] for r in by["lem"]) / 1e3
    per_batch = a.batch_size * a.output_len
    plain_step_ms = [(r["duration_s"] / (r["output_tokens"] / per_batch) - lem_ttft_s)
                     / (a.output_len - 1) * 1e3 for r in by["plain"]]
    out = {"summary": True, "config": name, "batch_size": a.batch_size,
           "num_requests": a.num_requests, "input_len": a.input_len, "output_len": a.output_len,
           "rounds": a.rounds, "warmup_s": warmup_s, "engine": engine,
           "identical_token_counts": len({r["output_tokens"] for r in rows}) == 1,
           "plain_mean_step_ms_estimate": statistics.median(plain_step_ms)}
    for mode in ("plain", "lem", "streamer"):
        out[f"{mode}_tokens_per_s_median"] = statistics.median(r["tokens_per_s"] for r in by[mode])
        j = [r["j_per_output_token"] for r in by[mode] if r["j_per_output_token"] is not None]
        out[f"{mode}_j_per_token_median"] = statistics.median(j) if j else None
    for mode in ("lem", "streamer"):
        t = ratios(mode, "tokens_per_s")
        e = ratios(mode, "j_per_output_token") if by[mode][0]["j_per_output_token"] else [0.0]
        out[f"{mode}_throughput_ratio_paired"] = [statistics.median(t), min(t), max(t)]
        out[f"{mode}_energy_ratio_paired"] = [statistics.median(e), min(e), max(e)]
        out[f"{mode}_itl_median_ms"] = [r["itl_median_ms"] for r in by[mode]]
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch-size", type=int, required=True)
    ap.add_argument("--num-requests", type=int, required=True)
    ap.add_argument("--input-len", type=int, default=256)
    ap.add_argument("--output-len", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--configs", default="eager,static,compiled")
    ap.add_argument("--model", default="llama3-8b-random", help="a random-weight conf/model entry")
    ap.add_argument("--cpu", action="store_true", help="smoke run on the CPU, no energy")
    a = ap.parse_args()
    import numpy as np
    import pynvml

    from lem.workload.requests import Request

    backend = build_backend(a.model, [] if a.cpu else [0])
    rng = np.random.default_rng(0)
    vocab = backend.model.config.vocab_size
    reqs = [Request(i, rng.integers(10, min(128000, vocab), a.input_len).tolist(), a.output_len)
            for i in range(a.num_requests)]
    batches = [reqs[i:i + a.batch_size] for i in range(0, len(reqs), a.batch_size)]
    h = None
    if not a.cpu:
        pynvml.nvmlInit()
        h = pynvml.nvmlDeviceGetHandleByIndex(0)
    for name in a.configs.split(","):
        print(json.dumps(run_config(name, backend, batches, a, h)), flush=True)


if __name__ == "__main__":
    main()
