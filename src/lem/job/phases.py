"""One measured run. The order of phases lives here and only here:

validate -> pre-flight checks of the machine -> pin devices -> start the instruments (sampler
process) -> device idle -> workload
-> load model (its own window) -> settle + engine-ready idle baseline -> warmup to stability
-> measured cycles (cooldown between) -> analysis -> result.json + timeseries.parquet
-> engine shutdown -> result.json again (also when the run fails or is interrupted).

The result is written before the engine shuts down as well: a shutdown that hangs until the
scheduler kills the job (vLLM's engine core has) cannot lose a finished measurement, and an error
or interrupt during shutdown is a warning on an `ok` result, not a failed run.
"""

from __future__ import annotations

import logging
import resource
import time
import traceback
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from lem.analysis.metrics import RequestTiming
from lem.backends.base import BuildsEngine, ReportsEngine, RunsWorkers, TracksMemory
from lem.config.schema import config_hash
from lem.config.validate import resolve_gpus, validate
from lem.machine.host import probe_host
from lem.measure.clock import Clock
from lem.result.schema import ErrorInfo, Result, write_result

log = logging.getLogger(__name__)
BASELINE_STATE = "engine-ready: CUDA context and model resident, no work (clocks may stay up)"
SERVING_NO_ATTRIBUTION = ("continuous batching: prefill and decode of different requests share "
                          "engine steps, so time spans cannot split them")


def run(cfg: DictConfig, overrides: list[str], out_dir: Path, job_gap=None,
        on_written=lambda: None) -> Result:
    """Measure `cfg`; result.json is written to `out_dir` whatever happens. `on_written` is called
    once the complete measurement is on disk, before the engine shuts down."""
    result = Result(started_at=_now(), overrides=list(overrides), job_gap=job_gap)
    t0 = time.perf_counter()

    def write_complete():
        _finish(result, t0, out_dir)
        on_written()

    try:
        _measure(cfg, result, out_dir, write_complete)
        result.status = "ok"
    except KeyboardInterrupt as exc:
        if not _measured(result, exc, "interrupted during engine shutdown"):
            _record_error(result, "interrupted", exc)
        raise  # an interrupt stops the sweep either way
    except BaseException as exc:
        if not _measured(result, exc, "engine shutdown failed"):
            _record_error(result, "failed", exc)
            raise
    finally:
        _finish(result, t0, out_dir)
    return result


def _finish(result: Result, t0: float, out_dir: Path) -> None:
    result.finished_at = _now()
    result.wall_s = time.perf_counter() - t0
    result.memory.peak_host_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    write_result(result, out_dir)


def _measured(result: Result, exc: BaseException, what: str) -> bool:
    """True when the measurement was complete (written) before `exc`: it becomes a warning."""
    if result.status != "ok":
        return False
    note = f"{what} after the measurement was complete and written: {type(exc).__name__}: {exc}"
    result.warnings.append(note)
    log.warning(note)
    return True


def _measure(cfg: DictConfig, result: Result, out_dir: Path, write) -> None:
    host = probe_host()
    cfg.gpus = resolve_gpus(cfg.gpus, host)
    result.config = OmegaConf.to_container(cfg, resolve=True)
    result.config_hash = config_hash(result.config)
    validate(cfg, host)

    from lem.checks import preflight
    from lem.machine import devices
    from lem.measure.instruments import Instruments

    cfg.gpus, note = devices.scheduler_gpus(list(cfg.gpus))  # after hashing: same point anywhere
    if note:
        result.warnings.append(note)
        log.warning(note)
    with _phase(result, "preflight"):  # the machine itself: fails here, with the fix, or warns
        result.warnings += preflight.enforce(cfg, host, out_dir)
    devices.pin_devices(cfg.gpus)  # before torch starts CUDA
    with _phase(result, "instruments_start"):
        inst = Instruments(cfg, host.nvml_error)
    try:
        with _phase(result, "device_idle"):
            inst.sample_device_idle(cfg.energy.device_idle_s)
        _phases(cfg, result, inst, out_dir, write)
    finally:
        result.windows = inst.recorder.windows
        result.timeseries = inst.close(out_dir)


def _complete(result: Result, inst, out_dir: Path, write) -> None:
    """Measured and analysed: the time series and result.json are written now, before the engine
    shuts down; nothing after this can unmake the measurement."""
    result.windows = inst.recorder.windows
    result.timeseries = inst.close(out_dir)
    result.status = "ok"
    try:
        write()
    except BaseException:
        result.status = "running"  # not written: the failure is the run's (e.g. ENOSPC)
        raise


def _phases(cfg: DictConfig, result: Result, inst, out_dir: Path, write) -> None:
    from lem.backends import make_backend
    from lem.backends.base import RunContext
    from lem.machine import devices
    from lem.machine.environment import snapshot

    with _phase(result, "imports_and_workload"):
        source, batches = _workload(cfg)
        devices.check_cuda(cfg.gpus)
        backend = make_backend(cfg.backend, RunContext.of(cfg))
    try:
        log.info("loading model=%s (%s) on gpus=%s", source.name, source.kind, list(cfg.gpus))
        _engine_build(backend, source, cfg, inst, result)
        with _phase(result, "model_load"), inst.recorder.window("model_load"):
            result.precision = backend.load(source, cfg.precision, list(cfg.gpus))
        result.engine = backend.engine_info() if isinstance(backend, ReportsEngine) else None
        if result.engine is None:
            result.null_reasons["engine"] = f"backend={cfg.backend.name} reports no engine build"
        result.parallel = backend.describe() if isinstance(backend, RunsWorkers) else None
        if result.parallel is None:
            result.null_reasons["parallel"] = "one process drives the run (backend.parallel=null)"
        result.environment = snapshot(list(cfg.gpus))
        with _phase(result, "settle_and_baseline"):
            result.baseline = _baseline(cfg, inst)
        with _phase(result, "warmup"), inst.recorder.window("warmup"):
            result.warmup = _warmup(backend, batches, cfg)
        with _phase(result, "cycles"):
            timings = _cycles(backend, batches, cfg, inst, result)
        if isinstance(backend, ReportsEngine):  # again: what compiled or changed while it ran
            result.engine = backend.engine_info()
        from lem.analysis.analyse import analyse

        with _phase(result, "analysis"):
            memory = _peak_memory(backend, list(cfg.gpus))
            analyse(result, timings, cfg, inst, backend.model_info(), memory)
        _complete(result, inst, out_dir, write)
    finally:
        backend.close()


def _engine_build(backend, source, cfg: DictConfig, inst, result: Result) -> None:
    """Engines compiled ahead of loading (backend=tensorrt, workflow=engine) build in their own
    window, so build time and energy never count as model load; a cached engine opens none."""
    if not isinstance(backend, BuildsEngine):
        return
    build = backend.engine_build(source, cfg.precision, list(cfg.gpus))
    if build is None:
        return
    log.info("building the engine (measured window engine_build)")
    with _phase(result, "engine_build"), inst.recorder.window("engine_build"):
        build()


def _peak_memory(backend, gpus: list[int]) -> list:
    """Allocator peaks where the backend reads them in lem's process; engines that allocate in
    their own worker processes leave them null (the NVML memory-used series measures them)."""
    from lem.backends.base import GpuMemory

    if not gpus:
        return []
    if isinstance(backend, TracksMemory):
        return backend.peak_memory()
    return [GpuMemory(g, None, None) for g in gpus]


@contextmanager
def _phase(result: Result, name: str):
    """Where a run's wall time goes, for the time-to-result benchmark."""
    t0 = time.perf_counter()
    try:
        yield
    finally:
        result.phase_s[name] = time.perf_counter() - t0


def _workload(cfg: DictConfig):
    from lem.config.validate import model_max_len
    from lem.models.source import resolve_model
    from lem.workload.requests import build_requests, check_lengths, make_batches

    source = resolve_model(cfg.model, cfg.cache_dir)
    tokenizer = source.tokenizer(cfg.backend.get("trust_remote_code", False))
    requests = build_requests(cfg.dataset, source.vocab_size(), tokenizer)
    check_lengths(requests, model_max_len(cfg.model) or source.max_len(), cfg.model.name)
    return source, make_batches(requests, cfg.batching.strategy, cfg.batching.batch_size)


def _baseline(cfg: DictConfig, inst):
    from lem.measure.baseline import Baseline, Settle, device_idle_w, from_window, wait_until_steady

    e = cfg.energy
    if e.meter == "none" or not cfg.gpus or e.baseline_s <= 0:
        return Baseline(state="not measured",
                        reason="no GPU energy meter (CPU run or energy=none) or energy.baseline_s=0")
    settle = wait_until_steady(inst.sampler, e) if inst.sampler else \
        Settle(False, 0.0, 0.0, "no sampler (energy.sample_period_s=0): not waited")
    with inst.recorder.window("baseline"):
        time.sleep(e.baseline_s)
    rows = inst.rows()
    b = from_window(inst.recorder.get("baseline"), rows, BASELINE_STATE)
    b.settle = settle
    if inst.device_idle_end_ns is not None:
        b.device_idle_power_w = device_idle_w(rows, inst.device_idle_end_ns)
        b.device_idle_note = ("sampled before lem created a CUDA context; contexts of other "
                              "processes on the GPU, if any, are included")
    return b


def _warmup(backend, batches, cfg: DictConfig):
    from lem.measure.warmup import warm_up

    m, forced = cfg.measurement, cfg.dataset.force_output_len
    full = batches[0]
    short = full
    if m.warmup_output_len:
        short = [replace(r, output_len=min(r.output_len, m.warmup_output_len)) for r in full]

    def timed(batch) -> float:
        t0 = time.perf_counter()
        backend.generate(batch, forced)
        return time.perf_counter() - t0

    # a priming batch only when the stability batches are shorter than the workload's own
    prime = (lambda: timed(full)) if short != full else None
    return warm_up(lambda: timed(short), m.warmup_k, m.warmup_cv, m.warmup_max_batches,
                   m.warmup_max_s, prime)


def _cycles(backend, batches, cfg: DictConfig, inst, result: Result) -> list[RequestTiming]:
    from lem.analysis.analyse import request_dict
    from lem.analysis.attribution import Attribution, attribute
    from lem.analysis.serving import engine_concurrency, pooled_serving, serving_figures
    from lem.measure.cycles import cycle_figures

    serving = cfg.batching.strategy == "continuous"
    idle_w = getattr(result.baseline, "idle_power_w", None)
    target_c = _baseline_temperature(inst)
    if cfg.gpus and isinstance(backend, TracksMemory):
        backend.reset_peak_memory()
    pooled: list[RequestTiming] = []
    for c in range(cfg.measurement.cycles):
        cooldown_s = _cooldown(inst, target_c, cfg.measurement) if c else 0.0
        with inst.recorder.window(f"cycle_{c}"):
            clock = Clock.now()  # the cycle's tokens on the samples' clock
            records = _run_batches(backend, batches, cfg, f"cycle {c + 1}/{cfg.measurement.cycles}",
                                   inst.checkpoint)
        window = inst.recorder.windows[-1]
        ran = [rec for _, rec in records if rec.token_times_s[0]]
        spans = [_span_ns(rec, clock) for rec in ran]
        attribution = attribute(spans, inst.rows(), list(cfg.gpus), window.energy_j,
                                _span_gpus(ran, list(cfg.gpus))) \
            if not serving else Attribution(reason=SERVING_NO_ATTRIBUTION)
        timings = _timings(records, clock.perf_s, c)
        result.cycles.append(cycle_figures(c, timings, window, idle_w, attribution, cooldown_s))
        if serving:
            result.cycles[-1]["serving"] = serving_figures(
                records, timings, window, inst.rows(), list(cfg.gpus), clock, cfg.batching)
        else:
            result.cycles[-1]["concurrency"] = engine_concurrency(records)
        pooled += timings
        # kept as each cycle completes: an interrupt in a later cycle keeps these records
        result.requests += [request_dict(t) for t in timings]
    result.serving = pooled_serving(result.cycles) if serving else None
    if not serving:
        result.null_reasons["serving"] = "offline batches (batching.strategy is not continuous)"
    return pooled


def _run_batches(backend, batches, cfg: DictConfig, desc: str, on_batch=lambda: None):
    from tqdm import tqdm

    progress = tqdm(total=sum(len(b) for b in batches), unit="req", desc=desc,
                    disable=not cfg.progress)
    forced = cfg.dataset.force_output_len
    if isinstance(backend, RunsWorkers):  # data parallel: batches run side by side on workers
        def done(i: int) -> None:
            on_batch()
            progress.update(len(batches[i]))

        records = list(zip(batches, backend.generate_all(batches, forced, done)))
    else:
        records = []
        for batch in batches:
            records.append((batch, backend.generate(batch, forced)))
            on_batch()
            progress.update(len(batch))
    progress.close()
    return records


def _span_ns(rec, clock: Clock) -> tuple[int, int, int]:
    """(submit, first token, last token) of a batch on the sampler's clock."""
    firsts = [t[0] for t in rec.token_times_s if t]
    lasts = [t[-1] for t in rec.token_times_s if t]
    return clock.to_ns(rec.submit_s), clock.to_ns(min(firsts)), clock.to_ns(max(lasts))


def _span_gpus(records, gpus: list[int]):
    """Data parallel: each batch ran on its worker's GPU only (None: every batch on all GPUs)."""
    if not gpus or all(rec.worker is None for rec in records):
        return None
    return [[gpus[rec.worker]] if rec.worker is not None else gpus for rec in records]


def _baseline_temperature(inst):
    w = inst.recorder.get("baseline")
    rows = [r for r in inst.rows() if w and w.start_ns <= r.t_ns <= w.end_ns]
    return max((r.temperature_c for r in rows), default=None)


def _cooldown(inst, target_c, m) -> float:
    """Wait (bounded) until every GPU is back within the band of the baseline's temperature."""
    if inst.sampler is None or target_c is None or m.cooldown_max_s <= 0:
        return 0.0
    t0 = time.monotonic()
    while time.monotonic() - t0 < m.cooldown_max_s:
        latest = {r.gpu: r.temperature_c for r in inst.rows()[-4 * len(inst.gpus):]}
        if latest and max(latest.values()) <= target_c + m.cooldown_temp_band_c:
            break
        time.sleep(inst.sampler.period_s)
    return time.monotonic() - t0


def _timings(records, t0: float, cycle: int) -> list[RequestTiming]:
    timings = []
    for b, (batch, rec) in enumerate(records):
        submits = rec.request_submit_s or [rec.submit_s] * len(batch)  # serving: per request
        for req, n, times, sub in zip(batch, rec.output_tokens, rec.token_times_s, submits):
            timings.append(RequestTiming(req.index, b, req.input_len, req.output_len, n,
                                         sub - t0, [t - t0 for t in times], cycle, rec.per_token,
                                         rec.worker))
    return sorted(timings, key=lambda t: (t.cycle, t.index))


def _record_error(result: Result, status: str, exc: BaseException) -> None:
    result.status = status
    result.error = ErrorInfo(type(exc).__name__, str(exc) or type(exc).__name__,
                             traceback.format_exc())
    if result.summary.duration_s is None:
        result.null_reasons["summary"] = f"run {status} before the measured cycles ended"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")

