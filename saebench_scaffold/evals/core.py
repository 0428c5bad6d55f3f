"""`core`: sparsity, latent density (the dense-latent fraction), reconstruction, the scaffold's share,
and what splicing the SAE in does to next-token loss.

Conventions (SAEBench's, except where noted):
  - statistics over non-special tokens only (position 0 / BOS and special tokens are excluded);
  - a latent "fires" when its activation is > 0; density = fraction of tokens where it fires;
  - L0 counts sparse latents only: the scaffold is dense by design and is reported on its own;
  - FVU = Σ‖x − x̂‖² / Σ‖x − mean(x)‖² (variance around the mean; SAEBench's from-zero figure is
    also given, as `explained_variance_legacy_from_zero`);
  - CE: the SAE output (or zeros) replaces the hook activation at non-special positions only, and
    loss is averaged over predictions made from non-special positions; zero ablation is the same
    edit with zeros. CE-loss score = (CE_zero − CE_sae) / (CE_zero − CE_clean).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from pydantic import Field

from .base import CE_OFFSET_CONTEXTS, EvalContext, Task, TaskConfig, TaskOutput

BODY = 127  # non-special tokens per 128-token context


class CoreConfig(TaskConfig):
    n_density_tokens: int = Field(131_072, gt=0, description="non-special tokens for density, L0 and FVU (SAEBench: ~4.1M)")
    n_ce_tokens: int = Field(4_096, ge=0, description="tokens for CE / KL with the SAE spliced in (SAEBench: ~410k); 0 skips CE")
    dense_thresholds: list[float] = Field([0.1, 0.01], description="a latent is dense when its density exceeds a threshold")
    batch_tokens: int = Field(4096, gt=0)
    ce_batch_contexts: int = Field(8, gt=0)
    dataset: str = "wikipedia"


class CoreTask(Task):
    name = "core"
    description = "L0, latent density and dense-latent fraction, FVU (around the mean), scaffold share, CE/KL with the SAE spliced in"
    version = 1
    Config = CoreConfig
    summary_metrics = (("sparsity", "l0"), ("reconstruction_quality", "fvu"), ("density", "dense_frac_gt_0.1"),
                       ("density", "frac_dead"), ("model_behavior_preservation", "ce_loss_score"))

    def apply_limit(self, cfg: CoreConfig, limit: int) -> CoreConfig:
        return cfg.model_copy(update={"n_density_tokens": min(cfg.n_density_tokens, limit),
                                      "n_ce_tokens": min(cfg.n_ce_tokens, limit)})

    def run(self, ctx: EvalContext, sae, cfg: CoreConfig) -> TaskOutput:
        cache = ctx.text_cache(math.ceil(cfg.n_density_tokens / BODY), dataset=cfg.dataset)
        stats = reconstruction_stats(sae, cache.iter_token_batches(cfg.batch_tokens, limit=cfg.n_density_tokens),
                                     cfg.dense_thresholds)
        metrics = {k: v for k, v in stats.items() if k not in ("per_latent", "n_tokens")}
        token_counts = {"density_tokens": stats["n_tokens"]}
        if cfg.n_ce_tokens:
            ce_cache = ctx.text_cache(math.ceil(cfg.n_ce_tokens / BODY), offset=CE_OFFSET_CONTEXTS, dataset=cfg.dataset)
            metrics["model_behavior_preservation"] = ce_with_sae(ctx, sae, ce_cache, cfg.ce_batch_contexts)
            token_counts["ce_tokens"] = metrics["model_behavior_preservation"].pop("n_tokens")
        details = [{"latent": i, "density": d, "mean_activation_when_firing": m}
                   for i, (d, m) in enumerate(zip(stats["per_latent"]["density"], stats["per_latent"]["mean_when_firing"]))]
        return TaskOutput(metrics=metrics, details=details, datasets=[ctx.dataset_id(cfg.dataset)], token_counts=token_counts)


@torch.no_grad()
def reconstruction_stats(sae, batches, dense_thresholds=(0.1, 0.01)) -> dict:
    """One streamed pass: sparsity, density, FVU, scaffold share. Sums in float64 for stability."""
    d_sae = sae.d_sae
    fire = torch.zeros(d_sae, dtype=torch.float64)
    act_sum = torch.zeros(d_sae, dtype=torch.float64)
    n = 0
    l0 = l1 = sse = ss0 = cos = l2_ratio = 0.0
    x_sum = None
    parts = {name: [None, 0.0] for name in ("recon", "sparse", "scaffold")}  # [sum vector, sum of squares]
    for x in batches:
        x = x.to(sae.W_enc.device, sae.W_enc.dtype)
        f, sparse, scaffold = sae.reconstruct_parts(x)
        recon = sparse + scaffold + sae.b_dec
        xd = x.double()
        fired = f > 0
        fire += fired.sum(0).double().cpu()
        act_sum += f.clamp_min(0).sum(0).double().cpu()
        l0 += fired.sum().item()
        l1 += f.abs().sum().item()
        sse += (xd - recon.double()).pow(2).sum().item()
        ss0 += xd.pow(2).sum().item()
        x_sum = xd.sum(0) if x_sum is None else x_sum + xd.sum(0)
        cos += F.cosine_similarity(recon, x, dim=-1).sum().item()
        l2_ratio += (recon.norm(dim=-1) / x.norm(dim=-1).clamp_min(1e-12)).sum().item()
        for name, t in (("recon", recon), ("sparse", sparse), ("scaffold", scaffold)):
            td = t.double()
            parts[name][0] = td.sum(0) if parts[name][0] is None else parts[name][0] + td.sum(0)
            parts[name][1] += td.pow(2).sum().item()
        n += x.shape[0]
    if n == 0:
        raise ValueError("no tokens to evaluate")
    total_var = ss0 - x_sum.pow(2).sum().item() / n  # Σ‖x − mean‖²

    def var(name):
        s, sq = parts[name]
        return max(sq - s.pow(2).sum().item() / n, 0.0)

    density = fire / n
    mean_when = torch.where(fire > 0, act_sum / fire.clamp_min(1), torch.zeros_like(fire))
    fvu = sse / total_var
    density_metrics = {"frac_alive": (density > 0).double().mean().item(), "frac_dead": (density == 0).double().mean().item()}
    for t in dense_thresholds:
        count = int((density > t).sum())
        density_metrics[f"dense_frac_gt_{t:g}"] = count / d_sae
        density_metrics[f"dense_count_gt_{t:g}"] = count
    density_metrics["mean_density"] = density.mean().item()
    recon_var = var("recon")
    return {
        "sparsity": {"l0": l0 / n, "l1": l1 / n},
        "density": density_metrics,
        "reconstruction_quality": {
            "fvu": fvu, "explained_variance": 1 - fvu, "explained_variance_legacy_from_zero": 1 - sse / ss0,
            "mse": sse / (n * x.shape[-1]), "cossim": cos / n, "l2_ratio": l2_ratio / n,
        },
        "scaffold": {
            "scaffold_rank": sae.scaffold_rank,
            "scaffold_variance_share": var("scaffold") / recon_var if recon_var > 0 else 0.0,
            "sparse_variance_share": var("sparse") / recon_var if recon_var > 0 else 0.0,
            "scaffold_fvu_alone": 1 - var("scaffold") / total_var if sae.scaffold_rank else 1.0,
        },
        "n_tokens": n,
        "per_latent": {"density": density.tolist(), "mean_when_firing": mean_when.tolist()},
    }


def masked_ce(logits: torch.Tensor, tokens: torch.Tensor, special: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-prediction CE and a mask of the predictions that count (made from a non-special position,
    of a non-special next token)."""
    ce = F.cross_entropy(logits[:, :-1].flatten(0, 1), tokens[:, 1:].flatten().to(logits.device), reduction="none")
    keep = (~special[:, :-1] & ~special[:, 1:]).flatten().to(ce.device)
    return ce, keep


@torch.no_grad()
def ce_with_sae(ctx: EvalContext, sae, cache, batch_contexts: int = 8) -> dict:
    """CE clean / with SAE / with zero ablation, and KL to the clean distribution, from cached hook
    activations; only the layers after the hook run (the clean pass included, for KL)."""
    lm = ctx.lm
    acts, tokens, special = cache.contexts()
    tot = {"clean": 0.0, "sae": 0.0, "zero": 0.0, "kl_sae": 0.0, "kl_zero": 0.0}
    count = 0
    for s in range(0, tokens.shape[0], batch_contexts):
        a, t, sp = acts[s:s + batch_contexts], tokens[s:s + batch_contexts], special[s:s + batch_contexts]
        a = a.to(sae.W_enc.device)
        keep_pos = sp.unsqueeze(-1).to(a.device)
        spliced = torch.where(keep_pos, a, sae(a))
        zeroed = torch.where(keep_pos, a, torch.zeros_like(a))
        lp_clean = F.log_softmax(lm.logits_from_hook(t, ctx.hook, a), -1)
        ce_clean, keep = masked_ce(lp_clean, t, sp)
        tot["clean"] += ce_clean[keep].sum().item()
        for name, edited in (("sae", spliced), ("zero", zeroed)):
            lp = F.log_softmax(lm.logits_from_hook(t, ctx.hook, edited), -1)
            ce, _ = masked_ce(lp, t, sp)
            tot[name] += ce[keep].sum().item()
            kl = (lp_clean.exp() * (lp_clean - lp)).sum(-1)[:, :-1].flatten()
            tot[f"kl_{name}"] += kl[keep].sum().item()
        count += int(keep.sum())
    m = {k: v / count for k, v in tot.items()}
    denom = m["zero"] - m["clean"]
    return {
        "ce_loss_clean": m["clean"], "ce_loss_with_sae": m["sae"], "ce_loss_with_ablation": m["zero"],
        "ce_loss_score": (m["zero"] - m["sae"]) / denom if denom else float("nan"),
        "kl_div_with_sae": m["kl_sae"], "kl_div_with_ablation": m["kl_zero"],
        "kl_div_score": (m["kl_zero"] - m["kl_sae"]) / m["kl_zero"] if m["kl_zero"] else float("nan"),
        "n_tokens": count,
    }
