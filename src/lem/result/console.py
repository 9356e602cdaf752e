"""The compact summary printed at the end of a run (the full record is result.json)."""

from __future__ import annotations

from typing import Optional

from lem.analysis.stats import CycleStats
from lem.result.schema import Result, Summary


def _fmt(value: Optional[float], unit: str = "", scale: float = 1.0, digits: int = 3) -> str:
    if value is None:
        return "null"
    return f"{value * scale:.{digits}g}{unit}"


def _ci(stat: Optional[CycleStats], unit: str = "", scale: float = 1.0) -> str:
    if stat is None or stat.ci95_low is None:
        return ""
    return f" (95% CI {_fmt(stat.ci95_low, '', scale)}-{_fmt(stat.ci95_high, unit, scale)}, " \
           f"CV {_fmt(stat.cv)})"


def summary_table(result: Result, path: str) -> str:
    s, cfg, st = result.summary, result.config, result.statistics
    rows = [
        ("status", _status(result)),
        *_warnings(result),
        ("run", f"backend={cfg['backend']['name']} model={cfg['model']['name']} "
                f"precision={cfg['precision']['name']} {_load(cfg['batching'])} "
                f"gpus={cfg['gpus']}"),
        ("requests", f"{s.num_requests} over {s.cycles} cycle(s) "
                     f"({s.input_tokens} in / {s.output_tokens} out tokens)"),
        ("throughput", f"{_fmt(s.output_tokens_per_s)} out tok/s{_ci(st.get('output_tokens_per_s'))}"),
        ("TTFT mean/p99", f"{_fmt(s.ttft_s.mean, ' ms', 1e3)} / {_fmt(s.ttft_s.p99, ' ms', 1e3)}"),
        ("ITL mean/p99", f"{_fmt(s.itl_s.mean, ' ms', 1e3)} / {_fmt(s.itl_s.p99, ' ms', 1e3)}"),
        ("E2E mean/p99", f"{_fmt(s.e2e_s.mean, ' s')} / {_fmt(s.e2e_s.p99, ' s')}"),
        ("energy", _energy(s, result.null_reasons, st)),
        ("idle / dynamic", f"{_fmt(s.idle_power_w, ' W')} engine-ready idle "
                           f"(device idle {_fmt(s.device_idle_power_w, ' W')}); dynamic "
                           f"{_fmt(s.dynamic_j_per_output_token, ' J')}/out token"),
        ("CPU energy", f"{_fmt(s.cpu_energy_j, ' J')} ({s.cpu_energy_method or 'not measured'})"),
        ("MBU / MFU", _mbu(result)),
        ("model load", f"{_fmt(s.model_load_s, ' s')}, {_fmt(s.model_load_energy_j, ' J')}"),
        *_engine_build(result),
        ("result", path),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"  {k:<{width}}  {v}" for k, v in rows)


def _status(result: Result) -> str:
    v = result.validity
    reasons = f" ({'; '.join(v.reasons)})" if v is not None and v.reasons else ""
    return f"{result.status}, valid={v.valid if v is not None else None}{reasons}"


def _warnings(result: Result) -> list[tuple[str, str]]:
    """The checks that warned (still comparable, worth knowing), by name; details in result.json."""
    v = result.validity
    warned = [c.name for c in v.checks if c.verdict == "warn"] if v is not None else []
    return [("warnings", f"{', '.join(warned)} (result.validity.checks says why)")] if warned else []


def _load(b: dict) -> str:
    """What load ran: a batch size offline; arrivals, rate and bound when serving."""
    if b.get("strategy") != "continuous":
        return f"batch={b['batch_size']}"
    text = f"continuous arrivals={b['arrival']}"
    if b.get("rate_rps") is not None:
        text += f" rate={b['rate_rps']} req/s"
    if b.get("max_concurrency") is not None:
        text += f" max_concurrency={b['max_concurrency']}"
    return text


def _mbu(result: Result) -> str:
    s, roofline = result.summary, result.roofline
    text = f"{_fmt(s.mbu)} / {_fmt(s.mfu)}"
    if roofline is None:
        return text
    if s.mbu is None and roofline.reason:
        text += f" ({roofline.reason})"
    elif roofline.method.startswith("estimate"):
        text += " (estimate: continuous batching, mean running batch; see roofline.method)"
    return text


def _energy(s: Summary, nulls: dict[str, str], st: dict[str, CycleStats]) -> str:
    if s.energy_j is None:
        return f"null ({nulls.get('summary.energy_j', 'not measured')})"
    return (f"{_fmt(s.energy_j, ' J')} total, {_fmt(s.j_per_output_token, ' J')}/out token"
            f"{_ci(st.get('j_per_output_token'), ' J')}")


def _engine_build(result: Result) -> list[tuple[str, str]]:
    """A line for backends that build an engine (tensorrt): the build's window, or the cache hit."""
    engine = result.engine or {}
    if "cache_hit" not in engine:
        return []
    if engine["cache_hit"]:
        return [("engine build", f"cached ({engine.get('cache_key')}), not built in this run")]
    w = next((w for w in result.windows if w.name == "engine_build"), None)
    duration, energy = (w.duration_s, w.energy_j) if w is not None else (None, None)
    return [("engine build", f"{_fmt(duration, ' s')}, {_fmt(energy, ' J')}")]
