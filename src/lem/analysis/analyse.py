"""After the cycles: pooled summary, statistics across cycles, attribution, roofline, memory,
validity, and the reason for every null. Reads what the run recorded; measures nothing."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from lem.analysis import validity as checks
from lem.analysis.attribution import Attribution
from lem.analysis.co2 import co2_estimate
from lem.analysis.metrics import RequestTiming
from lem.analysis.stats import summarise_cycles
from lem.measure.cycles import CYCLE_METRICS, pooled
from lem.result.schema import Result, Summary


def analyse(result: Result, timings: list[RequestTiming], cfg, inst, model_info: dict,
            gpu_memory: list) -> None:
    load = inst.recorder.get("model_load")
    b = result.baseline
    result.summary = Summary(
        **pooled(result.cycles, timings),
        model_load_s=load.duration_s, model_load_energy_j=load.energy_j,
        idle_power_w=b.idle_power_w, idle_power_std_w=b.idle_power_std_w,
        device_idle_power_w=b.device_idle_power_w)
    cycle_windows = [w for w in inst.recorder.windows if w.name.startswith("cycle_")]
    _energy_per_gpu(result, cycle_windows)
    _cpu(result, cycle_windows)
    _co2(result, cfg)
    result.statistics = summarise_cycles(result.cycles, CYCLE_METRICS)
    result.attribution = _pooled_attribution(result)
    result.roofline = _roofline(result, cfg, model_info)
    result.summary.mbu, result.summary.mfu = result.roofline.mbu, result.roofline.mfu
    result.memory.gpus = gpu_memory
    _memory_used(result, inst, cycle_windows)
    result.requests = [request_dict(t) for t in timings]
    result.validity = _validity(result, cfg, cycle_windows, inst)
    result.null_reasons.update(_null_reasons(result, inst.recorder.windows))


def _energy_per_gpu(result: Result, windows) -> None:
    if result.summary.energy_j is None:
        return
    per: dict[str, float] = {}
    for w in windows:
        for g in w.gpus:
            per[str(g.index)] = per.get(str(g.index), 0.0) + (g.energy_j or 0.0)
    result.summary.energy_per_gpu_j = per


def _cpu(result: Result, windows) -> None:
    readings = [w.cpu for w in windows if w.cpu is not None]
    if readings:
        result.summary.cpu_energy_method = readings[0].method
        co2 = [r.co2_kg for r in readings]
        result.summary.co2_kg = None if None in co2 else float(sum(co2))


def _co2(result: Result, cfg) -> None:
    """CO2 of the measured energy (GPU counters + RAPL CPU energy) x CodeCarbon's grid intensity:
    always an estimate; the intensity, its source and the method go into the result."""
    s = result.summary
    cpu_j = s.cpu_energy_j if s.cpu_energy_method == "rapl" else None  # estimates are not added
    energy_j = None if s.energy_j is None else s.energy_j + (cpu_j or 0.0)
    est = co2_estimate(energy_j, cfg.energy.country_iso_code)
    result.environment["co2_estimate"] = asdict(est)
    if est.co2_kg is not None:
        s.co2_kg = est.co2_kg
    elif s.co2_kg is None:
        result.null_reasons["summary.co2_kg"] = est.reason


def _pooled_attribution(result: Result) -> Attribution:
    parts = [c["attribution"] for c in result.cycles]
    s = result.summary
    if s.prefill_energy_j is None or s.decode_energy_j is None:
        return Attribution(reason=next((p["reason"] for p in parts if p["reason"]), "not computed"))
    other = s.energy_j - s.prefill_energy_j - s.decode_energy_j if s.energy_j is not None else None
    return Attribution(s.prefill_energy_j, s.decode_energy_j, other,
                       sum(p["prefill_s"] for p in parts), sum(p["decode_s"] for p in parts))


def _roofline(result: Result, cfg, model_info: dict):
    """Decode roofline from the median inter-token gap (one decode step of the whole batch)."""
    from lem.analysis.roofline import decode_roofline

    if cfg.batching.strategy == "continuous":
        return _serving_roofline(result, cfg, model_info)
    s = result.summary
    gpus = result.environment.get("gpus") or []
    n = max(1, s.num_requests or 0)
    mean_context = ((s.input_tokens or 0) + (s.output_tokens or 0) / 2) / n
    # an engine that runs at most N sequences per step decodes a larger batch N at a time
    batch = cfg.batching.batch_size
    limit = min(batch, (result.engine or {}).get("max_seqs_per_step") or batch, _peak_running(result) or batch)
    out = decode_roofline(
        gpu_name=gpus[0]["name"] if gpus else None, dtype=cfg.precision.dtype,
        param_bytes=model_info["param_bytes"], num_params=model_info["num_params"],
        arch=model_info["arch"], batch_size=limit,
        mean_context_len=mean_context, decode_step_s=s.itl_s.p50, num_gpus=_roofline_gpus(result))
    if limit < batch:
        out.method += (f" The engine ran at most {limit} sequences per step (its per-step limit, "
                       f"or its own running count), so the roofline's batch is {limit}, not "
                       f"batching.batch_size={batch}.")
    return out


def _peak_running(result: Result):
    """The most requests the engine's own count had running at once, over the cycles; None
    where any cycle lacks it."""
    peaks = [(c.get("concurrency") or {}).get("peak_running") for c in result.cycles]
    return max(peaks) if peaks and None not in peaks else None


SERVING_ESTIMATE = ("estimate (continuous batching): the batch changes every engine step, so the "
                    "batch is the time-weighted mean number of running requests from vLLM's "
                    "scheduler stats (serving.engine_state, busy time only) and the decode step time "
                    "is that batch x busy time / output tokens (one token per running request per "
                    "step; prefill steps count as decode steps). Then: ")


def _serving_roofline(result: Result, cfg, model_info: dict):
    """MBU/MFU under continuous batching, labelled an estimate: mean running batch from the
    engine's own state over time, step time from the tokens it produced while busy."""
    from lem.analysis.roofline import METHOD, Roofline, decode_roofline

    busy_s, weighted = 0.0, 0.0
    for c in result.cycles:
        rows = ((c.get("serving") or {}).get("engine_state") or {}).get("rows") or []
        for (t0, running, *_), (t1, *_) in zip(rows, rows[1:]):
            if running > 0:
                busy_s += t1 - t0
                weighted += running * (t1 - t0)
    s = result.summary
    if busy_s <= 0 or not s.output_tokens:
        return Roofline(method=METHOD, reason="continuous batching: no engine state with running requests "
                        "(serving.engine_state), so no batch size for the decode roofline")
    batch = weighted / busy_s
    gpus = result.environment.get("gpus") or []
    n = max(1, s.num_requests or 0)
    out = decode_roofline(
        gpu_name=gpus[0]["name"] if gpus else None, dtype=cfg.precision.dtype,
        param_bytes=model_info["param_bytes"], num_params=model_info["num_params"],
        arch=model_info["arch"], batch_size=batch,
        mean_context_len=((s.input_tokens or 0) + (s.output_tokens or 0) / 2) / n,
        decode_step_s=batch * busy_s / s.output_tokens, num_gpus=_roofline_gpus(result))
    out.method = SERVING_ESTIMATE + out.method + f" Mean running batch: {batch:.1f} over {busy_s:.1f} s."
    return out


def _worker_pids(result: Result) -> set[int]:
    """backend.parallel's worker processes: lem's own, not foreign, on the GPUs."""
    return {w.pid for w in result.parallel.workers} if result.parallel else set()


def _roofline_gpus(result: Result) -> int:
    """GPUs that share one decode step: under tensor parallelism all of them at once; a
    device_map split takes turns layer by layer, and data parallel runs whole steps per GPU, so
    one GPU's peak applies there."""
    p = result.parallel
    return p.size if p and p.mode == "tensor" else 1


def _memory_used(result: Result, inst, windows) -> None:
    """NVML memory used: the highest sample inside the measured cycles, per GPU."""
    rows = inst.rows()
    used: dict[str, float] = {}
    for w in windows:
        for r in rows:
            if w.start_ns <= r.t_ns <= w.end_ns:
                used[str(r.gpu)] = max(used.get(str(r.gpu), 0.0), r.memory_used_mb)
    result.memory.gpu_used_mb_max = used or None
    if not used:
        result.null_reasons["memory.gpu_used_mb_max"] = "no GPU samples (CPU run or no sampler)"


def _validity(result: Result, cfg, windows, inst):
    from lem.machine.devices import foreign_gpu_processes

    forced = cfg.dataset.force_output_len
    return checks.verdict([
        checks.window_length(windows),
        checks.counter_vs_integral(windows),
        checks.coverage(windows),
        checks.throttling(windows),
        checks.temperature(windows, cfg.measurement.max_temperature_c),
        checks.foreign_processes(foreign_gpu_processes(inst.gpus, _worker_pids(result))
                                 if inst.sampler else None),
        checks.tokens(result.requests, forced),
        checks.batch_runs_whole(cfg.batching, result.engine,
                                [c.get("concurrency") or {} for c in result.cycles]),
        checks.idle_gpu_in_group(windows, getattr(result.baseline, "idle_power_per_gpu_w", None)),
    ])


def _null_reasons(result: Result, windows) -> dict[str, str]:
    s, reasons = result.summary, {}
    energy_reason = next((w.reason for w in windows if w.reason), None) or "energy not measured"
    for key in ("energy_j", "energy_per_gpu_j", "j_per_output_token", "j_per_request",
                "output_tokens_per_j", "model_load_energy_j"):
        if getattr(s, key) is None:
            reasons[f"summary.{key}"] = energy_reason
    if s.idle_power_w is None:
        reasons["summary.idle_power_w"] = result.baseline.reason or energy_reason
    for key in ("dynamic_energy_j", "dynamic_j_per_output_token"):
        if getattr(s, key) is None:
            reasons[f"summary.{key}"] = "needs both GPU energy and the idle baseline"
    if s.device_idle_power_w is None:
        reasons["summary.device_idle_power_w"] = "no GPU samples before the CUDA context existed"
    if s.prefill_energy_j is None:
        reasons["summary.prefill_energy_j"] = result.attribution.reason or "not computed"
        reasons["summary.decode_energy_j"] = reasons["summary.prefill_energy_j"]
    reasons.update(_cpu_reasons(result, windows))
    if s.mbu is None or s.mfu is None:
        reasons["summary.mbu"] = reasons["summary.mfu"] = result.roofline.reason or "not computed"
    if s.itl_s.n == 0:
        reasons["summary.itl_s"] = ("no token gaps: fewer than two output tokens per request, or "
                                    "no per-token timestamps (backend.per_token_timestamps=false)")
    return reasons


def _cpu_reasons(result: Result, windows) -> dict[str, str]:
    s = result.summary
    cpu = next((w.cpu for w in windows if w.cpu is not None), None)
    out = {}
    if s.cpu_energy_j is None:
        out["summary.cpu_energy_j"] = cpu.reason if cpu else "energy.cpu=none or energy=none"
    return out


def request_dict(t: RequestTiming) -> dict[str, Any]:
    return {"cycle": t.cycle, "index": t.index, "batch": t.batch, "input_tokens": t.input_tokens,
            "requested_output_tokens": t.requested_output_tokens,
            "output_tokens": t.output_tokens, "submit_s": t.submit_s, "ttft_s": t.ttft_s,
            "tpot_s": t.tpot_s, "e2e_s": t.e2e_s,
            "token_times_s": [round(x, 6) for x in t.token_times_s],
            **({"worker": t.worker} if t.worker is not None else {})}

