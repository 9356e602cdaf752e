"""Post-run validity checks: each check's verdict in the result, and one `valid` flag.

Verdicts: pass, warn (worth knowing, still comparable), fail (not comparable: `valid` false),
skipped (with the reason it could not be checked).
"""

from __future__ import annotations

from dataclasses import dataclass, field

COUNTER_PERIOD_S = 0.1  # the H200's energy counter updates about every 100 ms
# NVML clock-event reason bits (nvmlClocksEventReasons)
SW_POWER_CAP, HW_SLOWDOWN, SW_THERMAL, HW_THERMAL, HW_POWER_BRAKE = 0x4, 0x8, 0x20, 0x40, 0x80
_THROTTLE_NAMES = {SW_POWER_CAP: "sw_power_cap", HW_SLOWDOWN: "hw_slowdown",
                   SW_THERMAL: "sw_thermal", HW_THERMAL: "hw_thermal",
                   HW_POWER_BRAKE: "hw_power_brake"}


@dataclass
class Check:
    """One named verdict and what it saw: lem's one check type. result.json's validity.checks holds
    these as they are; pre-flight (lem.checks.preflight.PreflightCheck) adds the fix it shows."""

    name: str
    verdict: str  # pass | warn | fail | skipped (the module docstring says what each means)
    detail: str


@dataclass
class Validity:
    valid: bool
    reasons: list[str] = field(default_factory=list)  # the failed checks' details
    checks: list[Check] = field(default_factory=list)


def verdict(checks: list[Check]) -> Validity:
    failed = [f"{c.name}: {c.detail}" for c in checks if c.verdict == "fail"]
    return Validity(valid=not failed, reasons=failed, checks=checks)


def window_length(windows, min_s: float = 1.0) -> Check:
    if all(w.energy_j is None for w in windows):  # no GPU counter read: nothing to be coarse
        return Check("window_length", "skipped", "no GPU energy counter in any window")
    short = [f"{w.name} {w.duration_s:.2f} s" for w in windows if w.duration_s < min_s]
    if short:
        return Check("window_length", "warn",
                     f"windows under {min_s} s ({', '.join(short)}): the energy counter updates "
                     f"every ~{COUNTER_PERIOD_S * 1000:.0f} ms, so their energy is coarse")
    return Check("window_length", "pass", f"every measured window >= {min_s} s")


def counter_vs_integral(windows, min_s: float = 5.0, tolerance: float = 0.05) -> Check:
    pairs = [(w.name, g.energy_j, g.power_integral_j) for w in windows if w.duration_s >= min_s
             for g in w.gpus if g.energy_j and g.power_integral_j is not None]
    if not pairs:
        return Check("counter_vs_integral", "skipped",
                     f"no window >= {min_s} s with both counter and power samples")
    worst = max(pairs, key=lambda p: abs(p[2] - p[1]) / p[1])
    rel = abs(worst[2] - worst[1]) / worst[1]
    detail = (f"worst {worst[0]}: counter {worst[1]:.1f} J vs integral {worst[2]:.1f} J "
              f"({rel:.1%}; tolerance {tolerance:.0%})")
    return Check("counter_vs_integral", "pass" if rel <= tolerance else "warn", detail)


def throttling(windows) -> Check:
    bits = 0
    for w in windows:
        for g in w.gpus:
            bits |= g.clock_event_reasons
    seen = [name for bit, name in _THROTTLE_NAMES.items() if bits & bit]
    if not any(w.gpus for w in windows):
        return Check("throttling", "skipped", "no GPU samples")
    if bits & (HW_SLOWDOWN | SW_THERMAL | HW_THERMAL | HW_POWER_BRAKE):
        return Check("throttling", "fail", f"clock-event reasons seen: {seen}")
    if bits & SW_POWER_CAP:
        return Check("throttling", "warn", "clocks held at the power limit (sw_power_cap): "
                     "normal for compute-bound work, but results depend on the power limit")
    return Check("throttling", "pass", "no throttling reasons seen in the measured windows")


def temperature(windows, max_c: float) -> Check:
    temps = [g.temperature_max_c for w in windows for g in w.gpus if g.temperature_max_c is not None]
    if not temps:
        return Check("temperature", "skipped", "no temperature samples")
    hottest = max(temps)
    ok = hottest <= max_c
    return Check("temperature", "pass" if ok else "warn",
                 f"hottest sample {hottest:.0f} C (limit {max_c:.0f} C)")


def foreign_processes(found: dict[str, list[int]] | None) -> Check:
    if found is None:
        return Check("foreign_processes", "skipped", "no GPU process list (CPU run or no NVML)")
    others = {g: pids for g, pids in found.items() if pids}
    if others:
        return Check("foreign_processes", "fail", f"other processes on the GPUs: {others}; "
                     f"their work is in the energy counter")
    return Check("foreign_processes", "pass", "no other compute processes on the run's GPUs")


def tokens(requests: list[dict], forced: bool) -> Check:
    short = [r["index"] for r in requests if r["output_tokens"] != r["requested_output_tokens"]]
    if not short:
        return Check("tokens", "pass", f"all {len(requests)} request(s) produced the requested tokens")
    if forced:
        return Check("tokens", "fail", f"{len(short)} request(s) produced other than the forced "
                     f"length: {short[:10]}")
    return Check("tokens", "pass", f"natural lengths: {len(short)} request(s) stopped at EOS")


def batch_runs_whole(batching, engine: dict | None, concurrency: list | None = None) -> Check:
    """A batch the engine never ran whole: its own running count (offline, per cycle) peaked
    below the largest batch handed to it, or the config asks for more sequences at once (a static
    batch, or batching.max_concurrency when serving) than its per-step limit. The point is then a
    smaller batch run in waves, not what the config says."""
    limit = (engine or {}).get("max_seqs_per_step")
    short = [c for c in concurrency or [] if c.get("peak_running") is not None
             and c["peak_running"] < c["largest_batch"]]
    if short:
        c = min(short, key=lambda c: c["peak_running"])
        fix = f"; set backend.max_num_seqs={c['largest_batch']}" if limit and limit < c["largest_batch"] \
            else " (KV-cache room or the token budget per step can cap it too)"
        return Check("batch_runs_whole", "warn", f"batches of {c['largest_batch']}, but the engine's "
                     f"own count peaked at {c['peak_running']} running at once{fix}")
    key, size = (("batching.batch_size", batching.batch_size) if batching.strategy != "continuous"
                 else ("batching.max_concurrency", batching.get("max_concurrency")))
    if not limit or not size:
        return Check("batch_runs_whole", "skipped", "no per-step sequence limit from the engine, "
                     "or no bound on concurrency")
    if size > limit:
        return Check("batch_runs_whole", "warn", f"{key}={size} > the engine's {limit} sequences "
                     f"per step: at most {limit} ran at once; set backend.max_num_seqs={size} "
                     f"to run them all")
    return Check("batch_runs_whole", "pass", f"{key}={size} within the engine's {limit} sequences "
                 f"per step")


def coverage(windows, min_coverage: float = 0.9) -> Check:
    cov = [(w.name, g.coverage) for w in windows for g in w.gpus if g.coverage is not None]
    if not cov:
        return Check("sample_coverage", "skipped", "no GPU samples")
    low = [f"{n} {c:.0%}" for n, c in cov if c < min_coverage]
    if low:
        return Check("sample_coverage", "warn", f"windows thinly sampled: {low}")
    return Check("sample_coverage", "pass", f"samples cover >= {min_coverage:.0%} of every window")


def idle_gpu_in_group(windows, idle_w_per_gpu: dict | None, share: float = 0.1,
                      floor_w: float = 5.0) -> Check:
    """In a multi-GPU run, a GPU whose power above its own engine-ready idle stayed under `share`
    of the busiest GPU's over the measured cycles did (almost) none of the work: the energy is
    still measured, but the group's size is not what the numbers suggest."""
    cycles = [w for w in windows if w.name.startswith("cycle_")]
    gpus = sorted({g.index for w in cycles for g in w.gpus})
    if len(gpus) < 2:
        return Check("idle_gpu_in_group", "skipped", "fewer than two GPUs")
    idle = {int(k): v for k, v in (idle_w_per_gpu or {}).items() if v is not None}
    if set(gpus) - set(idle):
        return Check("idle_gpu_in_group", "skipped", "no engine-ready idle power for every GPU")
    dynamic = {gpu: _mean_power(cycles, gpu) - idle[gpu] for gpu in gpus}
    busiest = max(dynamic.values())
    if busiest < floor_w:
        return Check("idle_gpu_in_group", "skipped",
                     f"no GPU rose {floor_w} W above its idle: too little work to compare GPUs")
    idle_ones = [f"GPU {g}: {d:.1f} W above idle vs {busiest:.1f} W" for g, d in dynamic.items()
                 if d < share * busiest]
    if idle_ones:
        return Check("idle_gpu_in_group", "warn", "GPU(s) of the group stayed near idle during the "
                     f"cycles (check backend.parallel / device_map): {idle_ones}")
    return Check("idle_gpu_in_group", "pass", "every GPU worked: " + ", ".join(
        f"GPU {g} +{d:.0f} W" for g, d in dynamic.items()))


def _mean_power(windows, gpu: int) -> float:
    energy = sum(g.energy_j or 0.0 for w in windows for g in w.gpus if g.index == gpu)
    return energy / sum(w.duration_s for w in windows)
