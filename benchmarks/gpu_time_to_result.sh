#!/usr/bin/env bash
# Issue 3's time-to-a-result check on one GPU: the model-load / first-generate breakdown, then
# RUNS full lem runs of the reference point, each timed from the command to its result.json.
# Runs on the GPU machine from the repo root, with Hydra on PYTHONPATH (../shared/gpu/README.md):
#   RUNS=2 OUT=/tmp/out bash benchmarks/gpu_time_to_result.sh
set -u
RUNS=${RUNS:-2}
mkdir -p "$OUT"
python3 benchmarks/model_load_breakdown.py | tee "$OUT/load_breakdown.jsonl"
for i in $(seq 1 "$RUNS"); do
  dir=$OUT/ttr_run$i
  t0=$(date +%s.%N)
  python3 -m lem model=llama3-8b-random gpus=[0] precision=bf16 dataset.input_len=256 \
    dataset.output_len=128 dataset.num_requests=2 batching.batch_size=1 progress=false \
    hydra.run.dir="$dir" > "$dir.log" 2>&1 || { echo "lem failed"; tail -30 "$dir.log"; }
  t1=$(date +%s.%N)
  python3 - "$dir/result.json" "$t0" "$t1" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print(json.dumps({"command_to_result_s": round(float(sys.argv[3]) - float(sys.argv[2]), 2),
                  "wall_s_in_run": r["wall_s"], "phase_s": r["phase_s"], "warmup": r["warmup"],
                  "cycle_tok_s": [c.get("output_tokens_per_s") for c in r["cycles"]],
                  "cycle_j_per_tok": [c.get("j_per_output_token") for c in r["cycles"]],
                  "valid": r["validity"].get("valid"), "statistics_j": r["statistics"].get("j_per_output_token")}))
PY
done
