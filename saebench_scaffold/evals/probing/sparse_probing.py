"""`sparse_probing`: can a few SAE latents linearly read out what the LLM's activations encode?

SAEBench's procedure, on the local labeled sets (Bias in Bios is not available offline):
  - per dataset a fixed, seeded, class-balanced sample; token activations at the hook (context 128)
    cached once per (model, hook, sample) and reused by every checkpoint;
  - LLM features = activations mean-pooled over non-special tokens; SAE features = per-token latents
    of the same tokens, mean-pooled with the same mask;
  - each class one-vs-rest, positives vs an equal number of negatives drawn evenly from the other
    classes (a 2-class set gets one probe, the other being its mirror);
  - latent selection: top-k by |mean over positives − mean over negatives| on the training split;
  - probe: sklearn LogisticRegression (L2, C = 1, max_iter 1000, raw features, as SAEBench's
    `train_sklearn_probe`; SAEBench trains its two all-features probes with a torch probe instead);
  - reported per dataset (details) and averaged over datasets, as mean ± std over resplits that
    reshuffle train/test within the cached sample (`_std`: sample std over resplits).
The scaffold is not a latent: sparse latents only, unless `include_scaffold_features` adds the
mean-pooled scaffold output (d_in dims), reported in its own `scaffold` category.
"""

from __future__ import annotations

import time

import torch
from pydantic import Field, field_validator

from ..base import EvalContext, Task, TaskOutput, sorted_positive_ints
from ..probes import fit_probe, mean_diff_order, small_ops
from .data import ProbingConfigBase, load_probing_set, one_vs_rest, probed_classes, resplit
from .features import pooled_scaffold, sae_pooled_cached
from .memo import memo_key, memoised_json
from ..stats import average_datasets, resplit_seeds, with_std
from ..declarations import SAEBenchExport, table_column
from .checks import check_per_dataset

DEFAULT_DATASETS = ["ag_news", "amazon_domain", "amazon_sentiment", "bbc_news", "europarl", "code_langid"]


class SparseProbingConfig(ProbingConfigBase):
    datasets: list[str] = Field(default_factory=lambda: list(DEFAULT_DATASETS))
    k_values: list[int] = Field(default_factory=lambda: [1, 2, 5, 10, 20, 50], description="SAEBench: [1, 2, 5]")
    standardize: bool = Field(False, description="z-score features before the probe (SAEBench does not)")
    include_scaffold_features: bool = Field(False, description="also probe the mean-pooled scaffold output, alone and "
                                            "appended to the latents (category `scaffold`)")

    @field_validator("k_values")
    @classmethod
    def _k_positive(cls, v):
        return sorted_positive_ints(v, "k_values")


@small_ops()
def probe_feature_sets(feature_sets: dict[str, torch.Tensor], labels: torch.Tensor, n_train: int, n_test: int,
                       seeds: list[int], k_values: list[int], C: float = 1.0, max_iter: int = 1000,
                       standardize: bool = False, all_features: bool = True) -> dict:
    """One-vs-rest probes on each feature set ({prefix: [n, d]}), every resplit seed.

    Returns {"per_resplit": {metric: [class-mean accuracy per seed]},
             "per_class": {metric: {class index: [accuracy per seed]}}} with metrics
    `{prefix}_test_accuracy` (all features) and `{prefix}_top_{k}_test_accuracy`. The binary
    examples of a (seed, class) are the same for every feature set."""
    n_classes = int(labels.max()) + 1
    per_resplit: dict[str, list[float]] = {}
    per_class: dict[str, dict[str, list[float]]] = {}

    def record(metric, cls, acc):
        per_class.setdefault(metric, {}).setdefault(str(cls), []).append(acc)

    for seed in seeds:
        train_idx, test_idx = resplit(labels, n_train, n_test, seed)
        for cls in probed_classes(n_classes):
            tr, ytr = one_vs_rest(labels, train_idx, cls, seed, salt=0)
            te, yte = one_vs_rest(labels, test_idx, cls, seed, salt=1)
            for prefix, x in feature_sets.items():
                xtr, xte = x[tr], x[te]
                if all_features:
                    probe = fit_probe(xtr, ytr, C, max_iter, standardize)
                    record(f"{prefix}_test_accuracy", cls, probe.accuracy(xte, yte))
                order = mean_diff_order(xtr, ytr)
                for k in k_values:
                    sel = order[:k]
                    probe = fit_probe(xtr[:, sel], ytr, C, max_iter, standardize)
                    record(f"{prefix}_top_{k}_test_accuracy", cls, probe.accuracy(xte[:, sel], yte))
        for metric, by_cls in per_class.items():
            vals = [v[-1] for v in by_cls.values()]
            per_resplit.setdefault(metric, []).append(sum(vals) / len(vals))
    return {"per_resplit": per_resplit, "per_class": per_class}


def category_of(metric: str) -> str:
    if metric.startswith(("scaffold_", "sae_plus_scaffold_")):
        return "scaffold"
    return metric.split("_", 1)[0]  # llm / sae


def nest(flat: dict[str, float]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for k, v in flat.items():
        out.setdefault(category_of(k), {})[k] = v
    return out


class SparseProbingTask(Task):
    name = "sparse_probing"
    description = "k-sparse probing of mean-pooled SAE latents vs LLM activations (SAEBench), mean ± std over resplits"
    version = 1
    Config = SparseProbingConfig
    summary_metrics = (("sparsity", "l0"), ("llm", "llm_test_accuracy"), ("sae", "sae_test_accuracy"),
                       ("sae", "sae_top_1_test_accuracy"), ("sae", "sae_top_5_test_accuracy"))

    presets = {"saebench": {"train_per_class": 4000, "test_per_class": 1000, "k_values": [1, 2, 5]}}
    metric_ranges = (
        ("sparsity.l0", 0, "d_sae"),
        ("details.l0", 0, "d_sae"),
        ("*_test_accuracy*", 0, 1),                 # means and per-split values
    )
    aggregate_check = staticmethod(check_per_dataset)
    leaderboard_columns = (
        table_column("probe top-1", ("sae", "sae_top_1_test_accuracy")),
        table_column("probe top-5", ("sae", "sae_top_5_test_accuracy")),
    )
    leaderboard_order = 20
    saebench_export = SAEBenchExport("sparse_probing", metric_categories=("llm", "sae"))

    def apply_limit(self, cfg: SparseProbingConfig, limit: int) -> SparseProbingConfig:
        return cfg.model_copy(update={"max_examples_per_dataset": limit})

    def run(self, ctx: EvalContext, sae, cfg: SparseProbingConfig) -> TaskOutput:
        seeds = resplit_seeds(ctx.seed, cfg.n_resplits)
        probe_args = dict(C=cfg.probe_C, max_iter=cfg.probe_max_iter, standardize=cfg.standardize)
        per_dataset, details, unstructured, datasets = {}, [], {"per_class": {}, "timings_s": {}}, []
        nonzero = tokens = 0
        for name in cfg.datasets:
            t0 = time.perf_counter()
            ps = load_probing_set(ctx, name, cfg)
            s = ps.sample
            split = (s.labels, s.n_train, s.n_test, seeds, cfg.k_values)
            t1 = time.perf_counter()
            key = memo_key("sparse_probing_llm", ps.cache.spec.key, s.n_train, s.n_test, seeds, cfg.k_values, probe_args)
            llm = memoised_json(ctx.cache_dir, key, lambda: probe_feature_sets({"llm": ps.pooled_llm}, *split, **probe_args))
            t2 = time.perf_counter()
            pooled = sae_pooled_cached(sae, ps.cache, cfg.batch_examples)
            t3 = time.perf_counter()
            sets = {"sae": pooled.latents}
            if cfg.include_scaffold_features:
                scaffold = pooled_scaffold(sae, ps.pooled_llm)
                sets["scaffold"] = scaffold
                sets["sae_plus_scaffold"] = torch.cat([pooled.latents, scaffold], dim=1)
            res = probe_feature_sets(sets, *split, **probe_args)
            t4 = time.perf_counter()
            runs = {**llm["per_resplit"], **res["per_resplit"]}
            per_dataset[name] = runs
            nonzero, tokens = nonzero + pooled.nonzero, tokens + pooled.n_tokens
            details.append({"dataset_name": name, "n_classes": len(s.classes), "n_probes": len(probed_classes(len(s.classes))),
                            "n_train_per_class": s.n_train, "n_test_per_class": s.n_test, "budget_capped": s.capped,
                            "l0": pooled.l0, "n_tokens": pooled.n_tokens, **with_std(runs),
                            **{f"{m}_per_split": v for m, v in runs.items()}})  # lets the leaderboard recheck mean ± std
            unstructured["per_class"][name] = {
                m: {s.classes[int(c)]: sum(v) / len(v) for c, v in by_cls.items()}
                for m, by_cls in {**llm["per_class"], **res["per_class"]}.items()}
            unstructured["timings_s"][name] = {"llm_cache_and_pool": t1 - t0, "llm_probes": t2 - t1,
                                               "sae_encode": t3 - t2, "sae_probes": t4 - t3}
            datasets.append(ps.dataset)
        metrics = nest(with_std(average_datasets(per_dataset)))
        metrics["sparsity"] = {"l0": nonzero / max(tokens, 1)}
        unstructured["resplit_seeds"] = seeds
        if cfg.include_scaffold_features:
            unstructured["scaffold_rank"] = sae.scaffold_rank
        return TaskOutput(metrics=metrics, details=details, unstructured=unstructured, datasets=datasets,
                          token_counts={"example_tokens": tokens})
