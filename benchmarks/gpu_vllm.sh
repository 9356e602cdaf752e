#!/usr/bin/env bash
# vLLM on the GPU through lem (issue 16), one stage per device call (each under 10 minutes).
# On the GPU machine, from the repo root, once the kit is installed in /tmp/vsite and Hydra's
# wheels in /tmp/site (../shared/gpu/vllm/README.md, ../shared/gpu/README.md):
#   OUT=$OUT bash benchmarks/gpu_vllm.sh test|bs|card|serve|torch|paired|torchpair|torchprof|torchtest|bnb
# (torch, torchpair, torchprof, torchtest and bnb need no vLLM: the PyTorch backend, issue 19; bnb needs the bitsandbytes
# wheel installed into /tmp/site)
# No VLLM_* variable is set for lem's runs: lem sets what vLLM needs. Every raw file of a stage (each
# run's result.json, timeseries.parquet, lem.log and console) is packed into $OUT/<stage>.tgz, since
# the device tool brings back at most 8 files per call; the console lines go to stdout.
set -u
# Stage lists (BS, TORCH, TPAIR, ...) hold specs separated by ';', each spec a few space-separated fields.
export PYTHONPATH=/tmp/vsite:/tmp/site:src HF_HUB_OFFLINE=1
RUNS=/tmp/lem-runs
STAGE=$1 STAGE_OUT=$RUNS/out-$1
mkdir -p "$OUT" "$RUNS" "$STAGE_OUT"
pack() { tar czf "$OUT/$STAGE.tgz" -C "$STAGE_OUT" . 2>/dev/null; }  # after every run: a timeout keeps what ran
trap pack EXIT
trap 'exit 143' TERM
W="dataset.input_len=256 dataset.output_len=128 progress=false"

lem_run() {  # lem_run <dir> <overrides...>: one run; its raw files go to $STAGE_OUT, packed into $OUT
  local dir=$1; shift
  local t0=$SECONDS
  mkdir -p "$RUNS/$(dirname "$dir")"
  python3 -m lem "$@" hydra.run.dir="$RUNS/$dir" > "$RUNS/$dir.log" 2>&1
  local rc=$?
  mkdir -p "$STAGE_OUT/$dir"
  cp "$RUNS/$dir"/result.json "$RUNS/$dir"/timeseries.parquet "$RUNS/$dir"/lem.log "$STAGE_OUT/$dir/" 2>/dev/null
  cp "$RUNS/$dir.log" "$STAGE_OUT/$dir/console.txt"; pack
  echo "== $dir rc=$rc $((SECONDS - t0)) s"; tail -n 18 "$RUNS/$dir.log" | grep -E "status|run |throughput|energy|ITL|TTFT|MBU|idle" 
}

case $1 in
test)
  python3 -m pytest -m gpu -q -x tests/test_vllm_gpu.py tests/test_doctor_gpu.py -k "vllm or foreign or own" \
    2>&1 | tail -n 30 | tee "$OUT/pytest_gpu.txt" ;;
torchprof)  # which kernels a compiled decode step spends its time in (the batch-64 puzzle)
  python3 benchmarks/torch_profile.py --batch-size "${PBS:-64}" --configs "${CONFIGS:-compiled,compiled_lemloop}" \
    2>"$RUNS/tprof.err" | tee -a "$OUT/torchprof.txt" | grep -v "^{"; tail -n 3 "$RUNS/tprof.err" ;;
torchtest)  # pytest -m gpu for the PyTorch backend (step clock, compiled decode, lem's decode loop)
  python3 -m pytest -m gpu -q tests/test_pytorch_gpu.py 2>&1 | tail -n 30 | tee "$OUT/pytest_torch_gpu.txt" ;;
paired)  # one engine, lem vs plain LLM.generate interleaved, every batch spec in turn
  VLLM_USE_FLASHINFER_SAMPLER=0 VLLM_WORKER_MULTIPROC_METHOD=spawn python3 benchmarks/vllm_gpu_paired.py \
    --batches "${PAIRED:-1:8,64:256}" --rounds "${ROUNDS:-4}" 2>"$RUNS/paired.err" | grep "^{" \
    | tee -a "$OUT/paired.jsonl" | grep summary | cut -c1-700
  tail -n 5 "$RUNS/paired.err" ;;
bs)  # offline static batches; each cycle a few seconds of work
  IFS=';' read -ra SPECS <<< "${BS:-1 6;8 48;64 256;256 512}"; for spec in "${SPECS[@]}"; do
    set -- $spec
    lem_run "bs/bs$1" backend=vllm model=llama3-8b-random precision=bf16 batching.batch_size="$1" \
      dataset.num_requests="$2" $W
  done ;;
card)  # the design card's command, as typed, then the aggregation
  t0=$SECONDS
  python3 -m lem backend=vllm model=llama3-8b-random -m precision=fp16,bf16,fp8,int8 > "$RUNS/card.log" 2>&1
  echo "card rc=$? $((SECONDS - t0)) s"; tail -n 25 "$RUNS/card.log" | tee "$STAGE_OUT/card_console.txt"
  dir=$(ls -d multirun/*/* | tail -n 1)
  python3 -m lem.aggregate "$dir" 2>&1 | tail -n 30 | tee "$STAGE_OUT/card_aggregate.txt"
  cp -r "$dir" "$STAGE_OUT/card"; ls "$dir" ;;
serve)  # serving-style load: Poisson arrivals at three rates
  for rate in ${RATES:-4 16 64}; do
    lem_run "serve/poisson_$rate" backend=vllm model=llama3-8b-random precision=bf16 batching=continuous \
      batching.arrival=poisson batching.rate_rps="$rate" dataset.num_requests="${SERVE_N:-128}" $W
  done ;;
torch)  # lem's PyTorch backend at the same workload, for vLLM vs PyTorch (eager and pytorch_fast)
  # a spec's fields after the third are extra overrides, named into the run's dir (tag: 4th field)
  IFS=';' read -ra SPECS <<< "${TORCH:-pytorch 1 2;pytorch 64 64;pytorch_fast 1 4;pytorch_fast 64 64}"; for spec in "${SPECS[@]}"; do
    set -- $spec
    tag=$(echo "${4:-}" | tr -c 'a-zA-Z0-9_\n-' '_')
    lem_run "torch/$1_bs$2${tag:+_$tag}" backend="$1" model=llama3-8b-random precision=bf16 batching.batch_size="$2" \
      dataset.num_requests="$3" $W "${@:4}"
  done ;;
torchpair)  # lem's PyTorch backend vs plain generate, interleaved in one process (issue 19)
  IFS=';' read -ra SPECS <<< "${TPAIR:-1 2;64 64}"; for spec in "${SPECS[@]}"; do
    set -- $spec
    python3 benchmarks/torch_gpu_paired.py --batch-size "$1" --num-requests "$2" \
      --rounds "${ROUNDS:-3}" --configs "${CONFIGS:-eager,static,compiled}" 2>"$RUNS/tpair_bs$1.err" \
      | tee -a "$OUT/torchpair.jsonl" | grep summary | cut -c1-600
    tail -n 3 "$RUNS/tpair_bs$1.err"
  done ;;
bnb)  # bitsandbytes int8 / int4 against bf16 on the PyTorch backend (issue 19)
  for p in ${PRECISIONS:-bf16 int8 int4}; do
    lem_run "bnb/$p" backend=pytorch model=llama3-8b-random precision="$p" batching.batch_size=1 \
      dataset.num_requests=2 $W
  done ;;
esac
