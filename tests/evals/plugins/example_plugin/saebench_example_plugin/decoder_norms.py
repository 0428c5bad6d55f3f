"""`decoder_norms`: norms of the SAE's decoder rows, and how many latents fire on a few tokens."""

from __future__ import annotations

import math

import torch
from pydantic import Field

from saebench_scaffold.evals.base import EvalContext, Task, TaskConfig, TaskOutput
from saebench_scaffold.evals.checks import compare
from saebench_scaffold.evals.declarations import SAEBenchExport, table_column


class DecoderNormsConfig(TaskConfig):
    n_tokens: int = Field(2048, gt=0, description="evaluation tokens for the firing count")


def check_decoder_norms(res) -> list[tuple[str, str]]:
    """The headline mean and extremes recomputed from the per-latent norms (the leaderboard runs this)."""
    norms = [row["norm"] for row in res.eval_result_details]
    decoder, problems = res.eval_result_metrics.get("decoder", {}), []
    if norms:
        for key, value in (("mean_norm", math.fsum(norms) / len(norms)), ("min_norm", min(norms)), ("max_norm", max(norms))):
            compare(problems, f"decoder.{key}", decoder.get(key), value, "the per-latent norms")
    return problems


class DecoderNormsTask(Task):
    name = "decoder_norms"
    description = "decoder row norms and the fraction of latents firing on a few tokens"
    version = 1
    Config = DecoderNormsConfig
    summary_metrics = (("decoder", "mean_norm"), ("firing", "frac_fired"))
    # what the leaderboard range-checks (pattern, low, high); "d_sae" would stand for the checkpoint's width
    metric_ranges = (("decoder.*_norm", 0, math.inf), ("firing.frac_fired", 0, 1), ("details.norm", 0, math.inf))
    # everything else the package needs to know about the task lives here too (evals/declarations.py):
    presets = {"saebench": {"n_tokens": 65536}}  # the budget under `eval --preset saebench`
    aggregate_check = staticmethod(check_decoder_norms)  # headline recomputed from the details on submission
    leaderboard_columns = (table_column("decoder norm", ("decoder", "mean_norm"), better=None),
                           table_column("fired", ("firing", "frac_fired"), better=None))
    # `export-saebench` writes OUT_DIR/decoder_norms/<release>_<sae_id>_eval_results.json with these categories
    saebench_export = SAEBenchExport("decoder_norms", metric_categories=("decoder", "firing"))

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
