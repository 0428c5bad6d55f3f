"""`mmlu_topic`'s headline check: accuracies recomputed from their per-split values.
"""

from __future__ import annotations

from ..checks import compare
from ..stats import mean_std


def check_mmlu_topic(res) -> list[tuple[str, str]]:
    """Each condition's accuracy mean ± std from its per-split accuracies; the headline
    `<label set>.<condition>_acc` equal to its detail row's."""
    problems: list[tuple[str, str]] = []
    for i, row in enumerate(res.eval_result_details):
        splits = row.get("acc_per_split")
        if not isinstance(splits, list) or not splits:
            continue
        mean, std = mean_std(splits)
        src = f"eval_result_details[{i}].acc_per_split"
        compare(problems, f"eval_result_details[{i}].acc", row.get("acc"), mean, src)
        compare(problems, f"eval_result_details[{i}].acc_std", row.get("acc_std"), std, src)
        label_set, condition = row.get("label_set"), row.get("condition")
        recorded = res.eval_result_metrics.get(label_set, {}).get(f"{condition}_acc")
        compare(problems, f"{label_set}.{condition}_acc", recorded, mean, src)
    return problems
