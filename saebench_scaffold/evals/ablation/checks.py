"""`ce_ablation`'s headline check: CE ratios and increases recomputed from the CEs, the summary
equal to its conditions' figures (names: the contract with `claims`).
"""

from __future__ import annotations

from ..checks import compare

SUMMARY = {"scaffold": "scaffold_removed", "pca": "pca_removed_mean_preserving", "pca_zeroing": "pca_removed_zeroing",
           "aligned_matched": "aligned_latents_removed_variance_matched", "random": "random_subspace_removed",
           "twin_scaffold": "twin_scaffold_removed", "twin_aligned_fixed": "twin_aligned_latents_removed",
           "twin_aligned_matched": "twin_aligned_latents_removed_energy_matched",
           "pca_aligned_fixed": "pca_aligned_latents_removed", "pca_aligned_matched": "pca_aligned_latents_removed_energy_matched"}
"""Short names of the headline CE ratios: summary.<short>_ce_ratio = <condition>.ce_ratio (None when the
condition does not apply, is switched off, or its status is not ok)."""

ENERGY_SUMMARY = {"scaffold_removed_energy_frac": "scaffold_removed", "pca_removed_energy_frac": "pca_removed_mean_preserving",
                  "twin_scaffold_removed_energy_frac": "twin_scaffold_removed"}
"""summary.<name> = <condition>.removed_energy_frac."""

EQUAL_ENERGY = ("pca_ce_ratio_at_scaffold_energy", "pca_zeroing_ce_ratio_at_scaffold_energy", "scaffold_over_pca_at_equal_energy")
"""Read off the PCA curves at the scaffold's removed energy (version 2)."""


def check_ce_ablation(res) -> list[tuple[str, str]]:
    """Each condition's CE ratio and increase from its CE and the clean CE; the summary figures equal
    to their conditions'; scaffold_over_pca_at_equal_energy = scaffold_ce_ratio / pca_ce_ratio_at_scaffold_energy."""
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
    summary = m.get("summary", {})
    pairs = [(f"{short}_ce_ratio", name, "ce_ratio") for short, name in SUMMARY.items()]
    pairs += [(metric, name, "removed_energy_frac") for metric, name in ENERGY_SUMMARY.items()]
    for metric, name, key in pairs:
        value, stated = m.get(name, {}).get(key), summary.get(metric)
        if isinstance(value, (int, float)) and isinstance(stated, (int, float)):
            compare(problems, f"summary.{metric}", stated, value, f"{name}.{key}")
        elif isinstance(stated, (int, float)):
            problems.append((f"summary.{metric}", f"has a value but {name}.{key} is missing"))
    s, p, q = (summary.get(k) for k in ("scaffold_ce_ratio", "pca_ce_ratio_at_scaffold_energy", "scaffold_over_pca_at_equal_energy"))
    if all(isinstance(v, (int, float)) for v in (s, p, q)) and p > 0:
        compare(problems, "summary.scaffold_over_pca_at_equal_energy", q, s / p,
                "summary.scaffold_ce_ratio / summary.pca_ce_ratio_at_scaffold_energy")
    return problems
