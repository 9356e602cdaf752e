#!/usr/bin/env bash
# lem vs plain transformers on one GPU, interleaved repetitions (issue 2's GPU check).
# Runs on the GPU machine from the repo root, with Hydra on PYTHONPATH (see ../shared/gpu/README.md):
#   REPS=3 OUT=/tmp/out bash benchmarks/gpu_foundation.sh
# Writes $OUT/foundation.jsonl: one line per run (tool, batch size, tokens/s, J per output token).
set -u
REPS=${REPS:-3}
REP_START=${REP_START:-1}
log=$OUT/foundation.jsonl
mkdir -p "$OUT/lem_runs"
for rep in $(seq "$REP_START" "$REPS"); do
  for bs in 1 16 64; do
    case $bs in 1) n=2 ;; 16) n=32 ;; 64) n=128 ;; esac
    # alternate which tool goes first, so neither always meets the warmer GPU
    if [ $((rep % 2)) -eq 1 ]; then order="lem plain"; else order="plain lem"; fi
    for tool in $order; do
      if [ "$tool" = plain ]; then
        python3 benchmarks/plain_generate.py --batch-size $bs --num-requests $n \
          | sed "s/^{/{\"rep\": $rep, /" >> "$log"
      else
        dir=$OUT/lem_runs/bs${bs}_rep${rep}
        python3 -m lem model=llama3-8b-random gpus=[0] precision=bf16 dataset.input_len=256 \
          dataset.output_len=128 dataset.num_requests=$n batching.batch_size=$bs progress=false \
          hydra.run.dir="$dir" > "$dir.log" 2>&1 || { echo "lem failed: $dir.log"; tail -20 "$dir.log"; }
        python3 - "$dir/result.json" "$rep" "$bs" >> "$log" <<'PY'
import json, sys
r = json.load(open(sys.argv[1])); s = r["summary"]
print(json.dumps({"rep": int(sys.argv[2]), "tool": "lem", "batch_size": int(sys.argv[3]),
                  "num_requests": s["num_requests"], "output_tokens": s["output_tokens"],
                  "duration_s": s["duration_s"], "output_tokens_per_s": s["output_tokens_per_s"],
                  "energy_j": s["energy_j"], "j_per_output_token": s["j_per_output_token"],
                  "status": r["status"], "wall_s": r["wall_s"]}))
PY
      fi
      tail -1 "$log"
    done
  done
done
