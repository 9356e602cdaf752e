"""Overhead of lem's meter on the workload it measures: the same generate with the meter fully
on (sampler process at energy.sample_period_s + counter reads at the window edges) vs off,
interleaved, in one process with one loaded model, so only the meter differs.

    python benchmarks/meter_overhead.py --reps 5 --batch-sizes 1 16   (on a GPU machine)
Prints one JSON line per measurement and a summary: median slowdown and the spread.
"""

import argparse
import json
import statistics
import time

import torch
from transformers import AutoConfig, AutoModelForCausalLM

from lem.energy import NvmlMeter
from lem.sampler import Sampler

LLAMA3_8B = dict(model_type="llama", hidden_size=4096, intermediate_size=14336,
                 num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
                 vocab_size=128256, max_position_embeddings=8192, rope_theta=500000.0,
                 tie_word_embeddings=False)


def generate_tok_s(model, bs: int, meter_on: bool, period_s: float) -> float:
    ids = torch.randint(10, 128000, (bs, 256), device="cuda")
    sampler = meter = None
    if meter_on:
        sampler, meter = Sampler([0], period_s), NvmlMeter([0])
        sampler.start()
        meter.start()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=128, min_new_tokens=128,
                   do_sample=False, pad_token_id=0)
    torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    if meter_on:
        meter.stop()
        sampler.stop()
    return bs * 128 / dt


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 16])
    ap.add_argument("--period-s", type=float, default=0.1)
    a = ap.parse_args()
    with torch.device("cuda"):
        model = AutoModelForCausalLM.from_config(AutoConfig.for_model(**LLAMA3_8B),
                                                 dtype=torch.bfloat16).eval()
    with torch.inference_mode():
        for bs in a.batch_sizes:
            generate_tok_s(model, bs, False, a.period_s)  # warmup
            tok_s = {True: [], False: []}
            for rep in range(a.reps):
                for on in ((True, False) if rep % 2 == 0 else (False, True)):
                    tok_s[on].append(generate_tok_s(model, bs, on, a.period_s))
                    print(json.dumps({"batch_size": bs, "rep": rep, "meter_on": on,
                                      "output_tokens_per_s": tok_s[on][-1]}), flush=True)
            med_on, med_off = statistics.median(tok_s[True]), statistics.median(tok_s[False])
            print(json.dumps({"summary": True, "batch_size": bs, "reps": a.reps,
                              "median_tok_s_on": med_on, "median_tok_s_off": med_off,
                              "median_slowdown": 1 - med_on / med_off,
                              "range_on": [min(tok_s[True]), max(tok_s[True])],
                              "range_off": [min(tok_s[False]), max(tok_s[False])]}), flush=True)


if __name__ == "__main__":
    main()
