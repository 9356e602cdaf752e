#!/usr/bin/env bash
# Issue 7's two-GPU validation (nvidia-h200-x2), most valuable first, each result kept under $OUT:
#   1. data parallel, 8B-random, 2 GPUs  2. tensor parallel, qwen2.5-0.5b-random  3. the gpu-marked
#   two-GPU tests  4. tensor parallel, 8B-random (writes a 16 GB random checkpoint once; last, as
#   the slowest)
# Each step has its own time limit so one hang cannot eat the others' device time.
# Runs from the repo root with Hydra on PYTHONPATH (../shared/gpu/README.md): OUT=/tmp/out bash benchmarks/gpu_parallel.sh
set -u
mkdir -p "$OUT"
summary() {
  python3 - "$1/result.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1])); s = r["summary"]
print(json.dumps({"status": r["status"], "parallel": {k: r["parallel"][k] for k in ("mode", "size")},
                  "local_param_elements_per_worker": r["parallel"].get("local_param_elements_per_worker"),
                  "output_tokens_per_s": s["output_tokens_per_s"], "j_per_output_token": s["j_per_output_token"],
                  "energy_per_gpu_j": s["energy_per_gpu_j"], "idle_power_per_gpu_w": r["baseline"]["idle_power_per_gpu_w"],
                  # tensor parallel: every rank serves every batch, so requests name no worker
                  "requests_per_worker": {w: sum(q.get("worker") == w for q in r["requests"]) for w in (0, 1)}
                  if r["parallel"]["mode"] == "data" else None,
                  "valid": r["validity"]["valid"], "checks": {c["name"]: c["verdict"] for c in r["validity"]["checks"]},
                  "idle_gpu_detail": next(c["detail"] for c in r["validity"]["checks"] if c["name"] == "idle_gpu_in_group"),
                  "memory": r["memory"]["gpus"], "phase_s": r["phase_s"], "wall_s": r["wall_s"]}))
PY
}
run() {  # name, overrides...
  local name=$1; shift
  timeout "${STEP_S:-200}" python3 -m lem gpus=[0,1] precision=bf16 progress=false hydra.run.dir="$OUT/$name" "$@" > "$OUT/$name.log" 2>&1 \
    || { echo "$name failed"; tail -30 "$OUT/$name.log"; }
  summary "$OUT/$name" | tee -a "$OUT/parallel.jsonl"
}
run dp2_llama3-8b-random model=llama3-8b-random backend.parallel=data dataset.input_len=256 \
  dataset.output_len=128 dataset.num_requests=64 batching.batch_size=16
run tp2_qwen0.5b-random model=qwen2.5-0.5b-random backend.parallel=tensor dataset.input_len=256 \
  dataset.output_len=128 dataset.num_requests=32 batching.batch_size=16
timeout 150 python3 -m pytest -m gpu tests/test_gpu.py -k two_gpu -q -p no:cacheprovider 2>&1 | tail -15
STEP_S=260 run tp2_llama3-8b-random model=llama3-8b-random backend.parallel=tensor dataset.input_len=256 \
  dataset.output_len=128 dataset.num_requests=64 batching.batch_size=16
