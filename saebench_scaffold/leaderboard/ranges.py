"""Possible ranges of every metric, per task, as one readable table.

A rule is (pattern, low, high). The pattern is matched (fnmatch) against `category.key` of
`eval_result_metrics`, or `details.key` of a row of `eval_result_details`; the first matching rule
wins, so specific rules come before general ones. `D_SAE` / `D_IN` stand for the checkpoint's own
sizes (from `sae_cfg_dict`). A list value (per-split accuracies) is checked element by element.
Metrics no rule matches are not range-checked. Matched values must be finite numbers.
Plugin tasks declare their own rules in the same format (`Task.metric_ranges`).
"""

from __future__ import annotations

import fnmatch
import math
from functools import lru_cache

INF = math.inf
D_SAE, D_IN = "d_sae", "d_in"

COMMON = [
    ("*_std", 0, INF),  # a spread is never negative
    ("*.n_tokens", 0, INF),
]

RANGES: dict[str, list[tuple[str, float | str, float | str]]] = {
    "core": [
        ("sparsity.l0", 0, D_SAE),
        ("sparsity.l1", 0, INF),
        ("density.dense_count_gt_*", 0, D_SAE),
        ("density.*", 0, 1),                     # frac_alive, frac_dead, dense_frac_gt_*, mean_density
        ("*.scaffold_fvu_alone", -INF, 1),
        ("*.fvu", 0, INF),                       # all-token and typical-token FVU
        ("*explained_variance*", -INF, 1),       # ours (= 1 - fvu) and SAEBench's own figures
        ("*.mse", 0, INF),
        ("*.cossim", -1, 1),
        ("*.l2_ratio", 0, INF),
        ("scaffold.scaffold_rank", 0, D_IN),
        ("*variance_share", 0, INF),             # can exceed 1 when scaffold and sparse parts anti-correlate
        ("typical_tokens.massive_token_frac", 0, 1),
        ("typical_tokens.massive_*", 0, INF),
        ("*.ce_loss_score", -INF, INF),          # finite; beyond [0, 1] when the SAE is worse than ablation
        ("*.ce_loss_*", 0, INF),                 # CE with / without SAE, with ablation (nats)
        ("*.kl_div_score", -INF, 1),
        ("*.kl_div_*", 0, INF),
        ("details.density", 0, 1),
        ("details.mean_activation_when_firing", 0, INF),
    ],
    "sparse_probing": [
        ("sparsity.l0", 0, D_SAE),
        ("details.l0", 0, D_SAE),
        ("*_test_accuracy*", 0, 1),              # means and per-split values
    ],
    "tpp": [
        ("sparsity.l0", 0, D_SAE),
        ("details.l0", 0, D_SAE),
        ("*.llm_test_accuracy*", 0, 1),
        ("*.tpp_threshold_*", -1, 1),            # differences of accuracies
    ],
    "scr": [
        ("sparsity.l0", 0, D_SAE),
        ("*_test_accuracy*", 0, 1),              # LLM probe accuracies, means and per-split values
        ("details.scr_metric_direction_per_seed", 1, 2),
        ("*.scr_*", -1000, 1000),                # (changed − original) / (clean − original), gap >= 0.001
        ("details.n_*_per_quadrant", 1, INF),
    ],
    "absorption": [
        ("mean.mean_num_split_features", 1, D_SAE),
        ("mean.std_dev_*", 0, INF),
        ("mean.*", 0, 1),                        # mean absorption fraction, full-absorption rate
        ("details.mean_absorption_fraction", 0, 1),
        ("details.full_absorption_rate", 0, 1),
        ("details.num_split_features", 1, D_SAE),
        ("details.split_feats", 0, D_SAE),       # latent indices, element by element
        ("details.num_full_absorption", 0, INF),
        ("details.num_probe_true_positives", 1, INF),
        ("details.sum_absorption_fraction", 0, INF),
        ("details.probe_*", 0, 1),               # ground-truth probe F1, precision, recall
        ("details.f1_sparse_sae", 0, 1),         # per k, element by element
        ("details.n_*_words", 1, INF),
        ("details.scaffold_probe_share", -INF, INF),
    ],
    "autointerp": [
        ("autointerp.*", 0, 1),                  # mean detection score and its std dev over latents
        ("latents.*", 0, D_SAE),                 # latents selected, alive, without examples, skipped, scored
        ("details.latent", 0, D_SAE),
        ("details.score", 0, 1),
        ("details.correct_seqs", 1, INF),        # example numbers, element by element
        ("details.n_examples", 1, INF),
        ("details.n_random_active", 0, INF),
        ("details.n_iw_candidates", 0, INF),
    ],
    "ce_ablation": [
        ("*.ce_increase", -INF, INF),
        ("*.ce_ratio*", 0, INF),
        ("*.ce", 0, INF),
        ("*.ce_ci_*", 0, INF),
        ("*.ci_level", 0, 1),
        ("summary.*_ce_ratio", 0, INF),
        ("subspaces.principal_angle_*_deg", 0, 90),
        ("*outlier_mass*", 0, 1),
        # 1 − Var(X − A)/Var(X): below 0 when the subtracted part A adds variance (Cov(X, A) small,
        # measured: Matryoshka r=24's aligned latents, −0.02); never above 1.
        ("*.variance_removed_frac", -INF, 1),
        ("*.rank", 0, D_IN),
    ],
    "mmlu_topic": [
        ("*.chance", 0, 1),
        ("*acc*", 0, 1),                         # accuracies, their CIs and per-split values
        ("*.n_examples", 0, INF),
        ("*.n_classes", 2, INF),
    ],
}


@lru_cache(maxsize=None)
def rule_for(task: str, field: str, task_rules: tuple = ()) -> tuple[float | str, float | str] | None:
    """`task_rules`: a plugin task's own `metric_ranges` (checked after the table's rules for it)."""
    for pattern, low, high in COMMON + RANGES.get(task, []) + list(task_rules):
        if fnmatch.fnmatchcase(field, pattern):
            return low, high
    return None


def check_rules(rules) -> tuple:
    """A task's declared `metric_ranges` as a hashable tuple; a malformed rule is a plugin bug, named."""
    out = []
    for rule in rules:
        ok = (isinstance(rule, (tuple, list)) and len(rule) == 3 and isinstance(rule[0], str)
              and all(b in (D_SAE, D_IN) or (isinstance(b, (int, float)) and not isinstance(b, bool)) for b in rule[1:]))
        if not ok:
            raise ValueError(f"metric range rule {rule!r} is not (pattern, low, high) with numbers, 'd_sae' or 'd_in'")
        out.append(tuple(rule))
    return tuple(out)


def out_of_range(task: str, field: str, value, sizes: dict[str, int], task_rules: tuple = ()) -> str | None:
    """Why `value` cannot be right for `field`, or None when it can (or no rule applies)."""
    rule = rule_for(task, field, task_rules)
    if rule is None or isinstance(value, (bool, str)) or value is None:
        return None
    values = value if isinstance(value, list) else [value]
    low, high = (sizes.get(b, INF) if isinstance(b, str) else b for b in rule)
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            return f"{v!r} is not a number"
        if not math.isfinite(v):
            return f"{v} is not finite"
        if not low <= v <= high:
            names = [f"{b} ({sizes[b]})" if isinstance(b, str) and b in sizes else f"{b:g}" if not isinstance(b, str) else b
                     for b in rule]
            return f"{v:g} is outside its possible range [{names[0]}, {names[1]}]"
    return None
