"""Range rules and recomputed aggregates on hand-built results (no model, no data): the layout that
`core` writes after its SAEBench renaming (model_performance_preservation, saebench_compat,
typical_tokens) is covered as well as the older one."""

from __future__ import annotations

import math

import pytest

from saebench_scaffold.evals.stats import average_datasets, with_std
from saebench_scaffold.evals.core.checks import check_core
from saebench_scaffold.evals.probing.checks import check_per_dataset
from saebench_scaffold.evals.registry import TaskRegistry
from saebench_scaffold.leaderboard.ranges import out_of_range
from saebench_scaffold.results.schema import EvalResult, Provenance

SIZES = {"d_sae": 8, "d_in": 4}


@pytest.mark.parametrize("task, field, value, ok", [
    ("core", "sparsity.l0", 8, True), ("core", "sparsity.l0", 8.5, False), ("core", "sparsity.l0", -0.1, False),
    ("core", "density.dense_frac_gt_0.1", 1.7, False), ("core", "density.dense_count_gt_0.1", 9, False),
    ("core", "reconstruction_quality.fvu", -3.0, False), ("core", "typical_tokens.fvu", -0.01, False),
    ("core", "reconstruction_quality.explained_variance", 1.01, False),
    ("core", "saebench_compat.explained_variance_legacy", 1.2, False),
    ("core", "typical_tokens.massive_token_frac", 1.5, False), ("core", "typical_tokens.scaffold_variance_share", 0.9, True),
    ("core", "model_performance_preservation.ce_loss_without_sae", -1.0, False),
    ("core", "model_performance_preservation.ce_loss_score", -0.3, True),
    ("core", "model_performance_preservation.ce_loss_score", math.nan, False),
    ("core", "model_behavior_preservation.kl_div_with_sae", -0.1, False),
    ("core", "scaffold.scaffold_rank", 5, False), ("core", "details.density", 1.2, False),
    ("sparse_probing", "sae.sae_top_1_test_accuracy", 1.1, False), ("sparse_probing", "sae.sae_top_1_test_accuracy_std", -0.01, False),
    ("sparse_probing", "details.sae_top_1_test_accuracy_per_split", [0.5, 1.2], False),
    ("tpp", "tpp_metrics.tpp_threshold_20_total_metric", -0.2, True),
    ("mmlu_topic", "category.clean_acc_ci_high", 1.3, False), ("ce_ablation", "summary.scaffold_ce_ratio", -1.0, False),
    ("core", "unknown_category.whatever", -1e9, True),
])
def test_ranges(task, field, value, ok):
    rules = TaskRegistry().get(task).load().metric_ranges  # each task declares its own ranges
    assert (out_of_range(task, field, value, SIZES, rules) is None) == ok


def _result(task, metrics, details, d_sae=8):
    prov = Provenance(model={"name": "m"}, model_source="m", hook_name="h", checkpoint_path="p", checkpoint_format="f",
                      checkpoint_sha256="0", seed=0, wall_time_s=0.0, task_version=1)
    return EvalResult(eval_type_id=task, eval_config={}, eval_id="i", datetime_epoch_millis=0, eval_result_metrics=metrics,
                      eval_result_details=details, sae_cfg_dict={"d_sae": d_sae}, provenance=prov)


def _core(densities):
    n = len(densities)
    return {
        "sparsity": {"l0": sum(densities), "l1": 1.0},
        "density": {"frac_alive": sum(d > 0 for d in densities) / n, "frac_dead": sum(d == 0 for d in densities) / n,
                    "dense_frac_gt_0.1": sum(d > 0.1 for d in densities) / n, "dense_count_gt_0.1": sum(d > 0.1 for d in densities),
                    "mean_density": sum(densities) / n},
        "reconstruction_quality": {"fvu": 0.2, "explained_variance": 0.8},
        "model_performance_preservation": {"ce_loss_score": 0.75, "ce_loss_with_sae": 3.5, "ce_loss_with_ablation": 5.0,
                                           "ce_loss_without_sae": 3.0},
        "model_behavior_preservation": {"kl_div_score": 0.9, "kl_div_with_sae": 0.1, "kl_div_with_ablation": 1.0},
    }


def test_core_aggregates_recomputed_from_densities():
    densities = [0.0, 0.0, 0.05, 0.2, 0.01, 0.3, 0.0, 0.02]
    details = [{"latent": i, "density": d} for i, d in enumerate(densities)]
    metrics = _core(densities)
    assert check_core(_result("core", metrics, details)) == []
    metrics["sparsity"]["l0"] /= 2
    metrics["density"]["dense_count_gt_0.1"] = 1
    metrics["reconstruction_quality"]["explained_variance"] = 0.9
    metrics["model_performance_preservation"]["ce_loss_score"] = 0.8
    bad = dict(check_core(_result("core", metrics, details)))
    assert set(bad) == {"sparsity.l0", "density.dense_count_gt_0.1", "reconstruction_quality.explained_variance",
                        "model_performance_preservation.ce_loss_score"}
    assert check_core(_result("core", _core(densities), details[:-1]))[0][0] == "eval_result_details"


def test_probing_means_and_stds_recomputed_from_per_split_values():
    per_dataset = {"a": {"sae_top_1_test_accuracy": [0.7, 0.8, 0.75]}, "b": {"sae_top_1_test_accuracy": [0.9, 0.85, 0.95]}}
    details = [{"dataset_name": n, "l0": 10.0, "n_tokens": 100, **with_std(r), **{f"{m}_per_split": v for m, v in r.items()}}
               for n, r in per_dataset.items()]
    metrics = {"sae": with_std(average_datasets(per_dataset)), "sparsity": {"l0": 10.0}}
    assert check_per_dataset(_result("sparse_probing", metrics, details)) == []
    metrics["sae"]["sae_top_1_test_accuracy_std"] = 0.0
    details[1]["sae_top_1_test_accuracy"] = 0.99
    metrics["sparsity"]["l0"] = 12.0
    bad = dict(check_per_dataset(_result("sparse_probing", metrics, details)))
    assert set(bad) == {"sae.sae_top_1_test_accuracy_std", "eval_result_details[1].sae_top_1_test_accuracy", "sparsity.l0"}


def test_mmlu_and_ce_ablation_headlines_recomputed():
    from saebench_scaffold.evals.ablation.checks import check_ce_ablation
    from saebench_scaffold.evals.mmlu_topic.checks import check_mmlu_topic

    splits = [0.6, 0.7, 0.65]
    row = {"label_set": "category", "condition": "clean", "acc": 0.65, "acc_std": with_std({"a": splits})["a_std"],
           "acc_per_split": splits}
    mmlu = _result("mmlu_topic", {"category": {"clean_acc": 0.65}}, [row])
    assert check_mmlu_topic(mmlu) == []
    mmlu.eval_result_metrics["category"]["clean_acc"] = 0.7
    assert [f for f, _ in check_mmlu_topic(mmlu)] == ["category.clean_acc"]
    metrics = {"clean": {"ce": 2.0, "ce_ratio": 1.0, "ce_increase": 0.0},
               "scaffold_removed": {"ce": 3.0, "ce_ratio": 1.5, "ce_increase": 1.0},
               "summary": {"scaffold_ce_ratio": 1.5}}
    ce = _result("ce_ablation", metrics, [])
    assert check_ce_ablation(ce) == []
    ce.eval_result_metrics["summary"]["scaffold_ce_ratio"] = 1.2
    ce.eval_result_metrics["scaffold_removed"]["ce_increase"] = 0.5
    assert sorted(f for f, _ in check_ce_ablation(ce)) == ["scaffold_removed.ce_increase", "summary.scaffold_ce_ratio"]
