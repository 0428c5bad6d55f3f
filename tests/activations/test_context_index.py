"""`iter_token_batches_with_contexts`: the context each token comes from, for evaluation replicates
over contexts (core), on shards held in memory (no model needed)."""

from __future__ import annotations

import torch

from saebench_scaffold.activations.cache import ActivationCache


def test_batches_carry_the_context_index_across_shards_and_skip_special_positions():
    shards = []
    for n_ctx in (3, 2):
        acts = torch.arange(n_ctx * 4 * 2, dtype=torch.float32).view(n_ctx, 4, 2) + 100 * len(shards)
        special = torch.zeros(n_ctx, 4, dtype=torch.bool)
        special[:, 0] = True
        shards.append({"acts": acts, "special": special})
    cache = object.__new__(ActivationCache)
    cache.iter_shards = lambda: iter(shards)
    pairs = list(cache.iter_token_batches_with_contexts(batch_tokens=4, limit=14))
    tokens = torch.cat([b for b, _ in pairs])
    contexts = torch.cat([c for _, c in pairs])
    assert len(tokens) == 14 and contexts.tolist() == [0] * 3 + [1] * 3 + [2] * 3 + [3] * 3 + [4] * 2
    assert torch.equal(tokens, torch.cat(list(cache.iter_token_batches(batch_tokens=4, limit=14))))
    assert tokens[3].tolist() == shards[0]["acts"][1, 1].tolist()  # context 1's first non-special token
