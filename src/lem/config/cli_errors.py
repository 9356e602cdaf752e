"""What `python -m lem` prints when Hydra itself fails, before lem's task function runs: one message
naming the file or key and the fix, exit status 2 (an invalid configuration), never a traceback.

Hydra reports composition errors (an unknown group option, a malformed override, a config file
that does not parse) and a job directory it cannot create by printing a shortened traceback and
exiting 1. With HYDRA_FULL_ERROR=1 it re-raises them instead, and `guarded` turns the ones it
recognises into lem's message; anything else propagates unchanged (traceback, exit 1).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Optional

INVALID = 2


def guarded(main: Callable[[], object]) -> None:
    problem = malformed_local_settings()
    if problem:
        _refuse(problem)
    os.environ.setdefault("HYDRA_FULL_ERROR", "1")
    try:
        main()
    except Exception as exc:
        message = config_error(exc)  # first: Hydra's MissingConfigException is an OSError
        if message is None and isinstance(exc, OSError) and exc.filename is not None:
            message = unwritable(exc)
        if message is None:
            raise
        _refuse(message)


def _refuse(message: str) -> None:
    print(f"lem: {message}", file=sys.stderr, flush=True)
    sys.exit(INVALID)


def malformed_local_settings() -> Optional[str]:
    """local/default.yaml (lem's conf/ or the user config dir) must parse: say file, line, what."""
    import yaml

    from lem.config.local import candidates

    for path in candidates():
        if not path.is_file():
            continue
        try:
            yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            return f"{path}: not valid YAML: {_yaml_problem(exc)}; fix the file or move it away " \
                   f"(conf/local.example.yaml shows the format)"
    return None


def _yaml_problem(exc) -> str:
    mark = getattr(exc, "problem_mark", None)
    what = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    if mark is None:
        return what
    return f"line {mark.line + 1}, column {mark.column + 1}: {what}"


def _readable(text: str) -> str:
    """Hydra's text without what only confuses a user: lem's internal schema entries and the
    config search path it printed after the options."""
    keep = []
    for line in text.strip().splitlines():
        if line.strip().startswith(("Config search path", "provider=")):
            break
        if not line.strip().endswith("_schema"):
            keep.append(line)
    return "\n".join(keep).strip()


def unwritable(exc: OSError) -> str:
    """The job or sweep directory cannot be made or written (under a file, no permission, full)."""
    path = Path(exc.filename)
    return (f"cannot create or write {path}: {exc.strerror}; set output_root=<a writable "
            f"directory> (or hydra.run.dir / hydra.sweep.dir) - results go to "
            f"<output_root>/outputs and <output_root>/multirun")


def config_error(exc: Exception) -> Optional[str]:
    """Hydra's and OmegaConf's configuration errors, as one line each; None for anything else."""
    from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException
    from omegaconf.errors import OmegaConfBaseException

    if isinstance(exc, (ConfigCompositionException, MissingConfigException, OverrideParseException,
                        OmegaConfBaseException)):
        cause = exc.__cause__ if isinstance(exc.__cause__, OmegaConfBaseException) else None
        return f"invalid configuration: {_readable(str(cause or exc))}\n  (python -m lem --help " \
               f"lists the groups and options)"
    return None
