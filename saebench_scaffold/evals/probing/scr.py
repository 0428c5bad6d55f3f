"""`scr` (spurious correlation removal, SHIFT): a probe trained where two attributes are perfectly
correlated learns both; ablating the SAE latents of one attribute should free the probe to read the
other.

Two designs of the data (`design`; 'auto' picks the first when its data is there):
  - 'saebench': SAEBench's own sets, pairs and names where the data directory holds them (or, with
    no data directory, from the hub): Bias in Bios (profession × gender; professor/nurse,
    architect/journalist, surgeon/psychologist, attorney/teacher) and McAuley's Amazon reviews (category
    × 1 vs 5 stars; Books/CDs_and_Vinyl, Software/Electronics, Pet_Supplies/Office_Products,
    Industrial_and_Scientific/Toys_and_Games), column-2 values (male, female) and (1.0, 5.0). Train
    quadrants are the first q rows of each cell of the hub's train split, test quadrants of its test
    split, in file order, as `dataset_creation.get_spurious_corr_data` takes them; budgets uncapped
    (SAEBench's 4000 / 1000 with `--preset saebench`); headline `scr_metric_threshold_N`, averaged
    over the 8 pairs, per-pair rows named `<SAEBench dataset>_scr_<a>_<b>_results`. The layout of the
    files: sources/data/two_label.py.
  - 'columns': a file labelled twice (two registered datasets reading it; default the 2007
    multi-domain reviews: domain × sentiment, every pair of its 4 domains), the headline named by its
    data set (`scr_amazon2007_metric_threshold_N`): a number under SAEBench's name means what
    SAEBench's means.
SAEBench 0.6.0's procedure (`sae_bench/evals/scr_and_tpp/main.py`, `perform_scr=True`), on texts
labelled twice: column 1 (profession, Amazon category; here also the 2007 reviews' domain), column 2
(gender, rating; the 2007 reviews' sentiment). For every pair of column-1 values (a, b), with
column-2 values (p, n) in SAEBench's order ((male, female), (1.0, 5.0); the 2007 reviews: (negative,
positive)):
  - quadrants (SAEBench's names) pos_pos = (a, p), pos_neg = (b, p), neg_pos = (a, n),
    neg_neg = (b, n); with q examples per quadrant (train_set_size // 4) the six example sets of
    `dataset_creation.get_spurious_corr_data`, shuffled as it does (`spurious_corr_sets`):
      column2 = pos_pos[:q] + pos_neg[:q]  vs column2_neg = neg_pos[:q] + neg_neg[:q]  ("male / female")
      column1 = pos_pos[:q] + neg_pos[:q]  vs column1_neg = pos_neg[:q] + neg_neg[:q]  ("professor / nurse")
      biased  = pos_pos[:2q]              vs biased_neg  = neg_neg[:2q]               ("male_professor / female_nurse")
    and the same from disjoint test quadrants (test_set_size // 4);
  - three LLM probes on mean-pooled activations (column1, column2, biased), each with SAEBench's
    torch trainer (`probe_training.train_probe_gpu`: AdamW lr 1e-3, BCE + 1e-3·|w|₁, batch 16,
    20 epochs, the epoch with the best accuracy on the probe's own test set kept);
  - latent effects for ablating attribute k ∈ {column1, column2}: |(mean pooled latents on k's
    positives − on its negatives, training sets) × (W_dec row · probe_k weight)|; top-N latents with
    a non-zero effect, N ∈ {2, 5, 10, 20, 50, 100, 500} (capped at d_sae, as `tpp` does);
  - ablation keeping the SAE error (and the scaffold): x' = x − (f − f_abl) W_dec at every token,
    mean-pooled; with `ablate_padding` (default, as SAEBench's `ablated_precomputed_activations`)
    the edit also reaches the zeroed BOS/padding positions, where it adds −f(0)[S] W_dec[S] each
    (non-zero for SAEs that fire on a zero vector, e.g. TopK) before dividing by the real tokens;
  - dir1 = ablate column-2 latents, biased probe on column-1 test data; dir2 = the reverse;
    scr_dir{d}_threshold_N = (changed − original) / (clean − original) (0 when clean − original
    < 0.001), clean = the attribute's own probe, original = the biased probe before ablation;
    scr_metric_threshold_N = dir1 when the biased probe is worse on column-1 data than on column-2
    data, else dir2 (SAEBench's documented rule; its code leaves a tie undefined);
  - averaged over pairs (SAEBench's `average_results_dictionaries`), per pair in details.
Where we differ, and why:
  - Seeds (both designs): SAEBench runs one seed (random_seed 42). Here metrics are mean ± std over
    `n_seeds`; in SAEBench's design seed i shuffles the same rows' sets with random_seed + i (42 for
    the first, as SAEBench) and reseeds the probes, so the spread is probe-training noise only.
The columns design on the 2007 reviews also differs in its data:
  - Pairs: every pair of the file's 4 domains (6; SAEBench: 4 pairs of its 8 Amazon categories).
  - SAEBench takes train and test quadrants from the hub's train and test splits; the local file has
    one split of 1,000 reviews per (domain, sentiment) cell, so a fixed seeded sample of
    2(q_train + q_test) reviews per cell (pos_pos needs 2q) is cached once and each seed splits it
    into train and test quadrants. Budgets: 400 / 200 examples per probe by default (100 / 50 per
    quadrant, ~2,400 reviews cached); SAEBench's 4000 / 1000 (`--preset saebench`) are more than the
    file holds and are lowered keeping the ratio to 400 / 100 per quadrant (`budget_capped`).
  - Seeds: SAEBench seeds torch once per run and trains every probe from that stream; we seed each
    probe from (seed, pair, probe), so a probe does not depend on which other pairs run (memo,
    --limit). Metrics are mean ± std over seeds, each seed also resplitting train/test (`_std`;
    `compare_noise` flags checkpoint differences within the spread).
  - SAEBench also trains probes on the three `_data_only` sets and ablates the biased probe's own
    latents; neither enters the SCR numbers, so neither is done here.
Equality with SAEBench's own functions is tested in tests/evals/test_scr_saebench.py (the procedure)
and tests/evals/test_scr_saebench_data.py (SAEBench's design: its config, its example sets from the
same files, its averaging, the export rule).

The code: this module is the task (`SCRTask`, `choose_design`); `scr_config.py` its settings,
`scr_names.py` SAEBench's sets and the metric names, `scr_columns.py` and `scr_saebench.py` the two
designs' example sets, `scr_shift.py` the procedure both share (probes, latent effects, ablation, score).
"""

from __future__ import annotations

import math
import sys
import time

from ...activations.cache import get_example_cache
from ...sources import data
from ..base import EvalContext, Task, TaskOutput
from ..declarations import SAEBenchExport, table_column
from ..stats import average_datasets, resplit_seeds, with_std
from .checks import check_per_dataset
from .features import decoder_matrix, sae_pooled_cached
from .memo import memo_key, memoised_json
from .scr_columns import columns_group, plan_quadrants, sample_cells, split_cells, two_label_examples
from .scr_config import COLUMN_SETTINGS, SCRConfig
from .scr_names import (DIRECTION_KEY, SAEBENCH_SCR_SETS, columns_prefix, metric_prefix, not_saebench_data,
                        read_legacy, renamed, saebench_design_prefix)
from .scr_saebench import saebench_groups, saebench_quadrants, saebench_split_sample
from .scr_shift import (PROBES, SAEBENCH_SET_NAMES, ablated_pooled, labelled, padding_leak, pair_sets, probe_seed,
                        scr_from_accuracies, scr_latent_effects, scr_score, scr_scores, spurious_corr_sets,
                        train_llm_probes, train_probe)

# the task, and (re-exported) the names of the modules it is built from
__all__ = ["SCRTask", "SCRConfig", "SAEBENCH_SET_NAMES", "sample_cells", "split_cells", "spurious_corr_sets",
           "pair_sets", "train_probe", "train_llm_probes", "scr_latent_effects", "ablated_pooled", "scr_score",
           "scr_from_accuracies", "scr_scores", "padding_leak", "two_label_examples", "labelled", "probe_seed",
           "metric_prefix", "renamed", "read_legacy", "SAEBENCH_SCR_SETS", "choose_design", "columns_prefix",
           "saebench_design_prefix", "saebench_groups", "saebench_quadrants", "saebench_split_sample",
           "PROBES", "plan_quadrants", "not_saebench_data"]


def choose_design(cfg: SCRConfig, data_dir=None) -> str:
    """'saebench' or 'columns' (see `SCRConfig.design`). 'auto' says 'saebench' only when every one of
    SAEBench's sets can be read and none of the column settings was changed."""
    if cfg.design != "auto":
        return cfg.design
    if set(COLUMN_SETTINGS) & cfg.model_fields_set:
        return "columns"
    present = [d for d in SAEBENCH_SCR_SETS if data.two_label_available(d, data_dir)]
    if len(present) == len(SAEBENCH_SCR_SETS):
        return "saebench"
    if present:
        print(f"note: scr: the data directory holds {', '.join(present)} but not all of SAEBench's SCR sets "
              f"({', '.join(SAEBENCH_SCR_SETS)}); running on {cfg.column1_dataset} (--set scr.design=saebench runs "
              "SAEBench's design on what is there)", file=sys.stderr)
    return "columns"


LLM_ACCURACY_NAMES = {"column1": "llm_column1_test_accuracy", "column2": "llm_column2_test_accuracy",
                      "biased": "llm_biased_test_accuracy", "biased_on_column1": "llm_biased_on_column1_test_accuracy",
                      "biased_on_column2": "llm_biased_on_column2_test_accuracy"}


class SCRTask(Task):
    name = "scr"
    description = ("spurious correlation removal (SHIFT): ablate one attribute's latents (SAE error kept) and "
                   "measure how far a biased probe moves to the other attribute; SAEBench's sets, pairs and names "
                   "where its data is present, else the 2007 Amazon reviews under their own name")
    version = 1
    Config = SCRConfig
    # SAEBench's names on its data, the 2007 reviews' names on those (a result holds one or the other)
    summary_metrics = tuple(("scr_metrics", f"{p}_metric_threshold_{n}") for p in ("scr", "scr_amazon2007")
                            for n in ("10", "20", "20_std"))

    presets = {"saebench": {"train_set_size": 4000, "test_set_size": 1000}}
    metric_ranges = (
        ("sparsity.l0", 0, "d_sae"),
        ("*_test_accuracy*", 0, 1),                 # LLM probe accuracies, means and per-split values
        ("details.scr_metric_direction_per_seed", 1, 2),
        ("*.scr_*", -1000, 1000),                   # (changed − original) / (clean − original), gap >= 0.001
        ("details.n_*_per_quadrant", 1, math.inf),
    )
    aggregate_check = staticmethod(check_per_dataset)
    # SAEBench's figure on its data; the 2007 reviews' under their own name (a result has one or the other)
    leaderboard_columns = (table_column("SCR@20", ("scr_metrics", "scr_metric_threshold_20")),
                           table_column("SCR@20 amazon2007", ("scr_metrics", "scr_amazon2007_metric_threshold_20")))
    leaderboard_order = 40
    saebench_export = SAEBenchExport("scr", metric_categories=("scr_metrics",), not_saebench=not_saebench_data)

    def apply_limit(self, cfg: SCRConfig, limit: int) -> SCRConfig:
        return cfg.model_copy(update={"max_examples": limit})

    def run(self, ctx: EvalContext, sae, cfg: SCRConfig) -> TaskOutput:
        W_dec = decoder_matrix(sae, "scr")  # before any work: a checkpoint without decoder directions fails fast
        design = choose_design(cfg, ctx.data_dir)
        # the result's eval_config records the design that ran, not 'auto': `leaderboard verify` re-runs
        # from it, and must not switch data sets on a machine whose data dir differs
        cfg.design = design
        seeds = resplit_seeds(ctx.seed, cfg.n_seeds)
        t0 = time.perf_counter()
        if design == "saebench":  # read once per invocation: every checkpoint scores the same sets
            key = ("scr_saebench_groups", tuple(cfg.saebench_datasets), cfg.train_set_size, cfg.test_set_size,
                   cfg.max_examples, cfg.random_seed, tuple(seeds), str(ctx.data_dir))
            if key not in ctx.memo:
                ctx.memo[key] = saebench_groups(cfg, seeds, ctx.data_dir)
            groups = ctx.memo[key]
            datasets = [ctx.dataset_id(g.dataset) for g in groups]
            prefix = saebench_design_prefix(cfg.saebench_datasets)
            data_set = {"design": design, "datasets": {g.dataset: d for g, d in zip(groups, datasets)},
                        "saebench_names": [g.detail_prefix for g in groups], "random_seed": cfg.random_seed}
        else:
            groups = [columns_group(cfg, seeds, ctx.data_dir)]
            datasets = [ctx.dataset_id(cfg.column1_dataset), ctx.dataset_id(cfg.column2_dataset)]
            prefix = columns_prefix(datasets[0])
            data_set = {"design": design, "column1": datasets[0], "column2": datasets[1]}
        data_set.update(metric_prefix=prefix, saebench_data=prefix == "scr")
        n_values = sorted({min(n, sae.d_sae) for n in cfg.n_values})
        probe_cfg = cfg.model_dump(include={"probe_train_batch_size", "probe_test_batch_size", "probe_epochs", "probe_lr",
                                            "probe_l1_penalty", "early_stopping_patience"})
        timings = dict.fromkeys(("llm_cache_and_pool", "llm_probes", "sae_encode", "ablations"), 0.0)
        per_pair, details, latents, l0s, n_tokens = {}, [], {}, [], 0
        for g in groups:
            cache = get_example_cache(ctx.lm, ctx.hook, g.cache_name, g.texts, cfg.context_length,
                                      cache_root=ctx.cache_dir, progress=ctx.progress)
            pooled_llm = cache.mean_pooled().float()
            t1 = time.perf_counter()
            llm = {}
            for pair, seed in g.sets:
                key = memo_key("scr_llm_probes", cache.spec.key, pair, g.column2_values, seed, g.n_train, g.n_test,
                               probe_cfg, *g.memo_extra)
                llm[pair, seed] = memoised_json(ctx.cache_dir, key, lambda pair=pair, seed=seed, g=g: train_llm_probes(
                    pooled_llm, *g.sets[pair, seed], seed, pair, cfg))
            t2 = time.perf_counter()
            pooled = sae_pooled_cached(sae, cache, cfg.batch_examples)
            leak = padding_leak(sae, cache) if cfg.ablate_padding else None
            l0s.append((pooled.l0, pooled.n_tokens))
            n_tokens += pooled.n_tokens
            t3 = time.perf_counter()
            for pair in g.pairs:
                name = f"{g.detail_prefix}_scr_{pair[0]}_{pair[1]}_results"  # SAEBench's per-pair dataset_name
                runs: dict[str, list[float]] = {}
                directions = []
                for seed in seeds:
                    r = scr_scores(pooled_llm, pooled.latents, W_dec, *g.sets[pair, seed], llm[pair, seed], n_values,
                                   cfg.probe_test_batch_size, leak)
                    accuracies = {LLM_ACCURACY_NAMES[k]: v for k, v in llm[pair, seed]["accuracy"].items()}
                    for m, v in {**r["metrics"], **accuracies}.items():
                        runs.setdefault(m, []).append(v)
                    directions.append(r["direction"])
                    latents.setdefault(name, []).append(r["latents"])
                per_pair[name] = runs
                details.append(renamed({
                    "dataset_name": name, **({"data_set": g.dataset} if design == "saebench" else {}),
                    "column1_pair": list(pair), "column2_values": list(g.column2_values),
                    "n_train_per_quadrant": g.n_train, "n_test_per_quadrant": g.n_test,
                    "budget_capped": g.capped, DIRECTION_KEY: directions,
                    **with_std(runs), **{f"{m}_per_split": v for m, v in runs.items()}}, prefix))
            t4 = time.perf_counter()
            for k, dt in zip(timings, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
                timings[k] += dt
            t0 = t4
        avg = with_std(average_datasets(per_pair))  # per seed the mean over pairs, then mean ± std over seeds
        # token-weighted over the groups' examples (one group: its own L0)
        l0 = l0s[0][0] if len(l0s) == 1 else sum(v * n for v, n in l0s) / max(1, n_tokens)
        metrics = {"scr_metrics": renamed({k: v for k, v in avg.items() if k.startswith("scr_")}, prefix),
                   "llm": {k: v for k, v in avg.items() if k.startswith("llm_")},
                   "sparsity": {"l0": l0}}
        unstructured = {"data_set": data_set, "n_values": n_values, "n_values_requested": cfg.n_values, "seeds": seeds}
        if design == "saebench":  # the first rows of each cell, per split; seeds reshuffle the sets and probes only
            unstructured.update(shuffle_seeds=list(groups[0].shuffle_seed.values()),
                                rows_read_per_cell={g.dataset: {"train": 2 * g.n_train, "test": 2 * g.n_test}
                                                    for g in groups},
                                available_per_cell={g.dataset: g.available for g in groups})
        else:
            unstructured.update(examples_per_cell=2 * (groups[0].n_train + groups[0].n_test),
                                available_per_cell=groups[0].available)
        unstructured.update(top_latents_per_seed=latents, timings_s=timings)
        return TaskOutput(metrics=metrics, details=details, unstructured=unstructured, datasets=datasets,
                          token_counts={"example_tokens": n_tokens})
