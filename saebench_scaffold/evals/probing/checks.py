"""The probing tasks' headline check (sparse_probing, tpp, scr): per-dataset and headline means ± std
recomputed from the per-split values.
"""

from __future__ import annotations

import math

from ..checks import compare
from ..stats import average_datasets, mean_std


def check_per_dataset(res) -> list[tuple[str, str]]:
    """sparse_probing / tpp: each dataset's mean ± std from its per-split values (when recorded);
    the headline mean ± std from the per-split means over datasets; L0 weighted by tokens."""
    problems: list[tuple[str, str]] = []
    details = res.eval_result_details
    if not details:
        return [("eval_result_details", "per-dataset rows missing")]
    per_dataset: dict[str, dict[str, list[float]]] = {}
    for i, row in enumerate(details):
        name = row.get("dataset_name", str(i))
        for key, splits in row.items():
            if key.endswith("_per_split") and isinstance(splits, list) and splits:
                metric = key[: -len("_per_split")]
                per_dataset.setdefault(name, {})[metric] = splits
                mean, std = mean_std(splits)
                src = f"eval_result_details[{i}].{key}"
                compare(problems, f"eval_result_details[{i}].{metric}", row.get(metric), mean, src)
                compare(problems, f"eval_result_details[{i}].{metric}_std", row.get(f"{metric}_std"), std, src)
    metrics = res.eval_result_metrics
    complete = len(per_dataset) == len(details)
    averaged = average_datasets(per_dataset) if complete else {}
    for category, values in metrics.items():
        if category == "sparsity" or not isinstance(values, dict):
            continue
        for key, value in values.items():
            if key.endswith("_std"):
                if key[:-4] in averaged:
                    compare(problems, f"{category}.{key}", value, mean_std(averaged[key[:-4]])[1],
                             "the per-split values in eval_result_details")
            elif key in averaged:
                compare(problems, f"{category}.{key}", value, mean_std(averaged[key])[0],
                         "the per-split values in eval_result_details")
            elif all(isinstance(row.get(key), (int, float)) for row in details):
                compare(problems, f"{category}.{key}", value, math.fsum(row[key] for row in details) / len(details),
                         "the per-dataset means in eval_result_details")
    l0 = metrics.get("sparsity", {}).get("l0")
    if all(isinstance(row.get("l0"), (int, float)) and isinstance(row.get("n_tokens"), int) for row in details):
        tokens = sum(row["n_tokens"] for row in details)
        if tokens:
            compare(problems, "sparsity.l0", l0, math.fsum(row["l0"] * row["n_tokens"] for row in details) / tokens,
                     "the per-dataset L0 and token counts")
    return problems
