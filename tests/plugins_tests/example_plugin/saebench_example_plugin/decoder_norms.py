"""`decoder_norms`: norms of the SAE's decoder rows, and how many latents fire on a few tokens."""

from __future__ import annotations

import math

import torch
from pydantic import Field

from saebench_scaffold.evals.base import EvalContext, Task, TaskConfig, TaskOutput


class DecoderNormsConfig(TaskConfig):
    n_tokens: int = Field(2048, gt=0, description="evaluation tokens for the firing count")


class DecoderNormsTask(Task):
    name = "decoder_norms"
    description = "decoder row norms and the fraction of latents firing on a few tokens"
    version = 1
    Config = DecoderNormsConfig
    summary_metrics = (("decoder", "mean_norm"), ("firing", "frac_fired"))
    # what the leaderboard range-checks (pattern, low, high); "d_sae" would stand for the checkpoint's width
    metric_ranges = (("decoder.*_norm", 0, math.inf), ("firing.frac_fired", 0, 1), ("details.norm", 0, math.inf))

    def apply_limit(self, cfg: DecoderNormsConfig, limit: int) -> DecoderNormsConfig:
        return cfg.model_copy(update={"n_tokens": min(cfg.n_tokens, limit)})

    @torch.no_grad()
    def run(self, ctx: EvalContext, sae, cfg: DecoderNormsConfig) -> TaskOutput:
        norms = sae.W_dec.float().norm(dim=1)
        cache = ctx.text_cache(math.ceil(cfg.n_tokens / 127))
        fired = torch.zeros(sae.d_sae, dtype=torch.bool)
        n = 0
        for x in cache.iter_token_batches(1024, limit=cfg.n_tokens):
            fired |= (sae.encode(x.to(sae.W_enc.dtype)) > 0).any(0).cpu()
            n += x.shape[0]
        return TaskOutput(
            metrics={"decoder": {"mean_norm": norms.mean().item(), "min_norm": norms.min().item(),
                                 "max_norm": norms.max().item()},
                     "firing": {"frac_fired": fired.float().mean().item()}},
            details=[{"latent": i, "norm": v} for i, v in enumerate(norms.tolist())],
            datasets=[ctx.dataset_id("wikipedia")], token_counts={"tokens": n})
