"""Benchmarks (pytest-benchmark) for the activation cache.

Run with `pytest tests/benchmarks --benchmark-enable`; under the default `--benchmark-disable` they
run once at toy size as ordinary tests. Ratios land in `benchmark.extra_info`:
  - cache_vs_truncated_forward: cache-build tokens/s over a bare HF forward that stops at the hook
    layer on the same tokens (goal >= 0.9: caching adds little beyond the forward itself);
  - cache_vs_full_forward: the same over a full HF forward with output_hidden_states (how a naive
    cache is usually built);
  - core_cold_over_warm: `core` wall time on a first checkpoint (builds the caches) over a second
    checkpoint with warm caches.
"""

from __future__ import annotations

import time

import pytest
import torch

from saebench_scaffold.activations.cache import CacheSpec, get_cache
from saebench_scaffold.sources.data import dataset_id, token_contexts
from saebench_scaffold.sources.hooks import parse_hook

pytestmark = pytest.mark.slow


def _sizes(benchmark):
    return (4, 32) if benchmark.disabled else (64, 128)  # (contexts, context length)


def test_cache_throughput_vs_bare_forward(benchmark, request, lm, hook, offline, tmp_path):
    n_ctx, ctx_len = _sizes(benchmark)
    spec = CacheSpec(lm.source_id, hook, "wikipedia", dataset_id("wikipedia")["sha256"], ctx_len, n_ctx,
                     dtype="float16", shard_contexts=n_ctx)
    tokens = torch.stack(list(token_contexts(lm, "wikipedia", n_ctx, ctx_len)))
    layer = parse_hook(hook).last_layer_needed

    def truncated_forward():
        kept = lm.hf.model.layers
        lm.hf.model.layers = kept[: layer + 1]  # the hand-written floor: embeddings + layers up to the hook
        try:
            with torch.inference_mode():
                for s in range(0, n_ctx, 16):
                    lm.hf(input_ids=tokens[s:s + 16], use_cache=False)
        finally:
            lm.hf.model.layers = kept

    def full_forward():
        with torch.inference_mode():
            for s in range(0, n_ctx, 16):
                lm.hf(input_ids=tokens[s:s + 16], use_cache=False, output_hidden_states=True)

    def timed(fn):
        t = time.perf_counter()
        fn()
        return time.perf_counter() - t

    truncated_forward()  # warm-up
    t_trunc = min(timed(truncated_forward) for _ in range(2))
    t_full = timed(full_forward)
    runs = iter(range(100))
    result = benchmark.pedantic(lambda: get_cache(lm, spec, tmp_path / f"c{next(runs)}", None, progress=False),
                                rounds=2, iterations=1)
    assert result.contexts()[0].shape == (n_ctx, ctx_len, lm.d_model)
    t_cache = benchmark.stats.stats.min if benchmark.stats else timed(
        lambda: get_cache(lm, spec, tmp_path / "again", None, progress=False))
    benchmark.extra_info.update({
        "tokens": n_ctx * ctx_len,
        "cache_tok_per_s": n_ctx * ctx_len / t_cache,
        "cache_vs_truncated_forward": t_trunc / t_cache,
        "cache_vs_full_forward": t_full / t_cache,
    })


def test_core_second_checkpoint_warm_vs_first(benchmark, request, lm, hook, offline, tmp_path):
    from saebench_scaffold.evals.base import EvalContext
    from saebench_scaffold.evals.core.task import CoreTask
    from saebench_scaffold.sources.model import ModelSpec
    from saebench_scaffold.saes import SAEConfig, make_sae

    enabled = not benchmark.disabled
    task = CoreTask()
    cfg = task.make_config({"n_density_tokens": 16_384 if enabled else 256, "n_ce_tokens": 1024 if enabled else 64})
    ctx = EvalContext(ModelSpec(), hook, None, str(tmp_path / "cache"), progress=False)
    ctx.__dict__["lm"] = lm  # the already-loaded model
    saes = [make_sae(SAEConfig("batchtopk", lm.d_model, 2304, k=32, scaffold_rank=r)) for r in (0, 24)]
    t = time.perf_counter()
    task.run(ctx, saes[0], cfg)
    cold = time.perf_counter() - t
    out = benchmark.pedantic(lambda: task.run(ctx, saes[1], cfg), rounds=1, iterations=1)
    warm = benchmark.stats.stats.min if benchmark.stats else None
    if warm is None:
        t = time.perf_counter()
        task.run(ctx, saes[1], cfg)
        warm = time.perf_counter() - t
    assert out.metrics["scaffold"]["scaffold_rank"] == 24
    benchmark.extra_info.update({"core_cold_s": cold, "core_warm_s": warm, "core_cold_over_warm": cold / warm})
    assert cold > warm  # the cache makes the second checkpoint cheaper
