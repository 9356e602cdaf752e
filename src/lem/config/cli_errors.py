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

from lem.paths import conf_dir

INVALID = 2


def guarded(main: Callable[[], object]) -> None:
    problem = malformed_local_settings() or unknown_group_options(sys.argv[1:])
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


def unknown_group_options(overrides: list[str]) -> Optional[str]:
    """Every `group=option` naming an option that does not exist, in one message. Hydra stops at
    the first missing option, so a user with three typos would fix them in three runs; lem's own
    groups are plain files in conf/<group>/ (or the user config dir), so all can be checked at once.
    Sweep expressions (`choice(...)`, globs) and Hydra's plugin groups (`hydra/...`) are left to
    Hydra."""
    problems = []
    for arg in overrides:
        group, sep, value = arg.partition("=")
        if not sep or group.startswith(("+", "~", "hydra")) or "." in group or not value:
            continue
        options = group_options(group)
        if options is None or any(c in value for c in "()*[]{}$"):
            continue
        missing = [v for v in value.split(",") if v.strip() not in options]
        problems += [f"{group}={v}: no such option in group '{group}'; choose one of "
                     f"{', '.join(sorted(options))}" for v in missing]
    if not problems:
        return None
    return (f"invalid configuration ({len(problems)} problem(s)):\n" +
            "\n".join(f"  - {p}" for p in problems) + "\n  (python -m lem --help lists the groups and options)")


def group_options(group: str) -> Optional[set[str]]:
    """The options of one of lem's config groups (YAML files in conf/<group>/ and in the user
    config dir's <group>/), or None where `group` is not such a group."""
    from lem.config.local import user_config_dir

    dirs = [d / group for d in (conf_dir(), user_config_dir()) if (d / group).is_dir()]
    if not dirs:
        return None
    return {f.stem for d in dirs for f in d.glob("*.yaml")}


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
    if isinstance(exc, ValueError) and str(exc).startswith("Only one of --run, --multirun, --cfg"):
        return (f"invalid command line: {exc}: to see one point's config, drop -m (`python -m lem "
                f"<overrides> --cfg job`); to run the sweep, drop --cfg")
    return None
