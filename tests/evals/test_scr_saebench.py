"""Our `scr` equals SAEBench 0.6.0's own SCR code (`sae_bench.evals.scr_and_tpp`) on identical inputs.

SAEBench's entry point wants a HookedTransformer and a hub dataset, so its inner functions are fed
the same example sets and tensors: token activations of a fake LM (zeroed at BOS / padding, as its
activation collection does) and their mean-pooled form. Compared, step by step:
  - the six biased / balanced example sets (`dataset_creation.get_spurious_corr_data`);
  - the three LLM probes (`probe_training.train_probe_on_activations`, its torch trainer, seeded
    the same way): weights bit for bit, and the clean accuracies (`main.get_probe_test_accuracy`);
  - latent effects (`main.get_all_node_effects_for_one_sae`) and the top-N selection;
  - ablated pooled activations (`main.ablated_precomputed_activations`, padding positions included);
  - the ablated accuracies and dir1 / dir2 / scr_metric (`main.perform_feature_ablations`,
    `main.get_scr_plotting_dict`);
  - the average over pairs (`general_utils.average_results_dictionaries`).
Every step runs on every pair of the data set (6) and two seeds; the SAE kinds take turns.
Tolerances: probe weights and every accuracy and score must be equal (same float32 operations in
the same order); effects and ablated activations are computed in float64 here and float32 there,
so they agree to float32 round-off (rtol 1e-4 / atol 1e-4), and the latents selected are the same.
"""

from __future__ import annotations

import os
import random
from types import SimpleNamespace

import pandas as pd
import pytest
from helpers.peers import peer_import
import torch

os.environ.setdefault("JAXTYPING_DISABLE", "1")
sb_main = peer_import("sae_bench.evals.scr_and_tpp.main")

from sae_bench.evals.scr_and_tpp import dataset_creation as sb_data  # noqa: E402
from sae_bench.evals.sparse_probing import probe_training as sb_probe  # noqa: E402
from sae_bench.sae_bench_utils import activation_collection as sb_acts  # noqa: E402
from sae_bench.sae_bench_utils import dataset_info as sb_info  # noqa: E402
from sae_bench.sae_bench_utils import general_utils as sb_general  # noqa: E402

from helpers.probing_fakes import FakeLM, random_sae, write_labeled_data  # noqa: E402
from saebench_scaffold.activations.cache import get_example_cache  # noqa: E402
from saebench_scaffold.evals.probes import select_top_n, small_ops  # noqa: E402
from saebench_scaffold.evals import stats  # noqa: E402
from saebench_scaffold.evals.probing import features  # noqa: E402
from saebench_scaffold.evals.probing.scr import (PROBES, SAEBENCH_SET_NAMES as SB, SCRConfig, ablated_pooled,  # noqa: E402
                                         padding_leak, pair_sets, probe_seed, sample_cells, scr_from_accuracies,
                                         scr_latent_effects, scr_scores, split_cells, spurious_corr_sets,
                                         train_llm_probes, two_label_examples)

AMAZON = "canrager/amazon_reviews_mcauley_1and5"
# our domains -> SAEBench Amazon categories (any four do)
CATEGORY = {"books": "Books", "dvd": "CDs_and_Vinyl", "electronics": "Electronics", "kitchen": "Home_and_Kitchen"}
RATING = {"negative": 1.0, "positive": 5.0}  # SAEBench's column-2 order (1.0, 5.0)
PAIRS = SCRConfig().column1_pairs  # every pair of the data set (6), as the task runs them
SEEDS = (7, 11)
CASES = [(pair, seed) for seed in SEEDS for pair in PAIRS]
N_VALUES = [2, 5, 10, 20]
CHOSEN = list(sb_info.PAIRED_CLASS_KEYS)  # the three probes SCR uses
ACCURACY_KEYS = {"column1": "professor / nurse", "column2": "male / female", "biased": "male_professor / female_nurse",
                 "biased_on_column1": "male_professor / female_nurse probe on professor / nurse data",
                 "biased_on_column2": "male_professor / female_nurse probe on male / female data"}


@pytest.fixture(scope="module")
def sampled(tmp_path_factory):
    """Our sample of the fake Amazon file (4 domains × 2 sentiments) and its cached token activations."""
    tmp = tmp_path_factory.mktemp("scr_saebench")
    data = write_labeled_data(tmp / "data", per_class=80)
    cfg = SCRConfig(train_set_size=48, test_set_size=24)
    sample = sample_cells(two_label_examples("amazon_domain", "amazon_sentiment", str(data)), cfg)
    cache = get_example_cache(FakeLM(32), "blocks.0.hook_resid_post", "scr_saebench", sample.texts, cfg.context_length,
                              cache_root=tmp / "cache", progress=False)
    acts, mask = (torch.cat(t) for t in zip(*cache.iter_batches()))
    return SimpleNamespace(cfg=cfg, sample=sample, cache=cache, pooled_llm=cache.mean_pooled().float(),
                           acts_BLD=acts * mask.unsqueeze(-1))  # SAEBench zeroes BOS / padding and later skips zeros


@pytest.fixture(scope="module", params=CASES, ids=[f"{a}-{b}-seed{s}" for (a, b), s in CASES])
def example_set(request, sampled):
    """One (pair, seed)'s sets: every pair of the data set, two seeds."""
    pair, seed = request.param
    split = split_cells(sampled.sample, seed)
    c = sampled.cfg
    return SimpleNamespace(**vars(sampled), pair=pair, seed=seed, split=split, kind=KINDS[CASES.index(request.param) % 3],
                           train=pair_sets(split, pair, c.column2_values, False, sampled.sample.n_train, seed),
                           test=pair_sets(split, pair, c.column2_values, True, sampled.sample.n_test, seed))


def by_saebench_key(tensor: torch.Tensor, sets: dict[str, list[int]]) -> dict[str, torch.Tensor]:
    return {SB[name]: tensor[idx] for name, idx in sets.items()}


@pytest.fixture(scope="module")
def probes(example_set):
    """Our three LLM probes and SAEBench's, each trained by its own code from the same seed."""
    e = example_set
    ours = train_llm_probes(e.pooled_llm, e.train, e.test, e.seed, e.pair, e.cfg)
    theirs = {}
    with small_ops():  # the same thread count as ours, so float32 reductions match bit for bit
        for name in PROBES:
            keys = [name, name + "_neg"]
            torch.manual_seed(probe_seed(e.seed, e.pair, name))
            trained, _ = sb_probe.train_probe_on_activations(
                by_saebench_key(e.pooled_llm, {k: e.train[k] for k in keys}),
                by_saebench_key(e.pooled_llm, {k: e.test[k] for k in keys}),
                select_top_k=None, use_sklearn=False, batch_size=e.cfg.probe_train_batch_size, epochs=e.cfg.probe_epochs,
                lr=e.cfg.probe_lr, perform_scr=True, early_stopping_patience=e.cfg.early_stopping_patience,
                l1_penalty=e.cfg.probe_l1_penalty)
            theirs[SB[name]] = trained[SB[name]]  # the first key's probe: trained from the seed just set
    torch.set_grad_enabled(True)  # SAEBench's trainer leaves gradients globally disabled
    return ours, theirs


def _frame(quadrants: dict[tuple[str, str], list[int]]) -> pd.DataFrame:
    """SAEBench's Amazon dataframe holding our example indices as text, quadrant by quadrant in our
    order, plus one extra row per quadrant at the end (its sanity check wants more than 2q rows)."""
    category = {c1: sb_info.amazon_category_dict[name] for c1, name in CATEGORY.items()}  # the hub stores ids
    rows = [(category[c1], RATING[c2], str(i)) for (c1, c2), idx in quadrants.items() for i in idx]
    rows += [(category[c1], RATING[c2], "extra") for c1, c2 in quadrants]
    return pd.DataFrame(rows, columns=["category", "rating", "text"])


def test_biased_sets_equal_get_spurious_corr_data(example_set):
    e = example_set
    pair_cells = {(c1, c2): None for c1 in e.pair for c2 in e.cfg.column2_values}
    for test, q in ((False, e.sample.n_train), (True, e.sample.n_test)):
        df = _frame({cell: e.split[cell][int(test)] for cell in pair_cells})
        theirs = sb_data.get_spurious_corr_data(df, tuple(CATEGORY[v] for v in e.pair), tuple(RATING.values()), AMAZON,
                                                q, e.seed)
        ours = pair_sets(e.split, e.pair, e.cfg.column2_values, test, q, e.seed)
        assert {SB[k]: [str(i) for i in v] for k, v in ours.items()} == theirs, test
    # the quadrants are read from the front of SAEBench's dataframe; a shorter budget takes a prefix
    a, b, c, d = (list(range(s, s + 9)) for s in (0, 100, 200, 300))
    small = spurious_corr_sets(a, b, c, d, 4, 5)
    assert sorted(small["biased"]) == a[:8] and sorted(small["column2"]) == a[:4] + b[:4]


def test_pooled_activations_equal_saebench_mean(sampled):
    e = sampled
    theirs = sb_acts.create_meaned_model_activations({"all": e.acts_BLD})["all"]
    assert torch.allclose(theirs, e.pooled_llm, rtol=1e-5, atol=1e-6)


def test_llm_probes_and_clean_accuracies_equal_saebench(example_set, probes):
    e = example_set
    ours, theirs = probes
    for name in PROBES:
        probe = theirs[SB[name]]
        assert torch.equal(torch.tensor(ours["probes"][name]["w"], dtype=torch.float32), probe.net.weight.detach()[0]), name
        assert ours["probes"][name]["b"] == probe.net.bias.item(), name
    with torch.no_grad():
        clean = sb_main.get_probe_test_accuracy(theirs, CHOSEN, by_saebench_key(e.pooled_llm, e.test),
                                                e.cfg.probe_test_batch_size, perform_scr=True)
    assert {k: clean[v] for k, v in ACCURACY_KEYS.items()} == ours["accuracy"]
    assert 0.5 < ours["accuracy"]["biased"] <= 1  # trained probes, not coin flips: the comparison has content


KINDS = ("relu", "relu_fires_on_zero", "topk_scaffold")  # one per (pair, seed), each kind on four of them
SAES = {
    "relu": lambda d: random_sae(d, 64),
    "relu_fires_on_zero": lambda d: _positive_bias(random_sae(d, 64, seed=2)),  # exercises SAEBench's padding edit
    "topk_scaffold": lambda d: random_sae(d, 64, "topk", seed=3, k=8, scaffold_rank=3),
}


def _positive_bias(sae):
    with torch.no_grad():
        sae.b_enc.fill_(0.3)
    return sae


def test_effects_ablations_and_scores_equal_saebench(example_set, probes):
    e = example_set
    ours, theirs = probes
    kind = e.kind
    sae = SAES[kind](32)
    W_dec = features.decoder_matrix(sae, "scr")
    pooled_f = features.pool_sae_latents(sae, e.cache.iter_batches(32)).latents
    leak = padding_leak(sae, e.cache)
    train_BLD, test_BLD = by_saebench_key(e.acts_BLD, e.train), by_saebench_key(e.acts_BLD, e.test)
    with torch.no_grad(), small_ops():  # many small ops: one thread is much faster on a shared machine
        effects = sb_main.get_all_node_effects_for_one_sae(sae, theirs, CHOSEN, True, train_BLD, 125)
        for name in ("column1", "column2"):
            mine = scr_latent_effects(pooled_f[e.train[name]], pooled_f[e.train[name + "_neg"]],
                                      torch.tensor(ours["probes"][name]["w"]), W_dec)
            assert torch.allclose(mine.float(), effects[SB[name]], rtol=1e-4, atol=1e-6), name
            for n in N_VALUES:
                selected = sb_main.select_top_n_features(effects[SB[name]], n, SB[name])
                assert set(select_top_n(mine, n).tolist()) == set(torch.nonzero(selected).flatten().tolist())
                # the ablated pooled activations, padding positions included
                idx = e.test[name] + e.test[name + "_neg"]
                their_acts = sb_main.ablated_precomputed_activations(e.acts_BLD[idx], sae, selected, 125)
                latents = select_top_n(mine, n)
                my_acts = ablated_pooled(e.pooled_llm[idx], pooled_f[idx], W_dec, latents, (leak[0], leak[1][idx]))
                assert torch.allclose(my_acts.float(), their_acts, rtol=1e-4, atol=1e-4)
        ablated = sb_main.perform_feature_ablations(theirs, sae, 125, test_BLD, effects, N_VALUES, CHOSEN,
                                                    e.cfg.probe_test_batch_size, perform_scr=True)
        clean = sb_main.get_probe_test_accuracy(theirs, CHOSEN, by_saebench_key(e.pooled_llm, e.test),
                                                e.cfg.probe_test_batch_size, perform_scr=True)
        their_scores = sb_main.get_scr_plotting_dict(ablated, clean)
    mine = scr_scores(e.pooled_llm, pooled_f, W_dec, e.train, e.test, ours, N_VALUES, e.cfg.probe_test_batch_size, leak)
    metrics = mine["metrics"]
    if not any(k.startswith("scr_metric") for k in their_scores):  # a tie: SAEBench leaves scr_metric undefined, we use dir2
        assert ours["accuracy"]["biased_on_column1"] == ours["accuracy"]["biased_on_column2"] and mine["direction"] == 2
        metrics = {k: v for k, v in metrics.items() if not k.startswith("scr_metric")}
    assert metrics == pytest.approx(their_scores, abs=1e-9)  # accuracies equal; the scores are their ratios
    if kind == "relu_fires_on_zero":  # without SAEBench's padding edit the numbers would differ
        idx = e.test["column1"] + e.test["column1_neg"]
        latents = select_top_n(scr_latent_effects(pooled_f[e.train["column2"]], pooled_f[e.train["column2_neg"]],
                                                        torch.tensor(ours["probes"]["column2"]["w"]), W_dec), 20)
        with_pad = ablated_pooled(e.pooled_llm[idx], pooled_f[idx], W_dec, latents, (leak[0], leak[1][idx]))
        assert not torch.allclose(ablated_pooled(e.pooled_llm[idx], pooled_f[idx], W_dec, latents), with_pad, atol=1e-3)


def test_scores_and_direction_equal_get_scr_plotting_dict():
    rng = random.Random(0)
    for case in range(40):
        acc = {k: rng.choice([0.5, 0.6, 0.7, 0.75, 0.8, 0.9, 1.0]) for k in ACCURACY_KEYS}
        if case % 4 == 0:
            acc["biased_on_column2"] = acc["biased_on_column1"]  # a tie
        if case % 5 == 0:
            acc["column1"] = acc["biased_on_column1"] + 0.0005  # a gap under 0.001 scores 0
        changed = {d: {n: rng.random() for n in N_VALUES} for d in (1, 2)}
        # SAEBench's layout: [ablated probe's set][N][biased probe on the measured set] = accuracy
        their_changed = {"male / female": {n: {ACCURACY_KEYS["biased_on_column1"]: changed[1][n]} for n in N_VALUES},
                         "professor / nurse": {n: {ACCURACY_KEYS["biased_on_column2"]: changed[2][n]} for n in N_VALUES}}
        theirs = sb_main.get_scr_plotting_dict(their_changed, {v: acc[k] for k, v in ACCURACY_KEYS.items()})
        mine, direction = scr_from_accuracies(changed, acc)
        if acc["biased_on_column1"] == acc["biased_on_column2"]:
            # SAEBench's code leaves scr_metric undefined on a tie; we use dir2, as its description says
            assert not any(k.startswith("scr_metric") for k in theirs) and direction == 2
            mine = {k: v for k, v in mine.items() if not k.startswith("scr_metric")}
        assert mine == pytest.approx(theirs, abs=1e-12)


def test_average_over_pairs_equals_average_results_dictionaries(sampled):
    """The headline: per seed, the mean over every pair of the data set, as SAEBench's
    `general_utils.average_results_dictionaries` takes it (then mean ± std over the seeds)."""
    e = sampled
    sae = SAES["relu"](32)
    W_dec = features.decoder_matrix(sae, "scr")
    pooled_f = features.pool_sae_latents(sae, e.cache.iter_batches(32)).latents
    per_pair: dict[str, dict[str, list[float]]] = {}
    for seed in SEEDS:
        split = split_cells(e.sample, seed)
        for pair in PAIRS:
            train = pair_sets(split, pair, e.cfg.column2_values, False, e.sample.n_train, seed)
            test = pair_sets(split, pair, e.cfg.column2_values, True, e.sample.n_test, seed)
            llm = train_llm_probes(e.pooled_llm, train, test, seed, pair, e.cfg)
            metrics = scr_scores(e.pooled_llm, pooled_f, W_dec, train, test, llm, N_VALUES)["metrics"]
            for m, v in metrics.items():
                per_pair.setdefault(f"amazon_scr_{pair[0]}_{pair[1]}", {}).setdefault(m, []).append(v)
    ours = stats.average_datasets(per_pair)
    for i, _ in enumerate(SEEDS):
        theirs = sb_general.average_results_dictionaries(
            {f"{name}_results": {m: v[i] for m, v in runs.items()} for name, runs in per_pair.items()}, list(per_pair))
        assert theirs == pytest.approx({m: v[i] for m, v in ours.items()}, abs=1e-12)
    # ablation moved the probes, differently per pair: the comparisons (here and per pair above) have content
    assert len({tuple(v) for v in ours.values()}) > 1 and sum(v != 0 for r in per_pair.values() for v in r["scr_metric_threshold_20"]) > 6
