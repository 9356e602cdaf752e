"""Where lem's own files are: conf/ at the repo top (editable install) or inside the wheel."""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent
RESULT_FILE = "result.json"  # in every job directory


def conf_dir() -> Path:
    """The wheel ships conf/ as lem/conf; a source checkout keeps it at the repository top."""
    packaged = _PACKAGE / "conf"
    if (packaged / "config.yaml").is_file():
        return packaged
    return _PACKAGE.parent.parent / "conf"
