"""`python -m lem.doctor [OVERRIDES]`: is this machine ready for `python -m lem [OVERRIDES]`?

The overrides are the run's own (`backend=vllm gpus=[0]`, `hydra/launcher=slurm`, ...): doctor
composes the same config the run would, local settings included, prints what the machine offers,
then what that run needs: validation, the pre-flight checks every run makes before it loads
anything, and what its meters, launcher and sweeper need. Exit status: 0 the run can go (warnings
allowed), 1 something it needs is missing (each FAIL line says the fix), 2 the overrides do not
compose. Never imports torch or an engine.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

from lem.checks import preflight
from lem.checks.preflight import PreflightCheck
from lem.config import local as local_config
from lem.machine import inventory

USAGE = """usage: python -m lem.doctor [--import] [OVERRIDE ...]

Checks this machine for the run `python -m lem OVERRIDE ...` would make, e.g.
  python -m lem.doctor                                   the default run (gpus=auto)
  python -m lem.doctor backend=vllm gpus=[0]             a vLLM run on GPU 0
  python -m lem.doctor hydra/launcher=slurm gpus=[0]     ... submitted to SLURM
  python -m lem.doctor energy.cpu=rapl                   ... that must measure CPU energy
Give one value per key (a sweep's most demanding point). --import also imports each installed
engine (in a child process; seconds each), to catch installs that are present but broken.
Exit 0: ready; 1: something the run
needs is missing (see the FAIL lines and their fixes); 2: the overrides do not compose."""
SLURM_LAUNCHERS = ("slurm", "slurm_gpu", "submitit_slurm")


def main(argv: Optional[list[str]] = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in args):
        print(USAGE)
        return 0
    deep = "--import" in args
    overrides = [a for a in args if a not in ("-m", "--multirun", "--import")]
    try:
        cfg = compose(overrides)
    except Exception as exc:  # Hydra's composition and override-parsing errors
        print(f"lem doctor: the overrides do not compose: {exc}\n(doctor checks one run: give one "
              f"value per key, as `python -m lem` takes them without -m)", file=sys.stderr)
        return 2
    return examine(cfg, overrides, deep)


def examine(cfg, overrides: list[str], deep: bool) -> int:
    """Print the machine and the run's needs; 1 when one of them fails."""
    from lem.config.validate import resolve_gpus
    from lem.machine.host import probe_host

    host = probe_host()
    cfg.gpus = resolve_gpus(cfg.gpus, host)
    nvml = inventory.read_nvml()
    run = " ".join(["python -m lem", *overrides])
    print(f"lem doctor: this machine, for `{run}`" + ("" if overrides else " (the defaults)"))
    imports = inventory.import_rows() if deep else []
    print(render_rows(machine_rows(cfg, nvml) + imports))
    checks = needs(cfg, host, nvml) + import_checks(cfg.backend.name, imports)
    print(f"\nWhat this run needs (gpus={list(cfg.gpus)}, backend={cfg.backend.name})")
    print(render_checks(checks))
    failed = [c for c in checks if c.verdict == "fail"]
    print(f"\n{verdict_line(failed, checks)}")
    return 1 if failed else 0


def compose(overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from lem.config.schema import register_configs
    from lem.paths import conf_dir

    register_configs()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        return hydra_compose(config_name="config", overrides=overrides, return_hydra_config=True)


def machine_rows(cfg, nvml: inventory.NvmlState) -> list[inventory.Row]:
    return [local_row(cfg), *inventory.gpu_rows(nvml), inventory.cuda_row(cfg.preflight.cuda_init_timeout_s),
            *inventory.engine_rows(), inventory.rapl_row(), inventory.shm_row(),
            inventory.slurm_row(), *inventory.plugin_rows()]


def local_row(cfg) -> inventory.Row:
    choice = cfg.hydra.runtime.choices.get("local")
    path = local_config.in_effect(choice)
    settings = (f"output_root={cfg.output_root}, gpus={cfg.gpus}, cache_dir={cfg.cache_dir}, "
                f"slurm_account={cfg.slurm_account}")
    if path is None:
        where = " or ".join(str(p) for p in local_config.candidates())
        return inventory.Row("local settings", "info", f"none (create {where}; example: "
                             f"conf/local.example.yaml); in effect: {settings}")
    return inventory.Row("local settings", "ok", f"{path}; in effect: {settings}")


def needs(cfg, host, nvml: inventory.NvmlState) -> list[PreflightCheck]:
    from lem.config.validate import ConfigError, validate

    try:
        validate(cfg, host)
        checks = [PreflightCheck("config", "pass", "valid")]
    except ConfigError as exc:
        checks = [PreflightCheck("config", "fail", p) for p in exc.problems]
    out_dir = Path(cfg.hydra.run.dir)
    return [*checks, *preflight.run_checks(cfg, host, out_dir), *energy_checks(cfg, nvml),
            *launcher_checks(cfg)]


def energy_checks(cfg, nvml: inventory.NvmlState) -> list[PreflightCheck]:
    checks = []
    if cfg.energy.meter == "nvml" and cfg.gpus:
        for g in (g for g in nvml.gpus if g.index in cfg.gpus):
            if not g.energy_counter:
                checks.append(PreflightCheck("energy_counter", "warn", f"GPU {g.index} has no NVML energy "
                                             f"counter (MIG {'on' if g.mig else 'off'}): energy will be null",
                                             "disable MIG on the measured GPUs, or accept power-only readings"))
    return checks  # energy.cpu=rapl is checked by pre-flight (lem.checks.preflight.check_rapl)


def launcher_checks(cfg) -> list[PreflightCheck]:
    choices = cfg.hydra.runtime.choices
    launcher, sweeper = choices.get("hydra/launcher"), choices.get("hydra/sweeper")
    checks = []
    if launcher in SLURM_LAUNCHERS:
        row = inventory.slurm_row()
        if row.state != "ok":
            checks.append(PreflightCheck("slurm", "fail", f"hydra/launcher={launcher}: {row.detail}",
                                         "install the SLURM client (sbatch, sacct) on this node, "
                                         "or run locally"))
        checks += _plugin_check("hydra_plugins.hydra_submitit_launcher", f"hydra/launcher={launcher}",
                                "pip install 'lem[slurm]'")
    if sweeper == "optuna":
        checks += _plugin_check("hydra_plugins.hydra_optuna_sweeper", "hydra/sweeper=optuna",
                                "pip install 'lem[optuna]'")
    return checks


def import_checks(backend: str, imports: list[inventory.Row]) -> list[PreflightCheck]:
    """With --import: the run's engine must import, not merely be installed."""
    module = inventory.ENGINES.get(backend, (None, None))[0]
    row = next((r for r in imports if r.item == f"import {module}"), None)
    if row is None:
        return []
    if row.state == "ok":
        return [PreflightCheck("engine_import", "pass", f"{module} {row.detail}")]
    return [PreflightCheck("engine_import", "fail", f"backend={backend}: `import {module}` {row.detail}",
                           "reinstall the engine with a torch/CUDA it was built for (pip install "
                           "'lem[<backend>]' in a fresh venv), or use its container (README: Containers)")]


def _plugin_check(module: str, what: str, fix: str) -> list[PreflightCheck]:
    if inventory._has_module(module):
        return [PreflightCheck("plugin", "pass", f"{what}: {module.split('.')[-1]} installed")]
    return [PreflightCheck("plugin", "fail", f"{what} needs {module.split('.')[-1]}", fix)]


def render_rows(rows: list[inventory.Row]) -> str:
    return "\n".join(f"  {r.item:<28} {r.state:<8} {r.detail}" for r in rows)


def render_checks(checks: list[PreflightCheck]) -> str:
    lines = []
    for c in checks:
        lines.append(f"  {c.verdict.upper():<8} {c.name:<18} {c.detail}")
        if c.fix and c.verdict in ("warn", "fail"):
            lines.append(f"  {'':<8} {'':<18} fix: {c.fix}")
    return "\n".join(lines)


def verdict_line(failed: list[PreflightCheck], checks: list[PreflightCheck]) -> str:
    warned = sum(c.verdict == "warn" for c in checks)
    if failed:
        names = ", ".join(sorted({c.name for c in failed}))
        return f"NOT READY: {len(failed)} problem(s) ({names}); fix the FAIL lines above"
    return f"READY: the run's checks pass ({warned} warning(s))"


if __name__ == "__main__":
    sys.exit(main())
