import torch

from saebench_scaffold.training.data import cache_source, tensor_source

from .conftest import synthetic_acts, write_cache


def test_batches_are_a_function_of_seed_and_step(tmp_path):
    acts = torch.arange(1000 * 4, dtype=torch.float32).reshape(1000, 4)
    a, b = tensor_source(acts, seed=3, shard_tokens=100, buffer_shards=3), tensor_source(acts, seed=3, shard_tokens=100)
    assert torch.equal(a.batch(7, 64), tensor_source(acts, seed=3, shard_tokens=100, buffer_shards=3).batch(7, 64))
    epoch = torch.cat([a.batch(i, 100) for i in range(10)])  # one epoch = every token exactly once
    assert torch.equal(torch.sort(epoch[:, 0]).values, acts[:, 0])
    assert not torch.equal(epoch, acts) and not torch.equal(a.batch(10, 100), a.batch(0, 100))  # reshuffled
    assert not torch.equal(a.batch(0, 64), tensor_source(acts, seed=4, shard_tokens=100).batch(0, 64))
    assert b.batch(0, 64).shape == (64, 4)


def test_cache_source_skips_special_positions(tmp_path):
    acts = synthetic_acts(16 * 24)
    acts.view(24, 16, -1)[:, 0] = 1e6  # the BOS position: must never be served
    src = cache_source(write_cache(tmp_path / "c", acts), seed=0, buffer_shards=2)
    assert src.tokens_per_epoch == 24 * 15
    epoch = src.tokens(0, src.tokens_per_epoch)
    assert epoch.abs().max() < 1e5 and epoch.dtype == torch.float32
