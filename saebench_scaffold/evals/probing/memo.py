"""Memo of checkpoint-independent probe results (LLM baselines, TPP's and SCR's LLM probes): in memory,
then on disk under `<cache_dir>/probing/<key>.json`."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from ...settings import atomic_write, cache_dir

PROBING_CACHE_VERSION = 1

_PROBE_MEMO: dict[str, Any] = {}


def memo_key(*parts) -> str:
    blob = json.dumps([PROBING_CACHE_VERSION, *parts], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def memoised_json(cache_root, key: str, compute):
    """In-memory then on-disk (`<cache_dir>/probing/<key>.json`) memo of a JSON-able result."""
    if key in _PROBE_MEMO:
        return _PROBE_MEMO[key]
    path = cache_dir(cache_root) / "probing" / f"{key}.json"
    value = None
    if path.exists():
        try:
            value = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            value = None  # unreadable: recompute and overwrite
    if value is None:
        value = compute()
        atomic_write(path, json.dumps(value))
    _PROBE_MEMO[key] = value
    return value
