"""Cache files shared by many processes: one builder per cache, checksummed shards.

Several `eval` processes (or Ray workers, or machines on a shared file system) may open the same
cache at once. Three rules keep that safe:
  - `build_lock(folder)`: only the process holding the folder's lock builds missing shards; the
    others wait, then find the shards on disk and only read them.
  - `save_shard`: a shard is written under a unique temporary name and renamed into place (a reader
    sees no shard or a whole one), and its sha256 is recorded in `checksums/<shard>.sha256` first.
  - `shard_intact`: a reader checks a shard's bytes against that record once per process. A shard
    that does not match, or does not parse, is damaged; the caller removes it (`discard_damaged`,
    which prints a one-line notice) and builds it again, since a cache can always be rebuilt.
Shards written before checksums existed have no record: the first reader that can parse one and
finds its values finite adopts it by recording its checksum.
"""

from __future__ import annotations

import hashlib
import os
import socket
import sys
import time
from pathlib import Path

import torch
from filelock import FileLock
from safetensors.torch import load as load_bytes
from safetensors.torch import save as save_bytes

from ..settings import atomic_write, disk_full_error, is_disk_full

_verified: set[tuple[str, int, int]] = set()
"""(path, size, mtime_ns) of shards this process has already checked."""


def build_lock(folder: Path) -> FileLock:
    """Exclusive lock for building the cache in `folder` (held across processes; waits without limit)."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(str(folder.parent / f"{folder.name}.lock"))


def checksum_path(path: Path) -> Path:
    return path.parent / "checksums" / f"{path.name}.sha256"


def save_shard(tensors: dict[str, torch.Tensor], path: Path, shards_left: int = 1) -> None:
    """Write one shard and its checksum record. On a full disk: neither is left behind, and the error
    names the folder and the space the `shards_left` shards still to write (this one included) need."""
    blob = save_bytes(tensors)
    try:
        atomic_write(checksum_path(path), hashlib.sha256(blob).hexdigest().encode())
        atomic_write(path, blob)
    except OSError as err:
        if not is_disk_full(err):
            raise
        checksum_path(path).unlink(missing_ok=True)
        raise disk_full_error(path.parent, len(blob) * max(shards_left, 1), "activation cache shards") from err
    st = path.stat()
    _verified.add((str(path), st.st_size, st.st_mtime_ns))


def shard_intact(path: Path) -> bool:
    """True when `path` holds the bytes recorded when it was written (checked once per process).
    False when it is missing, unreadable, or damaged."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return False
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key in _verified:
        return True
    try:
        blob = path.read_bytes()
    except OSError:
        return False
    digest = hashlib.sha256(blob).hexdigest()
    record = checksum_path(path)
    try:
        ok = record.read_text().strip() == digest
    except FileNotFoundError:  # written before checksums existed: adopt it if it reads as a sane shard
        ok = _parses_with_finite_values(blob)
        if ok:
            atomic_write(record, digest.encode())
    if ok:
        _verified.add(key)
    return ok


def discard_damaged(path: Path) -> bool:
    """Remove `path` (and its record) if it exists but is not intact; say so in one line."""
    if not path.exists() or shard_intact(path):
        return False
    print(f"saebench-scaffold: cache file {path} is damaged (checksum mismatch or unreadable); rebuilding it",
          file=sys.stderr)
    path.unlink(missing_ok=True)
    checksum_path(path).unlink(missing_ok=True)
    return True


def record_build(folder: Path, what: str) -> None:
    """Append one line to `folder/builds.log`: which process built what, when (for diagnosis and tests)."""
    line = f"{what} pid={os.getpid()} host={socket.gethostname()} t={time.time():.3f}\n"
    with open(folder / "builds.log", "a") as f:
        f.write(line)


def _parses_with_finite_values(blob: bytes) -> bool:
    try:
        tensors = load_bytes(blob)
    except Exception:  # noqa: BLE001 - any parse failure means the file is not a usable shard
        return False
    return all(torch.isfinite(t).all() for t in tensors.values() if t.is_floating_point())
