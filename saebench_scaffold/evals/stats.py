"""Statistics over resplits and datasets shared by tasks and the leaderboard: mean ± sample std,
per-resplit averages over datasets, resplit seeds, and noise-aware comparison of two results."""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np


def mean_std(values: Iterable[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof = 1) over resplits."""
    v = np.asarray(list(values), dtype=np.float64)
    if v.size == 0:
        return float("nan"), float("nan")
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0


def with_std(per_resplit: dict[str, list[float]]) -> dict[str, float]:
    """{metric: [value per resplit]} -> {metric: mean, metric_std: std}."""
    out = {}
    for k, vals in per_resplit.items():
        out[k], out[f"{k}_std"] = mean_std(vals)
    return out


def average_datasets(per_dataset: dict[str, dict[str, list[float]]]) -> dict[str, list[float]]:
    """Per resplit, the mean over datasets: the averaged metric's std is its resplit noise."""
    metrics = next(iter(per_dataset.values())).keys()
    out = {}
    for m in metrics:
        series = [per_dataset[d][m] for d in per_dataset]
        out[m] = [sum(vals) / len(vals) for vals in zip(*series)]
    return out


def resplit_seeds(base_seed: int, n: int) -> list[int]:
    return [base_seed * 1000 + r for r in range(n)]


def _metrics_of(result) -> dict:
    if hasattr(result, "metrics"):
        result = result.metrics
    elif hasattr(result, "eval_result_metrics"):
        result = result.eval_result_metrics
    if isinstance(result, dict) and "eval_result_metrics" in result:
        result = result["eval_result_metrics"]
    flat = {}
    for k, v in result.items():
        if isinstance(v, dict):
            flat.update({f"{k}/{m}": x for m, x in v.items() if isinstance(x, (int, float))})
        elif isinstance(v, (int, float)):
            flat[k] = v
    return flat


def compare_noise(result_a, result_b, n_sigma: float = 1.0) -> dict[str, dict]:
    """Compare two checkpoints' results metric by metric (every metric with a `_std` companion in
    both). The spread of the difference is √(std_a² + std_b²) (independent resplit noise); a metric
    is `noise_dominated` when n_sigma × spread ≥ |difference|: the ranking it implies is not
    supported by the data. Accepts result-file dicts, EvalResult / TaskOutput objects or metric dicts."""
    a, b = _metrics_of(result_a), _metrics_of(result_b)
    out = {}
    for key, va in a.items():
        if key.endswith("_std") or key + "_std" not in a or key not in b or key + "_std" not in b:
            continue
        diff = va - b[key]
        spread = math.sqrt(a[key + "_std"] ** 2 + b[key + "_std"] ** 2)
        out[key] = {"a": va, "b": b[key], "diff": diff, "spread": spread,
                    "noise_dominated": bool(n_sigma * spread >= abs(diff))}
    return out


# ---- evaluation replicates (issue 25): one block per result, read by `claims` ------------------------
#
# A task that wants its evaluation noise inside `claims`' intervals stores, under
# `eval_result_unstructured["evaluation_replicates"]`, the block `replicates_block` returns:
#     {"unit": "contexts" | "questions" | "documents" | "tokens", "n_units": N, "n_replicates": B,
#      "draw_seed": S, "metrics": {"category.metric": [B floats], ...}}
# Replicate b of every metric is computed on the units drawn by `unit_draws(N, B, S)[b]` (with
# replacement). Two results with the same unit, N and S were resampled with the same draws, so
# `claims` pairs replicate b of one checkpoint (or condition) with replicate b of the other: the
# difference keeps the evaluation noise the two share out of the interval, as a paired test does.
REPLICATE_DRAW_SEED = 20_606  # fixed on purpose: the same across checkpoints, so paired draws coincide
N_REPLICATES = 200


def unit_draws(n_units: int, n_replicates: int = N_REPLICATES, seed: int = REPLICATE_DRAW_SEED) -> np.ndarray:
    """[n_replicates, n_units] indices drawn with replacement; a pure function of its arguments. The
    first B rows of a longer draw are the B-row draw (tasks that bootstrap n_bootstrap rounds store the
    first 200 as replicates, so results with different n_bootstrap still share their replicate draws)."""
    if n_units <= 0:
        raise ValueError("unit_draws needs at least one unit")
    return np.random.default_rng(seed).integers(0, n_units, size=(n_replicates, n_units))


def replicates_block(unit: str, n_units: int, metrics: dict[str, Iterable[float]],
                     n_replicates: int = N_REPLICATES, seed: int = REPLICATE_DRAW_SEED) -> dict:
    """The stored block (see above); `metrics` maps "category.metric" to its B replicate values,
    each computed on `unit_draws(n_units, n_replicates, seed)[b]`. Values are rounded to 7
    significant digits (JSON size; far below any interval's width)."""
    out = {}
    for key, values in metrics.items():
        v = [float(x) for x in values]
        if len(v) != n_replicates:
            raise ValueError(f"{key}: {len(v)} replicates, expected {n_replicates}")
        out[key] = [float(f"{x:.7g}") if math.isfinite(x) else None for x in v]
    return {"unit": unit, "n_units": int(n_units), "n_replicates": int(n_replicates), "draw_seed": int(seed),
            "metrics": out}
