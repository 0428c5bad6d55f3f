"""Where things live: data directory, cache directory. Read from the environment so CI and users
can point them elsewhere without editing files; every CLI command also takes them as flags."""

from __future__ import annotations

import os
from pathlib import Path

DATA_DIR_ENV = "SAEBENCH_DATA_DIR"
CACHE_DIR_ENV = "SAEBENCH_CACHE_DIR"


class UserError(Exception):
    """A problem with the user's input. The CLI prints it as one line (no traceback) and exits 2."""


def data_dir(override: str | os.PathLike | None = None) -> Path | None:
    """The local data directory (layout of ../shared/data), or None to use the public hub."""
    value = override or os.environ.get(DATA_DIR_ENV)
    if not value:
        return None
    path = Path(value).expanduser()
    if not path.is_dir():
        raise UserError(f"data directory {path} does not exist (set by --data-dir or ${DATA_DIR_ENV})")
    return path


def cache_dir(override: str | os.PathLike | None = None) -> Path:
    """Root for the dequantized model copy and activation caches; kept outside git."""
    value = override or os.environ.get(CACHE_DIR_ENV) or Path.home() / ".cache" / "saebench_scaffold"
    path = Path(value).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path
