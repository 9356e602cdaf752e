"""`python -m lem ...`: compose the config with Hydra, run one measurement, print a summary.

Nothing heavy is imported here: torch and engines load inside the runner, after validation.
"""

from __future__ import annotations

import sys
from typing import Optional

import hydra
from omegaconf import DictConfig

from lem.config.schema import register_configs
from lem.paths import conf_dir

register_configs()


@hydra.main(version_base="1.3", config_path=str(conf_dir()), config_name="config")
def main(cfg: DictConfig) -> Optional[float]:
    """One sweep point (or a single run); returns the objective for sweepers (see lem.job.point)."""
    from lem.job.point import run_point

    return run_point(cfg)


def _multirun_flag_first(argv: list[str]) -> list[str]:
    """Hydra 1.3's argparse rejects `-m` between overrides; users type it anywhere, so move it."""
    flags = [a for a in argv[1:] if a in ("-m", "--multirun")]
    rest = [a for a in argv[1:] if a not in ("-m", "--multirun")]
    return argv[:1] + flags[:1] + rest


if __name__ == "__main__":
    sys.argv = _multirun_flag_first(sys.argv)
    from lem.config.cli_errors import guarded
    from lem.job.interrupts import stoppable

    # Hydra's own errors (composition, job dirs) as lem's messages, exit 2; SIGINT/SIGTERM stop
    # the run or sweep after the current point: summary, exit 130/143
    stoppable(lambda: guarded(main))
    from lem.job.callbacks import STATE

    if STATE["failed"]:  # a sweep with failed or interrupted points
        sys.exit(1)
    if STATE.get("all_invalid"):  # every point of the sweep was an invalid configuration
        sys.exit(2)
