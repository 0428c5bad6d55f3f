"""`tpp` (targeted probe perturbation): does ablating the latents most tied to one class hurt that
class's probe, and only that one?

SAEBench's procedure (on amazon_domain and bbc_news by default; Bias in Bios is not available offline):
  - per class c, a one-vs-rest logistic-regression probe on mean-pooled LLM activations (balanced
    training data as in `sparse_probing`);
  - score of latent i for class c = clamp(mean pooled latent on positives − on negatives, ≥ 0)
    × (probe_c weight · decoder row i), on the training split (decoder rows as stored, as SAEBench);
  - ablate the top-N latents (N ∈ {2, 5, 10, 20, 50, 100, 500}, capped at d_sae; only latents with a
    non-zero score, as SAEBench) by zeroing them in latent space while keeping the SAE error and the
    scaffold: x' = decode(f_abl) + scaffold(x) + (x − x̂) = x − (f − f_abl) W_dec at every token,
    then mean-pool and re-test every class probe on its own balanced test set;
  - TPP for class c = (accuracy drop of probe c) − mean drop of the other probes; reported averaged
    over classes and datasets, with the intended and unintended parts.
Because x' − x is linear in the latents and pooling is a mean, the pooled edited activations are
pooled(x) − pooled(f)[:, S] W_dec[S] exactly; the task uses that form (one encoder pass per
checkpoint, shared with `sparse_probing`); `ablate_tokens` is the literal per-token version the
tests check it against.

Seed noise: every metric is mean ± std over resplits (`_std`); `compare_noise` flags a difference
between two checkpoints that is smaller than its spread (TPP fails reseed-noise tests at SAEBench's
canonical settings: Chanin 2026).
"""

from __future__ import annotations

import time

import torch
from pydantic import Field, field_validator

from ..base import EvalContext, Task, TaskOutput, sorted_positive_ints
from ..probes import LinearProbe, fit_probe, select_top_n, small_ops
from .data import ProbingConfigBase, load_probing_set, one_vs_rest, resplit
from .features import ablate_pooled, ablate_tokens, decoder_matrix, sae_pooled_cached
from .memo import memo_key, memoised_json
from ..stats import average_datasets, compare_noise, resplit_seeds, with_std
from ..declarations import SAEBenchExport, table_column
from .checks import check_per_dataset

__all__ = ["TPPTask", "TPPConfig", "compare_noise", "tpp_latent_scores", "select_top_n", "ablate_pooled",
           "ablate_tokens", "tpp_resplit", "decoder_matrix"]


class TPPConfig(ProbingConfigBase):
    datasets: list[str] = Field(default_factory=lambda: ["amazon_domain", "bbc_news"],
                                description="SAEBench: bias_in_bios set 1 and Amazon categories; ag_news also works")
    n_values: list[int] = Field(default_factory=lambda: [2, 5, 10, 20, 50, 100, 500],
                                description="numbers of latents ablated (capped at d_sae)")

    @field_validator("n_values")
    @classmethod
    def _n_positive(cls, v):
        return sorted_positive_ints(v, "n_values")


def tpp_latent_scores(pooled_f: torch.Tensor, y: torch.Tensor, probe_w: torch.Tensor, W_dec: torch.Tensor) -> torch.Tensor:
    """[d_sae] scores of every latent for one class, from the probe's (balanced) training data."""
    diff = (pooled_f[y == 1].double().mean(0) - pooled_f[y == 0].double().mean(0)).clamp_min(0)
    return diff * (W_dec.double() @ probe_w.double())


@small_ops()
def train_class_probes(pooled_llm: torch.Tensor, labels: torch.Tensor, train_idx: torch.Tensor, test_idx: torch.Tensor,
                       seed: int, C: float = 1.0, max_iter: int = 1000) -> list[dict]:
    """Per class: probe (w, b) on balanced training data and its clean accuracy (JSON-able)."""
    out = []
    for cls in range(int(labels.max()) + 1):
        tr, ytr = one_vs_rest(labels, train_idx, cls, seed, salt=0)
        te, yte = one_vs_rest(labels, test_idx, cls, seed, salt=1)
        probe = fit_probe(pooled_llm[tr], ytr, C, max_iter)
        out.append({"w": probe.w.tolist(), "b": probe.b, "clean_accuracy": probe.accuracy(pooled_llm[te], yte)})
    return out


@small_ops()
def tpp_resplit(pooled_llm: torch.Tensor, pooled_f: torch.Tensor, W_dec: torch.Tensor, labels: torch.Tensor,
                n_train: int, n_test: int, seed: int, n_values: list[int], probes: list[dict] | None = None,
                C: float = 1.0, max_iter: int = 1000) -> dict:
    """TPP of one resplit. Returns {"metrics": {tpp_threshold_N_*: class mean}, "per_class":
    {metric: {class: value}}, "clean_accuracy": {class: acc}}."""
    n_classes = int(labels.max()) + 1
    train_idx, test_idx = resplit(labels, n_train, n_test, seed)
    if probes is None:
        probes = train_class_probes(pooled_llm, labels, train_idx, test_idx, seed, C, max_iter)
    lin = [LinearProbe(torch.tensor(p["w"], dtype=torch.float64), p["b"]) for p in probes]
    clean = [p["clean_accuracy"] for p in probes]
    tests = [one_vs_rest(labels, test_idx, c, seed, salt=1) for c in range(n_classes)]
    pos = torch.full((labels.shape[0],), -1, dtype=torch.long)
    pos[test_idx] = torch.arange(test_idx.shape[0])
    llm_test, f_test = pooled_llm[test_idx], pooled_f[test_idx]
    per_class: dict[str, dict[str, float]] = {}
    for c in range(n_classes):
        tr, ytr = one_vs_rest(labels, train_idx, c, seed, salt=0)
        scores = tpp_latent_scores(pooled_f[tr], ytr, lin[c].w, W_dec)
        for n in n_values:
            edited = ablate_pooled(llm_test, f_test, W_dec, select_top_n(scores, n))
            drops = [clean[j] - lin[j].accuracy(edited[pos[tests[j][0]]], tests[j][1]) for j in range(n_classes)]
            unintended = sum(d for j, d in enumerate(drops) if j != c) / (n_classes - 1)
            for part, value in (("total_metric", drops[c] - unintended), ("intended_diff_only", drops[c]),
                                ("unintended_diff_only", unintended)):
                per_class.setdefault(f"tpp_threshold_{n}_{part}", {})[str(c)] = value
    metrics = {m: sum(v.values()) / len(v) for m, v in per_class.items()}
    return {"metrics": metrics, "per_class": per_class, "clean_accuracy": {str(c): a for c, a in enumerate(clean)}}


class TPPTask(Task):
    name = "tpp"
    description = ("targeted probe perturbation: ablate class-aligned latents (SAE error kept); "
                   "accuracy drop on the class − on the others")
    version = 1
    Config = TPPConfig
    summary_metrics = (("tpp_metrics", "tpp_threshold_10_total_metric"), ("tpp_metrics", "tpp_threshold_20_total_metric"),
                       ("tpp_metrics", "tpp_threshold_20_total_metric_std"))

    presets = {"saebench": {"train_per_class": 4000, "test_per_class": 1000}}
    metric_ranges = (
        ("sparsity.l0", 0, "d_sae"),
        ("details.l0", 0, "d_sae"),
        ("*.llm_test_accuracy*", 0, 1),
        ("*.tpp_threshold_*", -1, 1),               # differences of accuracies
    )
    aggregate_check = staticmethod(check_per_dataset)
    leaderboard_columns = (table_column("TPP@20", ("tpp_metrics", "tpp_threshold_20_total_metric")),)
    leaderboard_order = 30
    saebench_export = SAEBenchExport("tpp", metric_categories=("tpp_metrics",))

    def apply_limit(self, cfg: TPPConfig, limit: int) -> TPPConfig:
        return cfg.model_copy(update={"max_examples_per_dataset": limit})

    def run(self, ctx: EvalContext, sae, cfg: TPPConfig) -> TaskOutput:
        W_dec = decoder_matrix(sae)  # before any work: a checkpoint without decoder directions fails fast
        n_values = sorted({min(n, sae.d_sae) for n in cfg.n_values})
        seeds = resplit_seeds(ctx.seed, cfg.n_resplits)
        per_dataset, details, datasets = {}, [], []
        unstructured = {"n_values": n_values, "resplit_seeds": seeds, "per_class": {}, "timings_s": {}}
        nonzero = tokens = 0
        for name in cfg.datasets:
            t0 = time.perf_counter()
            ps = load_probing_set(ctx, name, cfg)
            s = ps.sample
            t1 = time.perf_counter()
            probes = []
            for seed in seeds:
                key = memo_key("tpp_llm_probes", ps.cache.spec.key, s.n_train, s.n_test, seed, cfg.probe_C,
                               cfg.probe_max_iter)
                probes.append(memoised_json(ctx.cache_dir, key, lambda seed=seed: train_class_probes(
                    ps.pooled_llm, s.labels, *resplit(s.labels, s.n_train, s.n_test, seed), seed, cfg.probe_C,
                    cfg.probe_max_iter)))
            t2 = time.perf_counter()
            pooled = sae_pooled_cached(sae, ps.cache, cfg.batch_examples)
            t3 = time.perf_counter()
            runs: dict[str, list[float]] = {}
            per_class: dict[str, dict[str, list[float]]] = {}
            for seed, pr in zip(seeds, probes):
                r = tpp_resplit(ps.pooled_llm, pooled.latents, W_dec, s.labels, s.n_train, s.n_test, seed, n_values, pr)
                clean = sum(r["clean_accuracy"].values()) / len(r["clean_accuracy"])
                for m, v in {**r["metrics"], "llm_test_accuracy": clean}.items():
                    runs.setdefault(m, []).append(v)
                for m, by_cls in {**r["per_class"], "llm_test_accuracy": r["clean_accuracy"]}.items():
                    for c, v in by_cls.items():
                        per_class.setdefault(m, {}).setdefault(s.classes[int(c)], []).append(v)
            t4 = time.perf_counter()
            per_dataset[name] = runs
            nonzero, tokens = nonzero + pooled.nonzero, tokens + pooled.n_tokens
            details.append({"dataset_name": name, "n_classes": len(s.classes), "n_train_per_class": s.n_train,
                            "n_test_per_class": s.n_test, "budget_capped": s.capped, "l0": pooled.l0,
                            "n_tokens": pooled.n_tokens, **with_std(runs),
                            **{f"{m}_per_split": v for m, v in runs.items()}})  # lets the leaderboard recheck mean ± std
            unstructured["per_class"][name] = {m: {c: sum(v) / len(v) for c, v in by_cls.items()}
                                               for m, by_cls in per_class.items()}
            unstructured["timings_s"][name] = {"llm_cache_and_pool": t1 - t0, "llm_probes": t2 - t1,
                                               "sae_encode": t3 - t2, "ablations": t4 - t3}
            datasets.append(ps.dataset)
        avg = with_std(average_datasets(per_dataset))
        metrics = {"tpp_metrics": {k: v for k, v in avg.items() if k.startswith("tpp_")},
                   "llm": {k: v for k, v in avg.items() if k.startswith("llm_")},
                   "sparsity": {"l0": nonzero / max(tokens, 1)}}
        return TaskOutput(metrics=metrics, details=details, unstructured=unstructured, datasets=datasets,
                          token_counts={"example_tokens": tokens})
