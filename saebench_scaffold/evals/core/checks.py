"""`core`'s headline check: densities, L0, dense fractions, explained variance and the CE / KL scores
recomputed from the per-latent densities and the score's own parts.
"""

from __future__ import annotations

import math

from ..checks import compare, find


def check_core(res) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    m = res.eval_result_metrics
    d_sae = res.sae_cfg_dict.get("d_sae")
    densities = [row.get("density") for row in res.eval_result_details]
    if d_sae is not None and len(densities) != d_sae:
        return [("eval_result_details", f"{len(densities)} per-latent rows for d_sae {d_sae}")]
    if not densities or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in densities):
        return [("eval_result_details[].density", "per-latent densities missing or not numbers")]
    n = len(densities)
    src = "the per-latent densities in eval_result_details"
    density = m.get("density", {})
    compare(problems, "density.frac_dead", density.get("frac_dead"), sum(v == 0 for v in densities) / n, src)
    compare(problems, "density.frac_alive", density.get("frac_alive"), sum(v > 0 for v in densities) / n, src)
    compare(problems, "density.mean_density", density.get("mean_density"), math.fsum(densities) / n, src)
    for key, value in density.items():
        for prefix in ("dense_frac_gt_", "dense_count_gt_"):
            if key.startswith(prefix):
                count = sum(v > float(key[len(prefix):]) for v in densities)
                compare(problems, f"density.{key}", value, count / n if "frac" in prefix else count, src)
    # L0 = Σ over latents of their firing rate (both count activations > 0 over the same tokens)
    compare(problems, "sparsity.l0", m.get("sparsity", {}).get("l0"), math.fsum(densities), src)
    fvu = m.get("reconstruction_quality", {}).get("fvu")
    if isinstance(fvu, (int, float)):
        compare(problems, "reconstruction_quality.explained_variance",
                 m["reconstruction_quality"].get("explained_variance"), 1 - fvu, "reconstruction_quality.fvu")
    _check_score(problems, m, "ce_loss_score", "ce_loss_with_ablation", "ce_loss_with_sae",
                 ("ce_loss_without_sae", "ce_loss_clean"))
    _check_score(problems, m, "kl_div_score", "kl_div_with_ablation", "kl_div_with_sae", None)
    return problems


def _check_score(problems, metrics, score_key, ablated_key, sae_key, clean_keys) -> None:
    """score = (ablated − with SAE) / (ablated − clean), clean being 0 for KL."""
    category, score = find(metrics, score_key)
    if category is None:
        return
    parts = metrics[category]
    ablated, with_sae = parts.get(ablated_key), parts.get(sae_key)
    clean = 0.0 if clean_keys is None else next((parts[k] for k in clean_keys if k in parts), None)
    if not all(isinstance(v, (int, float)) for v in (ablated, with_sae, clean)) or ablated == clean:
        return
    compare(problems, f"{category}.{score_key}", score, (ablated - with_sae) / (ablated - clean),
             f"{category}.{ablated_key} and .{sae_key}")
