"""tpp: latent scores and ablation on planted data, the pooled shortcut vs per-token ablation, bad
checkpoints, noise comparison, the task end to end on a fake LM (fast), and a real-LM smoke test."""

from __future__ import annotations

import json

import pytest
import torch

from saebench_scaffold.activations.cache import masked_mean
from saebench_scaffold.evals import probes
from saebench_scaffold.evals.probing import data as pdata
from saebench_scaffold.evals.probing import features
from saebench_scaffold.evals.base import TaskOutput
from helpers.probing_fakes import (fresh_probing_memo,  # noqa: F401 (autouse fixture)
                                   FakeLM, fake_context, planted_sae, planted_tokens, random_sae,
                                                     write_labeled_data)
from saebench_scaffold.evals.probing.tpp import (TPPConfig, TPPTask, ablate_pooled, ablate_tokens, compare_noise, decoder_matrix,
                                         select_top_n, tpp_latent_scores, tpp_resplit)
from saebench_scaffold.saes.pca import PCASAE, fit_pca
from saebench_scaffold.settings import UserError

SMALL = {"train_per_class": 12, "test_per_class": 6}


@pytest.fixture(scope="module")
def planted():
    acts, mask, labels = planted_tokens()
    return acts, mask, labels, masked_mean(acts, mask)


def _tpp(sae, planted, n_values=(1, 2), seed=0):
    acts, mask, labels, pooled_llm = planted
    pooled = features.pool_sae_latents(sae, [(acts, mask)]).latents
    return tpp_resplit(pooled_llm, pooled, decoder_matrix(sae), labels, 40, 20, seed, list(n_values))


def test_aligned_latent_scores_highest_and_its_ablation_is_targeted(planted):
    acts, mask, labels, pooled_llm = planted
    sae = planted_sae()
    pooled = features.pool_sae_latents(sae, [(acts, mask)]).latents
    train, _ = pdata.resplit(labels, 40, 20, seed=0)
    for c in range(3):
        tr, y = pdata.one_vs_rest(labels, train, c, seed=0)
        probe = probes.fit_probe(pooled_llm[tr], y)
        assert select_top_n(tpp_latent_scores(pooled[tr], y, probe.w, decoder_matrix(sae)), 1).tolist() == [c]
    r = _tpp(sae, planted)
    for c in "012":
        assert r["per_class"]["tpp_threshold_1_intended_diff_only"][c] > 0.3
        assert abs(r["per_class"]["tpp_threshold_1_unintended_diff_only"][c]) < 0.1
    assert r["metrics"]["tpp_threshold_1_total_metric"] > 0.3
    assert min(r["clean_accuracy"].values()) > 0.95


def test_unaligned_latent_has_little_effect(planted):
    acts, mask, labels, pooled_llm = planted
    # the SAE has no latent along class 0's direction: the best it can ablate barely hurts probe 0
    r = _tpp(planted_sae(aligned=False), planted)
    assert r["per_class"]["tpp_threshold_1_intended_diff_only"]["0"] < 0.1
    assert r["per_class"]["tpp_threshold_1_intended_diff_only"]["1"] > 0.3
    # and ablating an unrelated latent by hand changes no probe
    sae = planted_sae()
    pooled = features.pool_sae_latents(sae, [(acts, mask)]).latents
    _, test = pdata.resplit(labels, 40, 20, seed=0)
    edited = ablate_pooled(pooled_llm, pooled, decoder_matrix(sae), torch.tensor([5]))
    assert torch.allclose(edited[:, :3].float(), pooled_llm[:, :3], atol=1e-6)


def test_pooled_ablation_equals_per_token_ablation_with_error_and_scaffold(planted):
    acts, mask, _, pooled_llm = planted
    for sae in (planted_sae(), random_sae(16, 24, "topk", k=4, scaffold_rank=3)):
        pooled = features.pool_sae_latents(sae, [(acts, mask)]).latents
        latents = torch.tensor([0, 2, 5])
        fast = ablate_pooled(pooled_llm, pooled, decoder_matrix(sae), latents)
        slow = ablate_tokens(sae, acts, mask, latents)
        assert torch.allclose(fast.float(), slow, atol=1e-4)
        assert torch.allclose(ablate_pooled(pooled_llm, pooled, decoder_matrix(sae), torch.tensor([], dtype=torch.long)).float(),
                              pooled_llm)


def test_select_top_n_skips_zero_scores():
    scores = torch.tensor([0.0, 3.0, 0.0, -1.0, 2.0])
    assert select_top_n(scores, 2).tolist() == [1, 4]
    assert sorted(select_top_n(scores, 10).tolist()) == [1, 3, 4]
    assert select_top_n(torch.zeros(4), 2).numel() == 0


def test_checkpoint_without_decoder_directions_is_a_clear_error(planted):
    class EncoderOnly:
        d_in, d_sae = 16, 8
        cfg = None

        def encode(self, x):
            return x[..., :8]

    with pytest.raises(UserError, match="decoder directions"):
        decoder_matrix(EncoderOnly())
    with pytest.raises(UserError, match="decoder directions"):  # fails before touching the model or data
        TPPTask().run(None, EncoderOnly(), TPPConfig())
    dead = planted_sae()
    with torch.no_grad():
        dead.W_dec.zero_()
    with pytest.raises(UserError, match="all zero"):
        decoder_matrix(dead)
    # the PCA baseline has decoder directions (its principal components)
    acts, mask, labels, pooled_llm = planted
    pca = PCASAE.from_pca(fit_pca([acts[mask]]))
    r = _tpp(pca, planted, n_values=(2, 16))
    assert "tpp_threshold_16_total_metric" in r["metrics"]


def test_compare_noise_flags_differences_within_the_spread():
    a = {"tpp_metrics": {"x": 0.30, "x_std": 0.01, "y": 0.10, "y_std": 0.05}}
    b = {"eval_result_metrics": {"tpp_metrics": {"x": 0.10, "x_std": 0.02, "y": 0.12, "y_std": 0.04}}}
    cmp = compare_noise(a, b)
    assert set(cmp) == {"tpp_metrics/x", "tpp_metrics/y"}
    assert not cmp["tpp_metrics/x"]["noise_dominated"] and cmp["tpp_metrics/y"]["noise_dominated"]
    assert cmp["tpp_metrics/x"]["diff"] == pytest.approx(0.2)
    assert cmp["tpp_metrics/y"]["spread"] == pytest.approx((0.05 ** 2 + 0.04 ** 2) ** 0.5)
    assert compare_noise(TaskOutput(metrics=a), a)["tpp_metrics/x"]["diff"] == 0


def test_task_end_to_end_on_fake_lm(tmp_path):
    data = write_labeled_data(tmp_path / "data", per_class=24)
    lm = FakeLM(32)
    ctx = fake_context(data, tmp_path / "cache", lm=lm)
    task = TPPTask()
    cfg = task.make_config({**SMALL, "datasets": ["amazon_domain", "bbc_news"]})
    out = task.run(ctx, random_sae(32, 40), cfg)
    assert out.unstructured["n_values"] == [2, 5, 10, 20, 40]  # 50, 100, 500 capped at d_sae
    tm = out.metrics["tpp_metrics"]
    for n in out.unstructured["n_values"]:
        for part in ("total_metric", "intended_diff_only", "unintended_diff_only"):
            assert f"tpp_threshold_{n}_{part}" in tm and f"tpp_threshold_{n}_{part}_std" in tm
        assert tm[f"tpp_threshold_{n}_total_metric"] == pytest.approx(
            tm[f"tpp_threshold_{n}_intended_diff_only"] - tm[f"tpp_threshold_{n}_unintended_diff_only"])
    assert out.metrics["llm"]["llm_test_accuracy"] > 0.8
    assert out.metrics["sparsity"]["l0"] > 0
    assert [d["dataset_name"] for d in out.details] == ["amazon_domain", "bbc_news"]
    assert "books" in out.unstructured["per_class"]["amazon_domain"]["tpp_threshold_10_total_metric"]
    json.dumps(out.metrics), json.dumps(out.details), json.dumps(out.unstructured)
    calls = lm.calls
    features.clear_memo()
    out2 = task.run(ctx, random_sae(32, 40, seed=3), cfg)  # second checkpoint: no LM work
    assert lm.calls == calls and out2.metrics["llm"] == out.metrics["llm"]
    assert TPPTask().make_config({}, limit=30).max_examples_per_dataset == 30


@pytest.mark.slow
@pytest.mark.needs_data("amazon_domain", "bbc_news")
def test_real_lm_smoke(lm, hook, data_dir, tmp_path):
    from saebench_scaffold.evals.base import EvalContext
    from saebench_scaffold.sources.model import ModelSpec

    ctx = EvalContext(ModelSpec(), hook, str(data_dir), None, 0, progress=False)
    ctx.__dict__["lm"] = lm
    task = TPPTask()
    cfg = task.make_config({"datasets": ["amazon_domain", "bbc_news"], "n_values": [2, 10, 20]}, limit=40)
    out = task.run(ctx, random_sae(lm.d_model, 512, hook_name=hook), cfg)
    assert set(out.metrics) == {"tpp_metrics", "llm", "sparsity"}
    assert {"tpp_threshold_10_total_metric", "tpp_threshold_20_total_metric_std",
            "tpp_threshold_2_unintended_diff_only"} <= set(out.metrics["tpp_metrics"])
    assert out.metrics["llm"]["llm_test_accuracy"] > 0.6
    assert [d["n_train_per_class"] + d["n_test_per_class"] for d in out.details] == [10, 8]
