"""`downstream`'s headline check: retained accuracies recomputed from the accuracies and chance.
"""

from __future__ import annotations

from ..checks import compare

SUMMARY = {"spliced": "sae_spliced", "scaffold": "scaffold_removed", "pca": "pca_removed_mean_preserving",
           "aligned": "aligned_latents_removed", "random": "random_subspace_removed", "zero": "zero_ablation"}
"""Short names of the headline retained accuracies (`summary` category; None when a condition was not run)."""


def check_downstream(res) -> list[tuple[str, str]]:
    """Each task's `<condition>_retained` = (acc − chance) / (clean_acc − chance); each summary
    `<short>_retained` = the mean of its condition's retained accuracy over the tasks where clean is
    above chance."""
    problems: list[tuple[str, str]] = []
    m = res.eval_result_metrics
    tasks = [t for t, v in m.items() if t != "summary" and isinstance(v, dict)]
    for task in tasks:
        values = m[task]
        chance, clean = values.get("chance"), values.get("clean_acc")
        if not isinstance(chance, (int, float)) or not isinstance(clean, (int, float)):
            problems.append((f"{task}.clean_acc", "the clean accuracy or chance is missing"))
            continue
        for key, acc in values.items():
            if not key.endswith("_acc") or not isinstance(acc, (int, float)) or clean <= chance:
                continue
            cond = key.removesuffix("_acc")
            compare(problems, f"{task}.{cond}_retained", values.get(f"{cond}_retained"),
                    (acc - chance) / (clean - chance), f"{task}.{key}, chance and clean_acc")
    above = [t for t in tasks if isinstance(m[t].get("clean_retained"), (int, float))]  # clean above chance
    for short, cond in SUMMARY.items():
        per_task = [m[t].get(f"{cond}_retained") for t in above]
        if per_task and all(isinstance(v, (int, float)) for v in per_task):
            compare(problems, f"summary.{short}_retained", m.get("summary", {}).get(f"{short}_retained"),
                    sum(per_task) / len(per_task), f"the tasks' {cond}_retained where clean is above chance")
    return problems
