"""Headline metrics recomputed from what a result file itself holds (per-latent densities,
per-dataset and per-split accuracies, the CE / KL parts of a score, CE ratios from CEs). A headline that disagrees with
its own details beyond float tolerance was edited by hand or produced by broken code.

Each check returns a list of (field, message) problems.
"""

from __future__ import annotations

import math
import statistics

from ..evals.stats import average_datasets, mean_std
from ..results.schema import EvalResult

REL_TOL, ABS_TOL = 1e-6, 1e-9  # float round-off of sums taken in another order; far below any real change


def _close(a, b) -> bool:
    return isinstance(a, (int, float)) and math.isclose(a, b, rel_tol=REL_TOL, abs_tol=ABS_TOL)


def _compare(problems: list, field: str, recorded, recomputed: float, source: str) -> None:
    if recorded is None:
        return
    if not _close(recorded, recomputed):
        problems.append((field, f"{recorded!r} disagrees with {recomputed!r} recomputed from {source}"))


def _find(metrics: dict, key: str) -> tuple[str, object] | tuple[None, None]:
    """(category, value) of the first category holding `key` (layouts move metrics between categories)."""
    for category, values in metrics.items():
        if isinstance(values, dict) and key in values:
            return category, values[key]
    return None, None


def check_core(res: EvalResult) -> list[tuple[str, str]]:
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
    _compare(problems, "density.frac_dead", density.get("frac_dead"), sum(v == 0 for v in densities) / n, src)
    _compare(problems, "density.frac_alive", density.get("frac_alive"), sum(v > 0 for v in densities) / n, src)
    _compare(problems, "density.mean_density", density.get("mean_density"), math.fsum(densities) / n, src)
    for key, value in density.items():
        for prefix in ("dense_frac_gt_", "dense_count_gt_"):
            if key.startswith(prefix):
                count = sum(v > float(key[len(prefix):]) for v in densities)
                _compare(problems, f"density.{key}", value, count / n if "frac" in prefix else count, src)
    # L0 = Σ over latents of their firing rate (both count activations > 0 over the same tokens)
    _compare(problems, "sparsity.l0", m.get("sparsity", {}).get("l0"), math.fsum(densities), src)
    fvu = m.get("reconstruction_quality", {}).get("fvu")
    if isinstance(fvu, (int, float)):
        _compare(problems, "reconstruction_quality.explained_variance",
                 m["reconstruction_quality"].get("explained_variance"), 1 - fvu, "reconstruction_quality.fvu")
    _check_score(problems, m, "ce_loss_score", "ce_loss_with_ablation", "ce_loss_with_sae",
                 ("ce_loss_without_sae", "ce_loss_clean"))
    _check_score(problems, m, "kl_div_score", "kl_div_with_ablation", "kl_div_with_sae", None)
    return problems


def _check_score(problems, metrics, score_key, ablated_key, sae_key, clean_keys) -> None:
    """score = (ablated − with SAE) / (ablated − clean), clean being 0 for KL."""
    category, score = _find(metrics, score_key)
    if category is None:
        return
    parts = metrics[category]
    ablated, with_sae = parts.get(ablated_key), parts.get(sae_key)
    clean = 0.0 if clean_keys is None else next((parts[k] for k in clean_keys if k in parts), None)
    if not all(isinstance(v, (int, float)) for v in (ablated, with_sae, clean)) or ablated == clean:
        return
    _compare(problems, f"{category}.{score_key}", score, (ablated - with_sae) / (ablated - clean),
             f"{category}.{ablated_key} and .{sae_key}")


def check_per_dataset(res: EvalResult) -> list[tuple[str, str]]:
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
                _compare(problems, f"eval_result_details[{i}].{metric}", row.get(metric), mean, src)
                _compare(problems, f"eval_result_details[{i}].{metric}_std", row.get(f"{metric}_std"), std, src)
    metrics = res.eval_result_metrics
    complete = len(per_dataset) == len(details)
    averaged = average_datasets(per_dataset) if complete else {}
    for category, values in metrics.items():
        if category == "sparsity" or not isinstance(values, dict):
            continue
        for key, value in values.items():
            if key.endswith("_std"):
                if key[:-4] in averaged:
                    _compare(problems, f"{category}.{key}", value, mean_std(averaged[key[:-4]])[1],
                             "the per-split values in eval_result_details")
            elif key in averaged:
                _compare(problems, f"{category}.{key}", value, mean_std(averaged[key])[0],
                         "the per-split values in eval_result_details")
            elif all(isinstance(row.get(key), (int, float)) for row in details):
                _compare(problems, f"{category}.{key}", value, math.fsum(row[key] for row in details) / len(details),
                         "the per-dataset means in eval_result_details")
    l0 = metrics.get("sparsity", {}).get("l0")
    if all(isinstance(row.get("l0"), (int, float)) and isinstance(row.get("n_tokens"), int) for row in details):
        tokens = sum(row["n_tokens"] for row in details)
        if tokens:
            _compare(problems, "sparsity.l0", l0, math.fsum(row["l0"] * row["n_tokens"] for row in details) / tokens,
                     "the per-dataset L0 and token counts")
    return problems


def check_mmlu_topic(res: EvalResult) -> list[tuple[str, str]]:
    """Each condition's accuracy mean ± std from its per-split accuracies; the headline
    `<label set>.<condition>_acc` equal to its detail row's."""
    problems: list[tuple[str, str]] = []
    for i, row in enumerate(res.eval_result_details):
        splits = row.get("acc_per_split")
        if not isinstance(splits, list) or not splits:
            continue
        mean, std = mean_std(splits)
        src = f"eval_result_details[{i}].acc_per_split"
        _compare(problems, f"eval_result_details[{i}].acc", row.get("acc"), mean, src)
        _compare(problems, f"eval_result_details[{i}].acc_std", row.get("acc_std"), std, src)
        label_set, condition = row.get("label_set"), row.get("condition")
        recorded = res.eval_result_metrics.get(label_set, {}).get(f"{condition}_acc")
        _compare(problems, f"{label_set}.{condition}_acc", recorded, mean, src)
    return problems


def check_ce_ablation(res: EvalResult) -> list[tuple[str, str]]:
    """Each condition's CE ratio and increase from its CE and the clean CE; the summary ratios equal
    to their conditions'."""
    from ..evals.ablation.ce_ablation import SUMMARY

    problems: list[tuple[str, str]] = []
    m = res.eval_result_metrics
    clean = m.get("clean", {}).get("ce")
    if not isinstance(clean, (int, float)) or clean <= 0:
        return [("clean.ce", "the clean CE is missing")]
    for name, values in m.items():
        ce = values.get("ce") if isinstance(values, dict) else None
        if name == "clean" or not isinstance(ce, (int, float)):
            continue
        _compare(problems, f"{name}.ce_ratio", values.get("ce_ratio"), ce / clean, f"{name}.ce and clean.ce")
        _compare(problems, f"{name}.ce_increase", values.get("ce_increase"), ce - clean, f"{name}.ce and clean.ce")
    for short, name in SUMMARY.items():
        ratio = m.get(name, {}).get("ce_ratio")
        if isinstance(ratio, (int, float)):
            _compare(problems, f"summary.{short}_ce_ratio", m.get("summary", {}).get(f"{short}_ce_ratio"), ratio,
                     f"{name}.ce_ratio")
    return problems


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def check_absorption(res: EvalResult) -> list[tuple[str, str]]:
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
                _compare(problems, f"{at}.full_absorption_rate", row.get("full_absorption_rate"),
                         row["num_full_absorption"] / n, f"{at}.num_full_absorption / num_probe_true_positives")
            if _number(row.get("sum_absorption_fraction")):
                _compare(problems, f"{at}.mean_absorption_fraction", row.get("mean_absorption_fraction"),
                         row["sum_absorption_fraction"] / n, f"{at}.sum_absorption_fraction / num_probe_true_positives")
        if isinstance(row.get("split_feats"), list):
            _compare(problems, f"{at}.num_split_features", row.get("num_split_features"), len(row["split_feats"]),
                     f"{at}.split_feats")
    mean = res.eval_result_metrics.get("mean", {})
    for name, key in (("absorption_fraction_score", "mean_absorption_fraction"),
                      ("full_absorption_score", "full_absorption_rate"), ("num_split_features", "num_split_features")):
        values = [row.get(key) for row in rows]
        if not all(_number(v) for v in values):
            continue
        _compare(problems, f"mean.mean_{name}", mean.get(f"mean_{name}"), statistics.mean(values), "the per-letter rows")
        _compare(problems, f"mean.std_dev_{name}", mean.get(f"std_dev_{name}"),
                 statistics.stdev(values) if len(values) > 1 else 0.0, "the per-letter rows")
    return problems


def check_autointerp(res: EvalResult) -> list[tuple[str, str]]:
    """autointerp: each latent's score from its predictions and the examples that were active (the
    fraction of its n_examples classified correctly; numbers outside 1..n count as no prediction, as
    in SAEBench); the headline mean and sample std dev over the latents' scores; the count scored."""
    problems: list[tuple[str, str]] = []
    rows = res.eval_result_details
    if not rows:
        return [("eval_result_details", "per-latent rows missing")]
    for i, row in enumerate(rows):
        predictions, correct, n = row.get("predictions"), row.get("correct_seqs"), row.get("n_examples")
        if isinstance(predictions, list) and isinstance(correct, list) and isinstance(n, int) and n > 0:
            predicted = {p for p in predictions if isinstance(p, int) and 1 <= p <= n}
            wrong = len(predicted ^ set(correct))
            _compare(problems, f"eval_result_details[{i}].score", row.get("score"), (n - wrong) / n,
                     f"eval_result_details[{i}].predictions and .correct_seqs")
    scores = [row.get("score") for row in rows]
    headline = res.eval_result_metrics.get("autointerp", {})
    if all(_number(v) for v in scores):
        _compare(problems, "autointerp.autointerp_score", headline.get("autointerp_score"), statistics.mean(scores),
                 "the per-latent scores")
        _compare(problems, "autointerp.autointerp_std_dev", headline.get("autointerp_std_dev"),
                 statistics.stdev(scores) if len(scores) > 1 else 0.0, "the per-latent scores")
    _compare(problems, "latents.n_scored", res.eval_result_metrics.get("latents", {}).get("n_scored"), len(rows),
             "the number of per-latent rows")
    return problems


CHECKS = {"core": check_core, "sparse_probing": check_per_dataset, "tpp": check_per_dataset, "scr": check_per_dataset, "absorption": check_absorption,
          "autointerp": check_autointerp, "mmlu_topic": check_mmlu_topic, "ce_ablation": check_ce_ablation}


def check_aggregates(res: EvalResult) -> list[tuple[str, str]]:
    check = CHECKS.get(res.eval_type_id)
    return check(res) if check else []
