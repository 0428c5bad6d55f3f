"""sparse_probing: sampling and splits, pooling, latent selection on planted data, the task end to
end on a fake LM (fast), bad inputs, and one real-LM smoke test (slow)."""

from __future__ import annotations

import json

import pytest
import torch

from saebench_scaffold.activations.cache import masked_mean
from saebench_scaffold.sources.data import LabeledExample
from saebench_scaffold.evals import probes
from saebench_scaffold.evals.probing import data as pdata
from saebench_scaffold.evals.probing import features
from helpers.probing_fakes import (fresh_probing_memo,  # noqa: F401 (autouse fixture)
                                   FakeLM, fake_context, planted_sae, planted_tokens, random_sae,
                                                     write_labeled_data)
from saebench_scaffold.evals.probing.sparse_probing import SparseProbingConfig, SparseProbingTask, probe_feature_sets
from saebench_scaffold.settings import UserError

SMALL = {"train_per_class": 12, "test_per_class": 6, "k_values": [1, 2, 5]}


@pytest.fixture
def synth(tmp_path):
    data = write_labeled_data(tmp_path / "data", per_class=24)
    return data, tmp_path / "cache"


# ---- sampling, splits, one-vs-rest ----------------------------------------------------------------

def _examples(counts: dict[str, int]) -> list[LabeledExample]:
    return [LabeledExample(f"{c} text {i}", c) for c, n in counts.items() for i in range(n)]


def test_sample_is_balanced_fixed_and_independent_of_resplits():
    ex = _examples({"a": 50, "b": 40, "c": 60})
    s1 = pdata.sample_balanced("toy", ex, 10, 5, seed=0)
    s2 = pdata.sample_balanced("toy", ex, 10, 5, seed=0)
    assert s1.texts == s2.texts and torch.equal(s1.labels, s2.labels)
    assert s1.classes == ["a", "b", "c"] and torch.bincount(s1.labels).tolist() == [15, 15, 15]
    assert pdata.sample_balanced("toy", ex, 10, 5, seed=1).texts != s1.texts
    # resplits reshuffle within the same sample
    tr0, te0 = pdata.resplit(s1.labels, 10, 5, seed=0)
    tr1, te1 = pdata.resplit(s1.labels, 10, 5, seed=1)
    assert not set(tr0.tolist()) & set(te0.tolist())
    assert torch.bincount(s1.labels[tr0]).tolist() == [10] * 3 and torch.bincount(s1.labels[te0]).tolist() == [5] * 3
    assert set(tr0.tolist()) != set(tr1.tolist())
    assert set(tr0.tolist()) | set(te0.tolist()) == set(tr1.tolist()) | set(te1.tolist())


def test_one_vs_rest_is_balanced_and_draws_evenly_from_other_classes():
    labels = torch.arange(4).repeat_interleave(30)
    idx, y = pdata.one_vs_rest(labels, torch.arange(120), cls=2, seed=0)
    assert int(y.sum()) == 30 and len(y) == 60
    assert (labels[idx[y == 1]] == 2).all()
    neg = torch.bincount(labels[idx[y == 0]], minlength=4).tolist()
    assert neg[2] == 0 and all(n >= 9 for i, n in enumerate(neg) if i != 2)
    idx2, y2 = pdata.one_vs_rest(labels, torch.arange(120), cls=2, seed=0)
    assert torch.equal(idx, idx2) and torch.equal(y, y2)
    assert pdata.probed_classes(2) == [0] and pdata.probed_classes(4) == [0, 1, 2, 3]


def test_plan_counts_caps_and_rejects_bad_datasets():
    assert pdata.plan_counts("d", {"a": 500, "b": 500}, 100, 50) == (100, 50, False)
    n_train, n_test, capped = pdata.plan_counts("d", {"a": 500, "b": 60}, 100, 50)
    assert capped and n_train + n_test == 60 and n_test == 20
    n_train, n_test, capped = pdata.plan_counts("d", {"a": 500, "b": 500, "c": 500, "d": 500}, 100, 50, max_per_dataset=40)
    assert capped and n_train + n_test == 10
    assert sum(pdata.plan_counts("d", {c: 500 for c in "abcdefg"}, 100, 50, max_per_dataset=8)[:2]) == pdata.MIN_SPLIT_PER_CLASS
    with pytest.raises(UserError, match=r"dataset lonely: .*at least 2 classes, found 1 \('only': 40\)"):
        pdata.plan_counts("lonely", {"only": 40}, 10, 5)
    with pytest.raises(UserError, match=r"dataset tiny: class 'b' has only 3 examples"):
        pdata.plan_counts("tiny", {"a": 40, "b": 3}, 10, 5)


def test_config_rejects_bad_values():
    with pytest.raises(ValueError):
        SparseProbingConfig(k_values=[0])
    with pytest.raises(ValueError):
        SparseProbingConfig(datasets=[])
    with pytest.raises(ValueError):
        SparseProbingConfig(n_resplits=1)
    with pytest.raises(ValueError):
        SparseProbingConfig(kvalues=[1])  # typo: unknown keys are errors
    assert SparseProbingTask().make_config({}, limit=40).max_examples_per_dataset == 40


# ---- core computations on planted tensors -----------------------------------------------------------

def test_pool_sae_latents_matches_per_token_masked_mean():
    acts, mask, _ = planted_tokens(n_per_class=5)
    sae = planted_sae()
    pooled = features.pool_sae_latents(sae, [(acts[:7], mask[:7]), (acts[7:], mask[7:])], token_chunk=16)
    with torch.no_grad():
        f = sae.encode(acts)
    assert torch.allclose(pooled.latents, masked_mean(f, mask), atol=1e-5)
    assert pooled.n_tokens == int(mask.sum()) and pooled.nonzero == int((f[mask] != 0).sum())


def test_aligned_latent_is_selected_and_top1_probe_is_near_perfect():
    acts, mask, labels = planted_tokens()
    pooled = features.pool_sae_latents(planted_sae(), [(acts, mask)]).latents
    train, _ = pdata.resplit(labels, 40, 20, seed=0)
    for c in range(3):
        tr, y = pdata.one_vs_rest(labels, train, c, seed=0)
        assert probes.top_k_mean_diff(pooled[tr], y, 1).tolist() == [c]
    res = probe_feature_sets({"sae": pooled, "llm": masked_mean(acts, mask)}, labels, 40, 20, [0, 1, 2], [1, 2])
    assert min(res["per_resplit"]["sae_top_1_test_accuracy"]) > 0.95
    assert min(res["per_resplit"]["sae_test_accuracy"]) > 0.95
    assert set(res["per_class"]["sae_top_2_test_accuracy"]) == {"0", "1", "2"}


def test_unaligned_sae_has_no_single_latent_for_the_class():
    acts, mask, labels = planted_tokens()
    aligned = features.pool_sae_latents(planted_sae(), [(acts, mask)]).latents
    unaligned = features.pool_sae_latents(planted_sae(aligned=False), [(acts, mask)]).latents
    args = (labels, 40, 20, [0, 1, 2], [1])
    a = probe_feature_sets({"sae": aligned}, *args)["per_class"]["sae_top_1_test_accuracy"]["0"]
    u = probe_feature_sets({"sae": unaligned}, *args)["per_class"]["sae_top_1_test_accuracy"]["0"]
    assert sum(a) / 3 > 0.95 and sum(u) / 3 < 0.85


def test_standardized_probe_weights_live_in_raw_space():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 5, generator=g) * torch.tensor([1.0, 100.0, 0.01, 1.0, 1.0])
    y = (x[:, 0] + x[:, 1] / 100 > 0).long()
    raw, std = probes.fit_probe(x, y), probes.fit_probe(x, y, standardize=True)
    assert raw.accuracy(x, y) > 0.8 and std.accuracy(x, y) > 0.9


# ---- the task end to end (fake LM, synthetic data) ----------------------------------------------

def test_task_output_structure_and_cache_reuse(synth):
    data, cache = synth
    lm = FakeLM(32)
    ctx = fake_context(data, cache, lm=lm)
    task = SparseProbingTask()
    cfg = task.make_config({**SMALL, "datasets": ["bbc_news", "amazon_sentiment"]})
    out = task.run(ctx, random_sae(32, 64), cfg)
    assert set(out.metrics) == {"llm", "sae", "sparsity"}
    for cat in ("llm", "sae"):
        keys = [k for k in out.metrics[cat] if not k.endswith("_std")]
        assert keys == [f"{cat}_test_accuracy"] + [f"{cat}_top_{k}_test_accuracy" for k in (1, 2, 5)]
        assert all(0 <= out.metrics[cat][k] <= 1 and f"{k}_std" in out.metrics[cat] for k in keys)
    assert out.metrics["llm"]["llm_test_accuracy"] > 0.8  # synthetic classes use different words
    assert out.metrics["sparsity"]["l0"] > 0
    assert [d["dataset_name"] for d in out.details] == ["bbc_news", "amazon_sentiment"]
    assert out.details[1]["n_probes"] == 1 and out.details[0]["n_train_per_class"] == 12
    assert set(out.unstructured["per_class"]["bbc_news"]["sae_top_1_test_accuracy"]) == {
        "business", "entertainment", "politics", "sport", "tech"}
    assert {d["name"] for d in out.datasets} == {"bbc_news", "amazon_sentiment"}
    json.dumps(out.metrics), json.dumps(out.details), json.dumps(out.unstructured)
    assert list((cache / "probing").glob("*.json"))  # LLM baselines memoised on disk

    # a second checkpoint and another resplit seed reuse the cached LLM activations
    calls = lm.calls
    features.clear_memo()
    ctx2 = fake_context(data, cache, seed=1, lm=lm)
    out2 = task.run(ctx2, random_sae(32, 64, seed=1), cfg)
    assert lm.calls == calls
    assert out2.metrics["sae"] != out.metrics["sae"]


def test_scaffold_features_are_reported_separately(synth):
    data, cache = synth
    ctx = fake_context(data, cache)
    task = SparseProbingTask()
    cfg = task.make_config({**SMALL, "datasets": ["ag_news"], "include_scaffold_features": True})
    sae = random_sae(32, 64, scaffold_rank=4)
    out = task.run(ctx, sae, cfg)
    sc = out.metrics["scaffold"]
    assert {"scaffold_test_accuracy", "scaffold_top_1_test_accuracy", "sae_plus_scaffold_test_accuracy",
            "sae_plus_scaffold_top_5_test_accuracy_std"} <= set(sc)
    assert not any(k.startswith("scaffold") for k in out.metrics["sae"])
    assert out.unstructured["scaffold_rank"] == 4
    # the pooled scaffold output equals the per-token scaffold output, pooled
    acts, mask = next(pdata.load_probing_set(ctx, "ag_news", pdata.ProbingConfigBase(train_per_class=12, test_per_class=6)).cache.iter_batches(8))
    with torch.no_grad():
        per_token = masked_mean(sae.scaffold(acts), mask)
    assert torch.allclose(features.pooled_scaffold(sae, masked_mean(acts, mask)), per_token, atol=1e-4)


def test_bad_datasets_are_user_errors(tmp_path):
    one = write_labeled_data(tmp_path / "one", per_class=20, bbc_counts={"sport": 30})
    with pytest.raises(UserError, match=r"dataset bbc_news: .*found 1 \('sport': 30\)"):
        SparseProbingTask().run(fake_context(one, tmp_path / "c"), random_sae(32, 16),
                                SparseProbingConfig(**{**SMALL, "datasets": ["bbc_news"]}))
    few = write_labeled_data(tmp_path / "few", per_class=20, bbc_counts={"sport": 30, "tech": 4})
    with pytest.raises(UserError, match=r"dataset bbc_news: class 'tech' has only 4 examples"):
        SparseProbingTask().run(fake_context(few, tmp_path / "c"), random_sae(32, 16),
                                SparseProbingConfig(**{**SMALL, "datasets": ["bbc_news"]}))
    with pytest.raises(UserError, match="unknown dataset"):
        SparseProbingTask().run(fake_context(few, tmp_path / "c"), random_sae(32, 16),
                                SparseProbingConfig(**{**SMALL, "datasets": ["nope"]}))
    empty = write_labeled_data(tmp_path / "empty", per_class=20, bbc_counts={"sport": 10, "tech": 10})
    path = empty / "classification" / "bbc_news" / "bbc.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    rows[3]["text"] = "   "
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(UserError, match="tokenizes to nothing"):
        SparseProbingTask().run(fake_context(empty, tmp_path / "c"), random_sae(32, 16),
                                SparseProbingConfig(train_per_class=6, test_per_class=4, datasets=["bbc_news"]))


# ---- real model ---------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.needs_data("ag_news", "europarl")
def test_real_lm_smoke_through_run_eval(lm, hook, data_dir, tmp_path):
    from saebench_scaffold.execution import EvalRequest, run_eval

    ckpt = random_sae(lm.d_model, 512, hook_name=hook).save(tmp_path / "rand")
    rows = run_eval(EvalRequest(checkpoints=[str(ckpt)], tasks="sparse_probing", limit=40, data_dir=str(data_dir),
                                output_dir=str(tmp_path / "out"), progress=False,
                                overrides=["sparse_probing.datasets=[ag_news,europarl]", "sparse_probing.k_values=[1,5]"]))
    assert rows[0]["status"].startswith("ok")
    res = json.loads((tmp_path / "out" / "rand" / "sparse_probing.json").read_text())
    m = res["eval_result_metrics"]
    assert res["eval_type_id"] == "sparse_probing" and set(m) == {"llm", "sae", "sparsity"}
    assert {"llm_test_accuracy", "llm_top_5_test_accuracy_std", "sae_top_1_test_accuracy", "sae_test_accuracy_std"} <= {
        *m["llm"], *m["sae"]}
    assert m["llm"]["llm_test_accuracy"] > 0.7  # language id and news topics are easy for the LLM
    assert [d["dataset_name"] for d in res["eval_result_details"]] == ["ag_news", "europarl"]
    assert res["eval_config"]["max_examples_per_dataset"] == 40
