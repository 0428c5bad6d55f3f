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
