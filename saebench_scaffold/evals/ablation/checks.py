"""`ce_ablation`'s headline check: CE ratios and increases recomputed from the CEs.
"""

from __future__ import annotations

from ..checks import compare

SUMMARY = {"scaffold": "scaffold_removed", "pca": "pca_removed_mean_preserving",
           "aligned_matched": "aligned_latents_removed_variance_matched", "random": "random_subspace_removed"}
"""Short names of the headline CE ratios (`summary` category; None when a condition does not apply)."""


def check_ce_ablation(res) -> list[tuple[str, str]]:
    """Each condition's CE ratio and increase from its CE and the clean CE; the summary ratios equal
    to their conditions'."""
    problems: list[tuple[str, str]] = []
    m = res.eval_result_metrics
    clean = m.get("clean", {}).get("ce")
    if not isinstance(clean, (int, float)) or clean <= 0:
        return [("clean.ce", "the clean CE is missing")]
    for name, values in m.items():
        ce = values.get("ce") if isinstance(values, dict) else None
        if name == "clean" or not isinstance(ce, (int, float)):
            continue
        compare(problems, f"{name}.ce_ratio", values.get("ce_ratio"), ce / clean, f"{name}.ce and clean.ce")
        compare(problems, f"{name}.ce_increase", values.get("ce_increase"), ce - clean, f"{name}.ce and clean.ce")
    for short, name in SUMMARY.items():
        ratio = m.get(name, {}).get("ce_ratio")
        if isinstance(ratio, (int, float)):
            compare(problems, f"summary.{short}_ce_ratio", m.get("summary", {}).get(f"{short}_ce_ratio"), ratio,
                     f"{name}.ce_ratio")
    return problems
