"""The baseline lem is compared with: plain transformers `generate`, no framework around it.

Same work as `python -m lem model=llama3-8b-random gpus=[0] precision=bf16
dataset.input_len=256 dataset.output_len=128 batching.batch_size=B`: a random-weight
Llama-3-8B-shaped model built on the GPU, bf16, one unmeasured warmup batch, then every batch
timed with the NVML energy counter read at the window's edges. Prints one JSON line.

    python benchmarks/plain_generate.py --batch-size 16 --num-requests 32
"""

import argparse
import json
import time

import pynvml
import torch
from transformers import AutoConfig, AutoModelForCausalLM

LLAMA3_8B = dict(model_type="llama", hidden_size=4096, intermediate_size=14336,
                 num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
                 vocab_size=128256, max_position_embeddings=8192, rope_theta=500000.0,
                 tie_word_embeddings=False)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch-size", type=int, required=True)
    ap.add_argument("--num-requests", type=int, required=True)
    ap.add_argument("--input-len", type=int, default=256)
    ap.add_argument("--output-len", type=int, default=128)
    a = ap.parse_args()
    torch.manual_seed(0)
    with torch.device("cuda:0"):
        model = AutoModelForCausalLM.from_config(AutoConfig.for_model(**LLAMA3_8B),
                                                 dtype=torch.bfloat16).eval()
    g = torch.Generator().manual_seed(0)
    prompts = torch.randint(10, 128000, (a.num_requests, a.input_len), generator=g)
    batches = [prompts[i:i + a.batch_size].cuda() for i in range(0, a.num_requests, a.batch_size)]
    kw = dict(max_new_tokens=a.output_len, min_new_tokens=a.output_len, do_sample=False,
              pad_token_id=0)
    with torch.inference_mode():
        model.generate(batches[0], attention_mask=torch.ones_like(batches[0]), **kw)  # warmup
        pynvml.nvmlInit()
        h = pynvml.nvmlDeviceGetHandleByIndex(0)
        torch.cuda.synchronize()
        e0, t0 = pynvml.nvmlDeviceGetTotalEnergyConsumption(h), time.perf_counter()
        out_tokens = 0
        for b in batches:
            out = model.generate(b, attention_mask=torch.ones_like(b), **kw)
            out_tokens += (out.shape[1] - b.shape[1]) * b.shape[0]
        torch.cuda.synchronize()
        dt, e1 = time.perf_counter() - t0, pynvml.nvmlDeviceGetTotalEnergyConsumption(h)
    energy_j = (e1 - e0) / 1000
    print(json.dumps({"tool": "plain", "batch_size": a.batch_size, "num_requests": a.num_requests,
                      "output_tokens": out_tokens, "duration_s": dt,
                      "output_tokens_per_s": out_tokens / dt, "energy_j": energy_j,
                      "j_per_output_token": energy_j / out_tokens}))


if __name__ == "__main__":
    main()
