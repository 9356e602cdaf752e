"""What one Hydra job does: resume check, validation (skip or fail), dry run, thermal gap,
the isolated measurement, and the objective returned to the sweeper.

Local and SLURM sweeps run this same function; in a sweep a failing point never stops the
others (its result says `failed`), an impossible point is recorded as `skipped`, and an
interrupted point stops the sweep (its result says `interrupted`; a re-run resumes).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Optional

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from lem.config.schema import config_hash
from lem.config.validate import ConfigError, resolve_gpus, validate
from lem.job.callbacks import STATE
from lem.machine.host import probe_host
from lem.result.schema import RESULT_FILE, ErrorInfo, Result, write_result

log = logging.getLogger("lem")


def run_point(cfg: DictConfig) -> Optional[float]:
    hc = HydraConfig.get()
    sweep = hc.mode == RunMode.MULTIRUN
    out_dir, overrides = Path(hc.runtime.output_dir), list(hc.overrides.task)
    label = hc.job.override_dirname or "(defaults)"
    host = probe_host()
    try:
        cfg.gpus = resolve_gpus(cfg.gpus, host)
    except ConfigError as exc:  # e.g. gpus=abc: refused like any other invalid key
        return _invalid(exc, sweep, OmegaConf.to_container(cfg, resolve=True), overrides, out_dir, label)
    config = OmegaConf.to_container(cfg, resolve=True)
    done = find_done(Path(hc.sweep.dir), out_dir, config_hash(config)) if sweep and cfg.resume else None
    if done is not None:
        return _say("done", label, "an ok result of this configuration exists", objective(done, cfg))
    try:
        validate(cfg, host)
    except ConfigError as exc:
        return _invalid(exc, sweep, config, overrides, out_dir, label)
    if cfg.dry_run:
        return _say("run", label, "valid", None)
    return _measure(cfg, config, overrides, out_dir, sweep, label)


def _measure(cfg, config, overrides, out_dir: Path, sweep: bool, label: str) -> Optional[float]:
    from lem.job.child import Interrupted, run_isolated
    from lem.machine.devices import wait_for_steady_temperature
    from lem.result.console import summary_table

    gap = wait_for_steady_temperature(list(cfg.gpus), cfg.measurement.job_gap_max_s,
                                      cfg.measurement.job_gap_temp_range_c)
    if cfg.isolate:
        try:
            result = run_isolated(config, overrides, out_dir, job_gap=gap)
        except Interrupted as exc:
            _stop(exc, label)
    else:
        result = _in_process(cfg, overrides, out_dir, gap)
    if result.summary.cycles is not None:
        print(summary_table(result, str(out_dir / RESULT_FILE)), flush=True)
    if result.status != "ok":
        err = result.error
        print(f"lem: {label}: {err and err.type}: {err and err.message}", file=sys.stderr, flush=True)
        if not sweep:
            sys.exit(1)
        return None
    return objective(result, cfg)


def _stop(exc, label: str):
    """An interrupted point stops the sweep. Hydra's run_job catches every Exception (the next point
    would start), so lem's own process raises SignalInterrupt, a KeyboardInterrupt, which reaches
    __main__: the summary, exit 130/143. A SLURM job's process re-raises the Exception: Hydra
    records that job as failed, and the sweep's process, waiting on the whole array, exits 1."""
    from lem.job.interrupts import SignalInterrupt, in_main_process

    print(f"lem: {label}: {exc}", file=sys.stderr, flush=True)
    if in_main_process():
        raise SignalInterrupt(exc.signum) from exc
    raise exc


def _in_process(cfg, overrides, out_dir: Path, gap) -> Result:
    from lem.job.phases import run

    try:
        run(cfg, overrides, out_dir, job_gap=gap)
    except Exception:
        log.exception("run failed")
    return Result.read(out_dir / RESULT_FILE)  # as written, whatever happened: like an isolated run's


def _invalid(exc: ConfigError, sweep: bool, config, overrides, out_dir: Path, label: str):
    """In a sweep an impossible point is `skipped` with the reason; alone it is an error."""
    status = "skipped" if sweep else "failed"
    result = Result(status=status, config=config, overrides=overrides, config_hash=config_hash(config),
                    error=ErrorInfo("ConfigError", str(exc), ""))
    result.null_reasons["summary"] = f"not run: {exc}"
    if not config.get("dry_run"):  # a dry run writes nothing (it would confuse resume)
        write_result(result, out_dir)
    if sweep:
        return _say("skip", label, "; ".join(exc.problems), None)
    print(f"lem: ConfigError: {exc}\n  result with status=failed: {out_dir / RESULT_FILE}",
          file=sys.stderr, flush=True)
    sys.exit(2)


def _say(kind: str, label: str, detail: str, value):
    STATE["plan"][kind] += 1
    print(f"lem [{kind}] {label}: {detail}", flush=True)
    return value


def find_done(sweep_dir: Path, out_dir: Path, want_hash: str) -> Optional[Result]:
    """An ok result with this config hash: this job's own directory first, then the sweep's. An
    unreadable one (not JSON, not of this schema: ResultError is a ValueError) is no result."""
    candidates = [out_dir / RESULT_FILE] + sorted(sweep_dir.rglob(RESULT_FILE))
    for path in candidates:
        try:
            r = Result.read(path)
        except (OSError, ValueError):
            continue
        if r.status == "ok" and r.config_hash == want_hash:
            return r
    return None


def objective(result: Result, cfg) -> Optional[float]:
    """summary.<objective.metric>, or objective.penalty when the latency bound is broken."""
    s, o = result.summary, cfg.objective
    bound = o.max_ttft_p99_s
    p99 = s.ttft_s.p99
    if bound is not None and (p99 is None or p99 > bound):
        return float(o.penalty)
    value = getattr(s, o.metric, None)  # a latency (Percentiles) or no such field: no objective
    return float(value) if isinstance(value, (int, float)) else None
