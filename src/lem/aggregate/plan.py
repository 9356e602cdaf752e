"""Jobs a sweep planned but never started: cross-check a sweep dir against its multirun.yaml.

A job that never started (a SLURM array cut short, a sweep killed early) leaves no directory at
all, so walking the tree cannot see it. Hydra records the sweep in `<sweep dir>/multirun.yaml`;
the jobs it planned are rebuilt exactly as Hydra's basic sweeper builds them (and lem's shuffle
sweeper, which only reorders them) and compared, as sets of overrides, with the jobs that have a
directory (each job's `.hydra/overrides.yaml`). Other sweepers (Optuna) choose their points as
they go: for those there is no plan to check against, and the report says so.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Optional

PLANNED_SWEEPERS = ("BasicSweeper", "LemSweeper")


def unstarted(sweep_dir: Path) -> tuple[list[list[str]], Optional[str]]:
    """(override lists of planned jobs without a directory, note when no plan could be read)."""
    try:
        planned = planned_jobs(sweep_dir / "multirun.yaml")
    except Exception as e:  # an unreadable plan is reported, never fatal
        return [], f"{sweep_dir}: multirun.yaml could not be expanded ({type(e).__name__}: {e})"
    if planned is None:
        return [], None
    if isinstance(planned, str):
        return [], f"{sweep_dir}: {planned}"
    started = Counter(_key(job) for job in started_jobs(sweep_dir))
    missing = []
    for job in planned:
        if started[_key(job)] > 0:
            started[_key(job)] -= 1
        else:
            missing.append(job)
    return missing, None


def planned_jobs(multirun_yaml: Path):
    """The override list of every job the sweep planned; a note (str) for sweepers without a
    plan; None when the file is not a sweep's."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(multirun_yaml)
    hydra = cfg.get("hydra")
    if hydra is None:
        return None
    sweeper = str(hydra.sweeper.get("_target_", "")).rsplit(".", 1)[-1]
    if sweeper not in PLANNED_SWEEPERS:
        return (f"sweeper {sweeper} chooses its points as it runs: jobs that never started "
                "cannot be listed")
    params = hydra.sweeper.get("params") or {}
    overrides = [f"{k}={v}" for k, v in params.items()] + list(hydra.overrides.task)
    parsed = OverridesParser.create().parse_overrides(overrides)
    return BasicSweeper.split_arguments(parsed, None)[0]


def started_jobs(sweep_dir: Path) -> list[list[str]]:
    """The override lists of the jobs that made a directory (Hydra writes them at job start)."""
    from omegaconf import OmegaConf

    return [list(OmegaConf.load(f)) for f in sweep_dir.glob("*/.hydra/overrides.yaml")]


def _key(job: list[str]) -> tuple[str, ...]:
    """Order-free (lem's sweeper may reorder); both sides are spelled by the same Hydra code."""
    return tuple(sorted(job))
