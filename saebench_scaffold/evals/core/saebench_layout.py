"""`core` in SAEBench's layout (`export-saebench`): SAEBench's categories and metric names, and SAEBench's
own figures where a name is SAEBench's (`explained_variance` is our `saebench_compat` figure, never our
around-the-mean headline; results written before core v2 lack it, and the export leaves it out)."""

from __future__ import annotations


def upgrade_core_metrics(metrics: dict) -> dict:
    """Core metrics in the v2 layout, whichever version wrote them: v1 kept CE under
    `model_behavior_preservation` with `ce_loss_clean`; v2 uses SAEBench's split."""
    m = {k: dict(v) for k, v in metrics.items()}
    old = m.get("model_behavior_preservation", {})
    if "ce_loss_score" in old:
        m["model_performance_preservation"] = {
            "ce_loss_score": old.pop("ce_loss_score"), "ce_loss_with_sae": old.pop("ce_loss_with_sae"),
            "ce_loss_with_ablation": old.pop("ce_loss_with_ablation"), "ce_loss_without_sae": old.pop("ce_loss_clean")}
    m.get("reconstruction_quality", {}).pop("explained_variance_legacy_from_zero", None)
    return m


def saebench_core_metrics(result) -> dict:
    m = upgrade_core_metrics(result.eval_result_metrics)
    rq, compat, dens = m.get("reconstruction_quality", {}), m.get("saebench_compat", {}), m.get("density", {})
    counts = result.provenance.token_counts
    out = {
        "model_behavior_preservation": m.get("model_behavior_preservation", {}),
        "model_performance_preservation": m.get("model_performance_preservation", {}),
        "reconstruction_quality": {**{k: compat[k] for k in ("explained_variance", "explained_variance_legacy") if k in compat},
                                   **{k: rq[k] for k in ("mse", "cossim") if k in rq}},
        "shrinkage": {k: rq[k] for k in ("l2_ratio",) if k in rq},
        "sparsity": m.get("sparsity", {}),
        "token_stats": {"total_tokens_eval_reconstruction": counts.get("ce_tokens", 0),
                        "total_tokens_eval_sparsity_variance": counts.get("density_tokens", 0)},
        "misc_metrics": {k_out: dens[k_in] for k_out, k_in in (("frac_alive", "frac_alive"),
                                                                 ("freq_over_1_percent", "dense_frac_gt_0.01"),
                                                                 ("freq_over_10_percent", "dense_frac_gt_0.1")) if k_in in dens},
    }
    return {k: v for k, v in out.items() if v}
