"""Where things live: data directory, cache directory. Read from the environment so CI and users
can point them elsewhere without editing files; every CLI command also takes them as flags."""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import uuid
from pathlib import Path
from typing import Any

DATA_DIR_ENV = "SAEBENCH_DATA_DIR"
CACHE_DIR_ENV = "SAEBENCH_CACHE_DIR"


class UserError(Exception):
    """A problem with the user's input. The CLI prints it as one line (no traceback) and exits 2."""


MAX_JSON_DEPTH = 100  # result files and configs nest about 6 levels
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.S)
_JSON_BRACKET = re.compile(rb"[\[\]{}]")


def load_json(data: bytes | str) -> Any:
    """`json.loads` for files a user hands us, refusing one nested deeper than MAX_JSON_DEPTH with a
    ValueError that says so. Python's parser (and every validator after it) recurses once per level,
    so a 1,000-deep file would otherwise end in a RecursionError traceback. The depth is counted
    without recursion: brackets outside strings."""
    raw = data.encode() if isinstance(data, str) else data
    depth = deepest = 0
    for m in _JSON_BRACKET.finditer(_JSON_STRING.sub(b'""', raw)):
        depth += 1 if m.group() in b"[{" else -1
        deepest = max(deepest, depth)
    if deepest > MAX_JSON_DEPTH:
        raise ValueError(f"JSON nested {deepest} levels deep (at most {MAX_JSON_DEPTH} accepted)")
    return json.loads(raw)


def atomic_write(path: Path, data: bytes | str) -> None:
    """Write `data` (str: UTF-8) to a name no other process, host or thread uses, then rename it over
    `path`: a reader sees the old file or the whole new one, never a partial one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        tmp.write_bytes(data.encode() if isinstance(data, str) else data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def is_disk_full(err: BaseException) -> bool:
    """True for a write that failed for lack of space (an OSError ENOSPC / EDQUOT, or a library's own
    error quoting it, as safetensors' SafetensorError does)."""
    if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    return "No space left on device" in str(err) or "Disk quota exceeded" in str(err)


def disk_full_error(folder: Path, needed_bytes: int, what: str) -> UserError:
    """The one-line refusal for a full disk: the folder, what was being written, the space it needs."""
    probe = Path(folder)
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    return UserError(f"no space left on device for {what} in {folder}: it needs about {needed_bytes / 2**20:,.1f} MB, "
                     f"{free / 2**20:,.1f} MB are free (free some space, or point --cache-dir / $SAEBENCH_CACHE_DIR "
                     "at a larger disk); nothing was left half-written")


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


def check_device(device: str) -> str:
    """`auto`, `cpu`, `cuda`, `cuda:N` or `mps`, present on this machine; anything else is a
    UserError here rather than an AssertionError from deep inside torch later."""
    import torch

    if device == "auto":
        return device
    usage = "use auto, cpu, cuda, cuda:N or mps"
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError) as err:
        raise UserError(f"--device {device!r} is not a device name; {usage}") from err
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise UserError(f"--device {device}: CUDA is not available here (torch {torch.__version__}); use --device cpu or auto")
        if dev.index is not None and dev.index >= count:
            raise UserError(f"--device {device}: this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}")
    elif dev.type == "mps":
        if not torch.backends.mps.is_available():
            raise UserError(f"--device {device}: Apple MPS is not available here; use --device cpu or auto")
    elif dev.type != "cpu":
        raise UserError(f"--device {device}: device type {dev.type!r} is not supported; {usage}")
    return device
