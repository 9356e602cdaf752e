"""Per-machine settings: the optional `local` config group.

conf/config.yaml ends its defaults list with `optional local: default`, so a file
`local/default.yaml` is merged over every run when it exists, and nothing happens when it does
not. Hydra looks for it first in lem's conf/ (a checkout: conf/local/ is git-ignored), then in the
user config dir, `$LEM_CONFIG_DIR` or else `~/.config/lem`, which config.yaml puts on Hydra's
search path (that one also works for a wheel install and inside the containers). Command-line
overrides still win over it. conf/local.example.yaml shows what goes there.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from lem.paths import conf_dir

ENV = "LEM_CONFIG_DIR"


def user_config_dir() -> Path:
    if os.environ.get(ENV):
        return Path(os.environ[ENV]).expanduser()
    return Path(os.environ.get("HOME") or "/nonexistent") / ".config" / "lem"


def searchpath_entry() -> str:
    """Resolver `lem.config_dir`: the user dir as a search-path entry. When it does not exist (and
    LEM_CONFIG_DIR is unset) this is `pkg://lem`, which holds no config group: Hydra warns about
    a missing search-path directory on every run, and most machines have none."""
    d = user_config_dir()
    if os.environ.get(ENV) or d.is_dir():
        return f"file://{d.absolute()}"
    return "pkg://lem"


def candidates(choice: str = "default") -> list[Path]:
    """Where Hydra looks for local/<choice>.yaml, in its search order."""
    return [conf_dir() / "local" / f"{choice}.yaml", user_config_dir() / "local" / f"{choice}.yaml"]


def in_effect(choice: Optional[str] = "default") -> Optional[Path]:
    """The local settings file a run with this `local` choice merges, or None."""
    if not choice:
        return None
    return next((p for p in candidates(choice) if p.is_file()), None)
