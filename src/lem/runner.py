"""One measured run. The order of phases lives here and only here:

validate -> pin devices -> build workload -> load model (own energy window) -> warmup
-> measured window -> result.json (also when the run fails or is interrupted).
"""

from __future__ import annotations

import logging
import resource
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from lem.config import config_hash
from lem.energy import EnergyMeter, make_meter
from lem.host import probe_host
from lem.metrics import RequestTiming, summarise
from lem.result import ErrorInfo, Result, Summary, write_result
from lem.validate import resolve_gpus, validate

log = logging.getLogger(__name__)


def run(cfg: DictConfig, overrides: list[str], out_dir: Path) -> Result:
    """Measure `cfg`; result.json is written to `out_dir` whatever happens."""
    result = Result(started_at=_now(), overrides=list(overrides))
    t0 = time.perf_counter()
    try:
        _measure(cfg, result)
        result.status = "ok"
    except KeyboardInterrupt as exc:
        _record_error(result, "interrupted", exc)
        raise
    except BaseException as exc:
        _record_error(result, "failed", exc)
        raise
    finally:
        result.finished_at = _now()
        result.wall_s = time.perf_counter() - t0
        result.memory.peak_host_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        write_result(result, out_dir)
    return result


def _measure(cfg: DictConfig, result: Result) -> None:
    host = probe_host()
    cfg.gpus = resolve_gpus(cfg.gpus, host)
    result.config = OmegaConf.to_container(cfg, resolve=True)
    result.config_hash = config_hash(result.config)
    validate(cfg, host)

    from lem import devices

    devices.pin_devices(cfg.gpus)  # before torch starts CUDA
    from lem.backends import make_backend
    from lem.environment import snapshot
    from lem.models.source import resolve_model
    from lem.validate import model_max_len
    from lem.workload import build_requests, check_lengths, make_batches

    source = resolve_model(cfg.model, cfg.cache_dir)
    tokenizer = source.tokenizer(cfg.backend.get("trust_remote_code", False))
    requests = build_requests(cfg.dataset, source.vocab_size(), tokenizer)
    check_lengths(requests, model_max_len(cfg.model) or source.max_len(), cfg.model.name)
    batches = make_batches(requests, cfg.batching.strategy, cfg.batching.batch_size)
    devices.check_cuda(cfg.gpus)
    meter = make_meter(cfg.energy.meter, list(cfg.gpus), host.nvml_error)
    backend = make_backend(cfg.backend, cfg)
    try:
        _load(backend, meter, source, cfg, result)
        result.environment = snapshot(list(cfg.gpus))
        _warmup(backend, batches, cfg, result)
        _measured_window(backend, meter, batches, cfg, result)
    finally:
        backend.close()


def _load(backend, meter: EnergyMeter, source, cfg: DictConfig, result: Result) -> None:
    log.info("loading model=%s (%s) on gpus=%s", source.name, source.kind, list(cfg.gpus))
    meter.start()
    result.precision = backend.load(source, cfg.precision, list(cfg.gpus))
    reading = meter.stop()
    result.energy.model_load = reading
    result.summary.model_load_s = reading.duration_s
    result.summary.model_load_energy_j = reading.total_j
    if reading.total_j is None:
        result.null_reasons["summary.model_load_energy_j"] = reading.reason or "not measured"


def _warmup(backend, batches, cfg: DictConfig, result: Result) -> None:
    """Unmeasured batches first: allocator, kernels and compilation settle outside the window."""
    n = min(cfg.measurement.warmup_batches, len(batches))
    t0 = time.perf_counter()
    for batch in batches[:n]:
        backend.generate(batch, cfg.dataset.force_output_len)
    result.warmup = {"batches": n, "duration_s": time.perf_counter() - t0,
                     "method": "first batches of the workload, run once, not measured"}


def _measured_window(backend, meter: EnergyMeter, batches, cfg: DictConfig, result: Result):
    from tqdm import tqdm

    from lem.devices import MemoryUsedProbe

    if cfg.gpus:
        backend.reset_peak_memory()
    used = MemoryUsedProbe(list(cfg.gpus))
    records = []
    progress = tqdm(total=sum(len(b) for b in batches), unit="req", desc="measuring",
                    disable=not cfg.progress)
    meter.start()
    t0 = time.perf_counter()
    for batch in batches:
        records.append((batch, backend.generate(batch, cfg.dataset.force_output_len)))
        used.read()
        progress.update(len(batch))
    reading = meter.stop()
    progress.close()
    result.energy.measured = reading
    result.memory.gpus = backend.peak_memory() if cfg.gpus else []
    result.memory.gpu_used_mb_max_at_batch_edges = used.result()
    _fill_summary(result, _timings(records, t0), reading)


def _timings(records, t0: float) -> list[RequestTiming]:
    timings = []
    for b, (batch, rec) in enumerate(records):
        for req, n, times in zip(batch, rec.output_tokens, rec.token_times_s):
            timings.append(RequestTiming(req.index, b, req.input_len, req.output_len, n,
                                         rec.submit_s - t0, [t - t0 for t in times]))
    return sorted(timings, key=lambda t: t.index)


def _fill_summary(result: Result, timings: list[RequestTiming], reading) -> None:
    fields, reasons = summarise(timings, reading.duration_s, reading.total_j, reading.reason)
    load_s, load_j = result.summary.model_load_s, result.summary.model_load_energy_j
    result.summary = Summary(**fields, model_load_s=load_s, model_load_energy_j=load_j)
    if reading.total_j is not None:
        result.summary.energy_per_gpu_j = {str(d.index): d.energy_j for d in reading.devices}
    else:
        reasons["summary.energy_per_gpu_j"] = reading.reason or "not measured"
    result.null_reasons.update(reasons)
    result.requests = [_request_dict(t) for t in timings]
    short = [t.index for t in timings if t.output_tokens != t.requested_output_tokens]
    if short:
        result.warnings.append(f"{len(short)} request(s) produced fewer tokens than requested "
                               f"(EOS or cap): {short[:10]}")


def _request_dict(t: RequestTiming) -> dict:
    return {"index": t.index, "batch": t.batch, "input_tokens": t.input_tokens,
            "requested_output_tokens": t.requested_output_tokens,
            "output_tokens": t.output_tokens, "submit_s": t.submit_s, "ttft_s": t.ttft_s,
            "tpot_s": t.tpot_s, "e2e_s": t.e2e_s, "token_times_s": t.token_times_s}


def _record_error(result: Result, status: str, exc: BaseException) -> None:
    result.status = status
    result.error = ErrorInfo(type(exc).__name__, str(exc) or type(exc).__name__,
                             traceback.format_exc())
    if result.summary.duration_s is None:
        result.null_reasons["summary"] = f"run {status} before the measured window ended"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
