"""Where the model-load and first-generate seconds go, for lem's random-weight 8B model on a GPU.

Times, in order: import torch; CUDA context (first allocation); import transformers; building the
model on the GPU without init; drawing the random weights; then generate calls with per-step
times: a 1-token generate, and three 128-token ones (the first generate of a process pays one-time
costs; whether they scale with the number of steps decides how lem's warmup should prime).

    python benchmarks/model_load_breakdown.py          (on a GPU machine; prints JSON lines)
"""

import json
import time

t_start = time.perf_counter()
import torch  # noqa: E402

marks = {"import_torch_s": time.perf_counter() - t_start}


def mark(name: str, t0: float) -> float:
    torch.cuda.synchronize()
    now = time.perf_counter()
    marks[name] = now - t0
    return now


def main() -> None:
    t = time.perf_counter()
    torch.empty(1, device="cuda")
    t = mark("cuda_context_s", t)
    from transformers import AutoConfig, AutoModelForCausalLM, TextStreamer  # noqa: F401

    from lem.backends.pytorch.backend import _fill_random, _no_init_weights
    t = mark("import_transformers_and_lem_s", t)
    config = AutoConfig.for_model(model_type="llama", hidden_size=4096, intermediate_size=14336,
                                  num_hidden_layers=32, num_attention_heads=32,
                                  num_key_value_heads=8, vocab_size=128256,
                                  max_position_embeddings=8192, rope_theta=500000.0)
    with torch.device("cuda"), _no_init_weights():
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16).eval()
    t = mark("from_config_on_gpu_s", t)
    _fill_random(model, 0.02, 0)
    mark("fill_random_s", t)
    print(json.dumps(marks), flush=True)
    ids = torch.randint(10, 128000, (1, 256), device="cuda")
    for label, n in (("first_1_token", 1), ("gen128_a", 128), ("gen128_b", 128), ("gen128_c", 128)):
        print(json.dumps({"generate": label, **step_times(model, ids, n)}), flush=True)


class _Steps:
    def __init__(self):
        self.t = []

    def put(self, value):
        self.t.append(time.perf_counter())

    def end(self):
        pass


def step_times(model, ids, n: int) -> dict:
    s = _Steps()
    t0 = time.perf_counter()
    with torch.inference_mode():
        model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n,
                       min_new_tokens=n, do_sample=False, pad_token_id=0, streamer=s)
    total = time.perf_counter() - t0
    steps = [b - a for a, b in zip(s.t[1:], s.t[2:])]  # put 0 is the prompt
    q = [round(x * 1e3, 1) for x in steps]
    return {"total_s": round(total, 3), "to_first_token_s": round(s.t[1] - t0, 3) if len(s.t) > 1 else None,
            "step_ms_first10": q[:10], "step_ms_last10": q[-10:],
            "step_ms_median": round(float(sorted(q)[len(q) // 2]), 1) if q else None}


if __name__ == "__main__":
    main()
