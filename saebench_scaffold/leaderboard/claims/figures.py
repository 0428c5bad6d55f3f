"""One figure of a checkpoint (`Figure`): its value, or None with the task's reason, and its
evaluation replicates where the result stores them."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .checkpoints import Checkpoint
from .definitions import Path3


@dataclass
class Figure:
    value: float | None  # None: absent, or the task could not compute it (`status`)
    path: Path3 | None = None
    status: str | None = None  # the task's reason for a None figure
    replicates: np.ndarray | None = None  # [B] replicate values (nan for null), or None
    block: tuple | None = None  # (unit, n_units, draw_seed) of the replicates


def _value(ck: Checkpoint, path: Path3) -> float | None:
    task, cat, key = path
    v = ck.metrics.get(task, {}).get(cat, {}).get(key)
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def _figure(ck: Checkpoint, paths: tuple[Path3, ...]) -> Figure:
    """The first of `paths` the checkpoint's result holds (a value, or None with the task's reason)."""
    for path in paths:
        task, cat, key = path
        block = ck.metrics.get(task, {}).get(cat, {})
        if key not in block:
            continue
        v = _value(ck, path)
        un = ck.unstructured.get(task) or {}
        if v is None:
            status = (un.get("summary_status") or {}).get(key) if cat == "summary" else None
            status = (status or block.get(f"{key}_status")
                      or (block.get(key[:-len("_acc")] + "_status") if key.endswith("_acc") else None))
            clean, chance = block.get("clean_acc"), block.get("chance")
            if not status and key.endswith("_retained") and isinstance(clean, (int, float)) \
                    and isinstance(chance, (int, float)) and clean <= chance:
                status = f"clean accuracy {clean:.3g} at or below chance {chance:.3g} (retained undefined)"
            status = status or "not computed"
            return Figure(None, path, str(status))
        reps = un.get("evaluation_replicates") or {}
        values = (reps.get("metrics") or {}).get(f"{cat}.{key}")
        if isinstance(values, list) and values:
            arr = np.array([np.nan if x is None else float(x) for x in values], dtype=np.float64)
            return Figure(v, path, None, arr, (reps.get("unit"), reps.get("n_units"), reps.get("draw_seed")))
        return Figure(v, path)
    return Figure(None, paths[0], "absent from the result")


def _has(ck: Checkpoint, paths: tuple[Path3, ...]) -> bool:
    return any(p[2] in ck.metrics.get(p[0], {}).get(p[1], {}) for p in paths)
