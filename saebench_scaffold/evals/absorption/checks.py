"""`absorption`'s headline check: per-letter rates and the headline means recomputed from the letters' rows.
"""

from __future__ import annotations

import statistics

from ..checks import compare, number


def check_absorption(res) -> list[tuple[str, str]]:
    """absorption: each letter's full-absorption rate and mean fraction from its counts and sum, its
    number of split latents from their list; the headline means and sample std devs (SAEBench's
    statistics.mean / stdev over letters) from the letters' rows."""
    problems: list[tuple[str, str]] = []
    rows = res.eval_result_details
    if not rows:
        return [("eval_result_details", "per-letter rows missing")]
    for i, row in enumerate(rows):
        n, at = row.get("num_probe_true_positives"), f"eval_result_details[{i}]"
        if isinstance(n, int) and n > 0:
            if isinstance(row.get("num_full_absorption"), int):
                compare(problems, f"{at}.full_absorption_rate", row.get("full_absorption_rate"),
                         row["num_full_absorption"] / n, f"{at}.num_full_absorption / num_probe_true_positives")
            if number(row.get("sum_absorption_fraction")):
                compare(problems, f"{at}.mean_absorption_fraction", row.get("mean_absorption_fraction"),
                         row["sum_absorption_fraction"] / n, f"{at}.sum_absorption_fraction / num_probe_true_positives")
        if isinstance(row.get("split_feats"), list):
            compare(problems, f"{at}.num_split_features", row.get("num_split_features"), len(row["split_feats"]),
                     f"{at}.split_feats")
    mean = res.eval_result_metrics.get("mean", {})
    for name, key in (("absorption_fraction_score", "mean_absorption_fraction"),
                      ("full_absorption_score", "full_absorption_rate"), ("num_split_features", "num_split_features")):
        values = [row.get(key) for row in rows]
        if not all(number(v) for v in values):
            continue
        compare(problems, f"mean.mean_{name}", mean.get(f"mean_{name}"), statistics.mean(values), "the per-letter rows")
        compare(problems, f"mean.std_dev_{name}", mean.get(f"std_dev_{name}"),
                 statistics.stdev(values) if len(values) > 1 else 0.0, "the per-letter rows")
    return problems
