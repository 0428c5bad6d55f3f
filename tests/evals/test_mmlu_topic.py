"""`mmlu_topic`: category mapping, balanced sampling, pooling, probing on synthetic activations with a
planted topic subspace (no LM), the task end to end with synthetic token activations, the offline
error, and one real-LM smoke run through `run_eval`."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from saebench_scaffold.sources import data
from saebench_scaffold.activations.cache import masked_mean
from saebench_scaffold.evals.ablation import conditions as ab
from saebench_scaffold.evals.mmlu_topic import task as mt
from saebench_scaffold.evals.base import EvalContext
from saebench_scaffold.evals.mmlu_topic.categories import CATEGORIES, FALLBACK, lm_eval_mapping, subject_categories
from saebench_scaffold.saes import SAEConfig, make_sae
from saebench_scaffold.settings import UserError

D, R = 24, 4


def test_category_mapping_matches_lm_eval_and_fallback():
    mapping, source = subject_categories()
    assert len(mapping) == 57
    counts = {c: sum(v == c for v in mapping.values()) for c in CATEGORIES}
    assert counts == {"stem": 19, "humanities": 13, "social_sciences": 12, "other": 13}
    from_pkg = lm_eval_mapping()
    if from_pkg is not None:
        assert "lm_eval" in source
        assert from_pkg == {s: c for c, subs in FALLBACK.items() for s in subs}


def fake_rows(per_subject=12):
    mapping, _ = subject_categories()
    return [{"subject": s, "question": f"{s} question {j}", "choices": ["a", "b", "c", "d"], "answer": 0}
            for s in sorted(mapping) for j in range(per_subject)]


def test_sampling_balanced_seeded_and_diverse():
    rows = fake_rows()
    cfg = mt.MMLUTopicConfig(per_category=40, subjects=["astronomy", "marketing", "world_religions"], per_subject=10)
    sets, texts = mt.sample_questions(rows, cfg, seed=0)
    idx, labels, classes = sets["category"]
    assert classes == list(CATEGORIES) and np.bincount(labels).tolist() == [40] * 4
    assert len(set(idx)) == len(idx)  # no question twice
    subjects_in_stem = {texts[i].split(" question")[0] for i, y in zip(idx, labels) if y == 0}
    assert len(subjects_in_stem) == 19  # round-robin over the category's subjects
    sidx, slabels, sclasses = sets["subject"]
    assert sclasses == cfg.subjects and np.bincount(slabels).tolist() == [10] * 3
    assert all(texts[i].startswith(sclasses[y]) for i, y in zip(sidx, slabels))
    assert mt.sample_questions(rows, cfg, seed=0)[1] == texts  # deterministic
    assert mt.sample_questions(rows, cfg, seed=1)[1] != texts
    with pytest.raises(UserError, match="unknown MMLU subjects"):
        mt.sample_questions(rows, cfg.model_copy(update={"subjects": ["astronomy", "basket_weaving"]}), 0)
    with_choices = mt.question_text(rows[0], True)
    assert with_choices.endswith("D. d") and "A. a" in with_choices


def test_limit_caps_examples():
    cfg = mt.MMLUTopicTask().make_config({}, limit=120)
    assert cfg.per_category == 15 and cfg.per_subject == 10  # 60 + 60 questions
    cfg = mt.MMLUTopicTask().make_config({"label_sets": ["category"]}, limit=120)
    assert cfg.per_category == 30


def test_tokenset_pooling_matches_masked_mean():
    g = torch.Generator().manual_seed(0)
    acts = torch.randn(5, 7, D, generator=g).half().float()
    mask = torch.rand(5, 7, generator=g) > 0.4
    mask[:, 1] = True

    class Cache:
        def iter_batches(self, n):
            yield acts[:3], mask[:3]
            yield acts[3:], mask[3:]

    ts = mt.TokenSet.from_cache(Cache())
    ts.chunk = 4  # several chunks
    pooled, _ = ts.pool(ab.identity)
    assert torch.allclose(pooled, masked_mean(acts, mask), atol=1e-5)



@pytest.mark.parametrize("norm", ["none", "layer_norm"])
def test_pooled_topic_removal_equals_pooling_the_edited_tokens(norm):
    """The topic-latent condition is pooled from the clean pass (pooled vector minus the pooled
    latents' decoded part) instead of a second SAE pass: the same vectors as editing every token,
    also under a per-token normalisation (where each token's part is scaled by its own norm)."""
    g = torch.Generator().manual_seed(1)
    sae = make_sae(SAEConfig("batchtopk", D, 64, k=4, scaffold_rank=R if norm == "none" else 0,
                             normalize_activations=norm))
    with torch.no_grad():
        for p in sae.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    example = torch.arange(9).repeat_interleave(torch.tensor([1, 5, 2, 7, 3, 1, 4, 6, 2]))
    ts = mt.TokenSet(torch.randn(example.numel(), D, generator=g).half(), example, 9, chunk=8)
    pooled, latents = ts.pool(ab.identity, sae)
    topic = torch.tensor([3, 17, 40, 5])
    assert latents[:, topic].abs().sum() > 0  # the chosen latents fire: the subtraction is tested
    direct = ts.pool(ab.remove_latents(sae, topic))[0]
    assert torch.allclose(mt.pooled_latents_removed(ts, pooled, latents, sae, topic), direct, atol=1e-5)
    naive = pooled - latents[:, topic] @ sae.W_dec.detach()[topic]
    assert torch.allclose(naive, direct, atol=1e-5) == (norm == "none")  # why the per-token case pools the edit

def planted(seed=0):
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(D, D, generator=g))
    return q[:, :R], q[:, R:], g


def test_probe_conditions_planted_subspace():
    S, C, g = planted()
    labels = np.arange(400) % 4
    X = torch.eye(R)[labels] @ S.T * 3 + torch.randn(400, D, generator=g) @ (C @ C.T) + 2.0
    feats = {"clean": X.numpy(), "planted_removed": ab.remove_subspace(S, X.mean(0))(X).numpy(),
             "orthogonal_removed": ab.remove_subspace(C[:, :R], X.mean(0))(X).numpy()}
    res = mt.probe_conditions(feats, labels, mt.MMLUTopicConfig(n_resplits=3), seed=0)
    assert res["clean"]["acc"] > 0.95 and len(res["clean"]["acc_per_split"]) == 3
    assert res["planted_removed"]["acc"] < 0.45 and res["planted_removed"]["clean_probe_acc"] < 0.45
    assert res["orthogonal_removed"]["acc"] > 0.95
    lo, hi = res["clean"]["acc_ci"]
    assert lo <= res["clean"]["acc"] <= hi
    for cond in res.values():  # both accuracies carry intervals, inside [0, 1] even at accuracy ~1
        for key in ("acc", "clean_probe_acc"):
            lo, hi = cond[f"{key}_ci"]
            assert 0.0 <= lo <= cond[key] <= hi <= 1.0


@pytest.mark.parametrize("p", [1.0, 0.995, 0.97, 0.0, 0.5])
def test_wilson_interval_stays_in_unit_range_and_matches_scipy(p):
    from scipy.stats import binomtest
    lo, hi = mt.wilson_interval(p, 80, 0.95)
    assert 0.0 <= lo <= p <= hi <= 1.0 and hi - lo > 0
    k = round(p * 80)
    if k == p * 80:  # integer counts: scipy's Wilson interval is the reference
        ref = binomtest(k, 80).proportion_ci(0.95, method="wilson")
        assert (lo, hi) == pytest.approx((ref.low, ref.high), abs=1e-12)


def test_task_end_to_end_with_synthetic_activations(tmp_path, monkeypatch):
    """The whole task on synthetic token activations: topic lives in the planted subspace, which the
    hybrid SAE's scaffold spans; removing it sends the probe to chance, the random control does not."""
    S, C, g = planted()
    rows = fake_rows(per_subject=30)
    (tmp_path / "mmlu").mkdir()
    (tmp_path / "mmlu" / "test.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    mapping, _ = subject_categories()
    subjects = sorted(mapping)

    def fake_tokens(ctx, texts, cfg):
        acts, ex = [], []
        for i, t in enumerate(texts):
            subj = t.split(" question")[0]
            c = CATEGORIES.index(mapping[subj])
            n = 3 + i % 4
            topic = torch.eye(R)[c] * 3 + 0.5 * torch.randn(R, generator=g) * (subjects.index(subj) % 3)
            acts.append(topic @ S.T + torch.randn(n, D, generator=g) @ (C @ C.T) + 1.0)
            ex.append(torch.full((n,), i))
        return mt.TokenSet(torch.cat(acts).half(), torch.cat(ex), len(texts))

    monkeypatch.setattr(mt, "example_tokens", fake_tokens)
    sae = make_sae(SAEConfig("batchtopk", D, 64, k=4, scaffold_rank=R))
    with torch.no_grad():
        sae.scaffold_U.copy_(S)
        sae.scaffold_V.copy_(S)
        sae.b_dec.fill_(1.0)

    class Ctx:
        seed, data_dir = 0, str(tmp_path)
        train_pca = EvalContext.train_pca  # the real PCA fit and memo, over the fake training cache

        def __init__(self):
            self.memo = {}
        train = torch.randn(3000, R, generator=g) @ S.T * 3 + torch.randn(3000, D, generator=g) @ (C @ C.T) + 1.0

        def train_cache(self, n, dataset="wikipedia"):
            outer = self

            class T:
                def iter_token_batches(self, batch_tokens=4096, limit=None):
                    yield outer.train[:limit]
            return T()

        def generator(self, salt=0):
            return torch.Generator().manual_seed(salt)

        def dataset_id(self, name):
            return {"name": name}

    cfg = mt.MMLUTopicConfig(per_category=60, per_subject=30, n_resplits=3, n_topic_latents=8)
    out = mt.MMLUTopicTask().run(Ctx(), sae, cfg)
    m = out.metrics["category"]
    assert m["chance"] == 0.25 and m["n_examples"] == 240
    assert m["clean_acc"] > 0.9
    assert m["scaffold_removed_acc"] < 0.45 and m["scaffold_removed_clean_probe_acc"] < 0.45
    assert m["pca_removed_mean_preserving_acc"] < 0.45  # the topic subspace is the top-R PCA subspace
    assert m["random_subspace_removed_acc"] > 0.8
    assert m["topic_latents_removed_acc"] > 0.8  # the dictionary holds no topic information here
    assert 0 <= m["clean_acc_ci_low"] <= m["clean_acc"] <= m["clean_acc_ci_high"] <= 1
    assert 0 <= m["scaffold_removed_clean_probe_acc_ci_low"] <= m["scaffold_removed_clean_probe_acc"] \
        <= m["scaffold_removed_clean_probe_acc_ci_high"] <= 1
    assert out.metrics["subject"]["n_classes"] == 6
    json.dumps(out.metrics), json.dumps(out.details)
    # the bootstrap's rounds are the evaluation replicates claims reads (unit questions, all sampled questions)
    block = out.unstructured["evaluation_replicates"]
    assert (block["unit"], block["n_replicates"]) == ("questions", cfg.n_bootstrap)
    assert block["n_units"] == out.metrics["setup"]["n_questions"]
    for key in ("category.clean_acc", "category.scaffold_removed_acc", "category.topic_latents_removed_acc",
                "subject.clean_acc", "subject.scaffold_removed_acc", "subject.pca_removed_mean_preserving_acc",
                "category.scaffold_removed_clean_probe_acc"):
        assert len(block["metrics"][key]) == cfg.n_bootstrap, key
    reps = np.array([np.nan if v is None else v for v in block["metrics"]["category.clean_acc"]])
    lo, hi = np.percentile(reps[np.isfinite(reps)], [2.5, 97.5])
    assert (m["clean_acc_boot_ci_low"], m["clean_acc_boot_ci_high"]) == pytest.approx((lo, hi), abs=1e-6)
    assert all("acc_replicates" not in row for row in out.details)  # the rounds live in the block only

    plain = make_sae(SAEConfig("batchtopk", D, 64, k=4))
    out = mt.MMLUTopicTask().run(Ctx(), plain, cfg.model_copy(update={"pca_rank": R, "label_sets": ["category"]}))
    assert out.metrics["category"]["scaffold_removed_acc"] is None
    assert "not applicable" in out.metrics["category"]["scaffold_removed_status"]
    assert "category.scaffold_removed_acc" not in out.unstructured["evaluation_replicates"]["metrics"]


def test_missing_mmlu_offline_names_the_data_dir_setting(tmp_path):
    with pytest.raises(UserError, match="SAEBENCH_DATA_DIR"):
        list(data.iterate("mmlu", str(tmp_path)))


def test_mmlu_unreachable_hub_without_data_dir_names_the_setting(monkeypatch):
    from dataclasses import replace

    def offline():
        raise ConnectionError("no network")
        yield  # pragma: no cover

    monkeypatch.delenv("SAEBENCH_DATA_DIR", raising=False)
    monkeypatch.setitem(data.REGISTRY, "mmlu", replace(data.REGISTRY["mmlu"], hub_loader=offline))
    with pytest.raises(UserError, match="SAEBENCH_DATA_DIR"):
        list(data.iterate("mmlu", None))


@pytest.mark.slow
@pytest.mark.needs_data("mmlu")
def test_smoke_real_lm(tmp_path, data_dir, hook):
    from saebench_scaffold.execution import EvalRequest, run_eval

    ckpt = make_sae(SAEConfig("batchtopk", 576, 1152, k=16, scaffold_rank=8, hook_name=hook)).save(tmp_path / "hybrid")
    rows = run_eval(EvalRequest(checkpoints=[str(ckpt)], tasks="mmlu_topic", limit=96, data_dir=str(data_dir),
                                output_dir=str(tmp_path / "out"), progress=False,
                                overrides=["mmlu_topic.n_resplits=3"]))
    assert rows[0]["status"].startswith("ok")
    m = json.loads((tmp_path / "out" / "hybrid" / "mmlu_topic.json").read_text())["eval_result_metrics"]
    assert m["category"]["n_examples"] == 48 and m["category"]["chance"] == 0.25
    for key in ("clean_acc", "scaffold_removed_acc", "pca_removed_mean_preserving_acc", "pca_removed_zeroing_acc",
                "topic_latents_removed_acc", "random_subspace_removed_acc"):
        assert 0 <= m["category"][key] <= 1
    assert m["subject"]["n_classes"] == 6
