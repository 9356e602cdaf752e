"""`python -m lem ...`: compose the config with Hydra, run one measurement, print a summary.

Nothing heavy is imported here: torch and engines load inside the runner, after validation.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Optional

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from lem.config import register_configs
from lem.paths import conf_dir

log = logging.getLogger("lem")
register_configs()


@hydra.main(version_base="1.3", config_path=str(conf_dir()), config_name="config")
def main(cfg: DictConfig) -> Optional[float]:
    """One run; returns J per output token (None when energy is not measured) for sweepers."""
    from lem.console import summary_table
    from lem.runner import run
    from lem.validate import ConfigError

    hc = HydraConfig.get()
    out_dir = Path(hc.runtime.output_dir)
    try:
        result = run(cfg, list(hc.overrides.task), out_dir)
    except ConfigError as exc:
        return _exit(2, exc, out_dir)
    except Exception as exc:
        log.exception("run failed")
        return _exit(1, exc, out_dir)
    print(summary_table(result.to_dict(), str(out_dir / "result.json")), flush=True)
    return result.summary.j_per_output_token


def _exit(code: int, exc: Exception, out_dir: Path):
    print(f"lem: {type(exc).__name__}: {exc}\n  result with status=failed: "
          f"{out_dir / 'result.json'}", file=sys.stderr, flush=True)
    sys.exit(code)


def _multirun_flag_first(argv: list[str]) -> list[str]:
    """Hydra 1.3's argparse rejects `-m` between overrides; users type it anywhere, so move it."""
    flags = [a for a in argv[1:] if a in ("-m", "--multirun")]
    rest = [a for a in argv[1:] if a not in ("-m", "--multirun")]
    return argv[:1] + flags[:1] + rest


if __name__ == "__main__":
    sys.argv = _multirun_flag_first(sys.argv)
    main()
