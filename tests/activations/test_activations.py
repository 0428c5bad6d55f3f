"""Activation cache: built once, reused, resumable after an interruption with identical data."""

from __future__ import annotations


import pytest
import torch

from saebench_scaffold.activations.cache import CacheSpec, get_cache, get_example_cache
from saebench_scaffold.settings import UserError

pytestmark = pytest.mark.slow


def _spec(lm, hook, n_contexts, data_root):
    from saebench_scaffold.sources.data import dataset_id

    return CacheSpec(lm.source_id, hook, "wikipedia", dataset_id("wikipedia", data_root)["sha256"], ctx_len=16,
                     n_contexts=n_contexts, shard_contexts=3)


def test_cache_matches_model_and_marks_special(lm, hook, tiny_corpus, tmp_path):
    cache = get_cache(lm, _spec(lm, hook, 7, tiny_corpus), tmp_path / "c", tiny_corpus, progress=False)
    acts, tokens, special = cache.contexts()
    assert acts.shape == (7, 16, lm.d_model) and tokens.shape == (7, 16)
    assert (tokens[:, 0] == lm.bos_token_id).all() and special[:, 0].all() and not special[:, 1:].any()
    torch.testing.assert_close(acts[:2], lm.hook_activations(tokens[:2], hook), atol=1e-4, rtol=1e-4)
    assert cache.token_count() == 7 * 15 and cache.token_count(include_special=True) == 7 * 16
    batches = list(cache.iter_token_batches(batch_tokens=50))
    assert sum(b.shape[0] for b in batches) == 7 * 15  # special positions dropped


def test_interrupted_build_resumes_with_identical_data(lm, hook, tiny_corpus, tmp_path, monkeypatch):
    spec = _spec(lm, hook, 8, tiny_corpus)
    reference = get_cache(lm, spec, tmp_path / "ref", tiny_corpus, progress=False).contexts()

    calls = {"n": 0}
    real = lm.hook_activations

    def dying(tokens, h):
        calls["n"] += 1
        if calls["n"] > 2:  # shards hold 3 contexts, batches 1 context: dies inside shard 0
            raise KeyboardInterrupt
        return real(tokens, h)

    monkeypatch.setattr(lm, "hook_activations", dying)
    with pytest.raises(KeyboardInterrupt):
        get_cache(lm, spec, tmp_path / "resumed", tiny_corpus, batch_contexts=1, progress=False)
    calls["n"] = -5  # let shard 0 finish (3 calls), then die in shard 1
    with pytest.raises(KeyboardInterrupt):
        get_cache(lm, spec, tmp_path / "resumed", tiny_corpus, batch_contexts=1, progress=False)
    root = next((tmp_path / "resumed" / "activations").iterdir())
    assert sorted(p.name for p in root.glob("shard_*")) == ["shard_00000.safetensors", "shard_00001.safetensors"]
    assert not list(root.glob("*.tmp*"))  # no partial shard left behind
    monkeypatch.setattr(lm, "hook_activations", real)
    calls_before = calls["n"]
    resumed = get_cache(lm, spec, tmp_path / "resumed", tiny_corpus, progress=False).contexts()
    for a, b in zip(reference, resumed):
        assert torch.equal(a, b)
    assert calls["n"] == calls_before  # the finished shards were not recomputed


def test_larger_budget_reuses_shards(lm, hook, tiny_corpus, tmp_path, monkeypatch):
    small = _spec(lm, hook, 3, tiny_corpus)
    get_cache(lm, small, tmp_path / "c", tiny_corpus, progress=False)
    seen = []
    real = lm.hook_activations
    monkeypatch.setattr(lm, "hook_activations", lambda t, h: seen.append(t.shape[0]) or real(t, h))
    big = get_cache(lm, _spec(lm, hook, 6, tiny_corpus), tmp_path / "c", tiny_corpus, progress=False)
    assert sum(seen) == 3  # only the new shard ran through the model
    assert big.contexts()[0].shape[0] == 6


def test_last_shard_holds_only_what_the_budget_needs_and_grows_with_it(lm, hook, tiny_corpus, tmp_path, monkeypatch):
    """4 contexts on 3-context shards run 4 contexts through the model (not 6); a budget of 6 then
    rebuilds the short last shard only, and the data equal a fresh build's."""
    seen = []
    real = lm.hook_activations
    monkeypatch.setattr(lm, "hook_activations", lambda t, h: seen.append(t.shape[0]) or real(t, h))
    four = get_cache(lm, _spec(lm, hook, 4, tiny_corpus), tmp_path / "c", tiny_corpus, progress=False)
    assert sum(seen) == 4 and four.contexts()[0].shape[0] == 4 and four.complete
    seen.clear()
    short = four.shard_path(1)

    def still_readable(t, h):  # a reader of the 4-context budget must find shard 1 during the rebuild
        assert short.exists()
        seen.append(t.shape[0])
        return real(t, h)

    monkeypatch.setattr(lm, "hook_activations", still_readable)
    six = get_cache(lm, _spec(lm, hook, 6, tiny_corpus), tmp_path / "c", tiny_corpus, progress=False)
    assert sum(seen) == 3  # shard 1 rebuilt whole; shard 0 reused
    monkeypatch.setattr(lm, "hook_activations", lambda t, h: seen.append(t.shape[0]) or real(t, h))
    fresh = get_cache(lm, _spec(lm, hook, 6, tiny_corpus), tmp_path / "fresh", tiny_corpus, progress=False)
    for a, b in zip(six.contexts(), fresh.contexts()):
        assert torch.equal(a, b)
    seen.clear()
    assert get_cache(lm, _spec(lm, hook, 4, tiny_corpus), tmp_path / "c", tiny_corpus, progress=False).complete
    assert seen == []  # a smaller budget reads the longer shard as it is


def test_corpus_too_small_is_a_clear_error(lm, hook, tiny_corpus, tmp_path):
    with pytest.raises(UserError, match="has only .* contexts"):
        get_cache(lm, _spec(lm, hook, 10_000, tiny_corpus), tmp_path / "c", tiny_corpus, progress=False)


def test_example_cache_pools_real_tokens_only(lm, hook, tmp_path):
    texts = ["A short one.", "A somewhat longer sentence about rivers and mountains in the north."]
    cache = get_example_cache(lm, hook, "t", texts, ctx_len=32, cache_root=tmp_path, progress=False)
    pooled = cache.mean_pooled()
    ids = [lm.bos_token_id] + lm.tokenizer(texts[0], add_special_tokens=False).input_ids
    alone = lm.hook_activations(torch.tensor([ids]), hook)[0, 1:].mean(0)
    torch.testing.assert_close(pooled[0], alone, atol=0.05, rtol=1e-2)  # fp16 storage


def test_example_text_that_tokenizes_to_nothing(lm, hook, tmp_path):
    with pytest.raises(UserError, match="text #1 tokenizes to nothing"):
        get_example_cache(lm, hook, "bad", ["fine text", ""], cache_root=tmp_path, progress=False)


def test_trainer_reads_a_cache_as_get_cache_writes_it(lm, hook, tiny_corpus, tmp_path):
    """The trainer's source takes a cache folder exactly as `get_cache` leaves it (no extra marker),
    and only the shards the recipe's budget names, even after a larger budget extended the folder."""
    from saebench_scaffold.training.data import cache_source

    small = _spec(lm, hook, 6, tiny_corpus)
    get_cache(lm, _spec(lm, hook, 9, tiny_corpus), tmp_path / "c", tiny_corpus, progress=False)  # 3 shards
    cache = get_cache(lm, small, tmp_path / "c", tiny_corpus, progress=False)
    src = cache_source(cache.root, seed=0, n_shards=small.n_shards)
    assert small.n_shards == 2 and src.tokens_per_epoch == 6 * 15
    with pytest.raises(UserError, match="needs 4"):
        cache_source(cache.root, n_shards=4)
