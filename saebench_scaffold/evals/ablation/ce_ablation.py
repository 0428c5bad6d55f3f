"""`ce_ablation`: next-token loss when the scaffold, the top-r PCA subspace, the scaffold-aligned
sparse latents or a random subspace is removed from the residual stream (arXiv 2606.14040: on
Gemma-2-2B removing the scaffold raises CE 7.5x, the top-24 PCs 2.8x, the 787 most aligned latents 2.9x).

Procedure
  - held-out contexts (from CE_OFFSET_CONTEXTS), hook activations read once from the shared cache;
    each condition edits them at non-special positions only and runs only the layers after the hook
    (`lm.logits_from_hook`), as `core`'s CE does; loss over predictions made from non-special
    positions of non-special next tokens (`core.masked_ce`);
  - PCA fitted on training-split tokens (`ctx.train_cache`), r = the scaffold rank (hybrids) or
    `pca_rank` (default 24) — see `conditions.py` for every condition's exact formula;
  - CE and CE ratio to clean with percentile bootstrap CIs over contexts (paired: clean and the
    condition are resampled together; seeded by ctx.seed);
  - fraction of activation variance each condition removes, on the same evaluation tokens;
  - details: principal angles scaffold vs top-r PCs, overlap of both with outlier coordinates.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from pydantic import Field

from . import conditions as ab
from ..base import CE_OFFSET_CONTEXTS, EvalContext, Task, TaskConfig, TaskOutput
from .ce import BODY, masked_ce
from ..declarations import table_column
from .checks import SUMMARY, check_ce_ablation

RunFromHook = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (tokens, acts) -> logits


class CEAblationConfig(TaskConfig):
    n_ce_tokens: int = Field(4_096, gt=0, description="evaluation tokens (held-out contexts from CE_OFFSET_CONTEXTS); core's default CE budget")
    batch_contexts: int = Field(8, gt=0)
    pca_rank: int | None = Field(None, description="r of the PCA/random subspaces; default: the scaffold rank, or 24 for ordinary SAEs")
    pca_fit_tokens: int = Field(200_000, gt=0, description="training-split tokens for the PCA fit (same as the PCA baseline's)")
    n_aligned_latents: int | None = Field(None, ge=0, description="N for 'aligned_latents_removed'; default d_sae // 20 (787 of a 16k dictionary ~ the paper's)")
    variance_matched: bool = Field(True, description="also remove the N aligned latents matching the scaffold condition's removed variance")
    match_sample_tokens: int = Field(8_192, gt=0, description="training tokens used to choose the variance-matched N")
    reference_conditions: bool = Field(True, description="also report the SAE spliced in and zero ablation")
    n_bootstrap: int = Field(1000, ge=10)
    ci_level: float = Field(0.95, gt=0, lt=1)
    outlier_factor: float = Field(10.0, gt=1)
    dataset: str = "wikipedia"


class CEAblationTask(Task):
    name = "ce_ablation"
    description = "Next-token CE with the scaffold / top-r PCs / scaffold-aligned latents / a random subspace removed (ratio to clean, bootstrap CIs)"
    version = 1
    Config = CEAblationConfig
    summary_metrics = (("summary", "scaffold_ce_ratio"), ("summary", "pca_ce_ratio"),
                       ("summary", "aligned_matched_ce_ratio"), ("summary", "random_ce_ratio"))

    metric_ranges = (
        ("*.ce_increase", -math.inf, math.inf),
        ("*.ce_ratio*", 0, math.inf),
        ("*.ce", 0, math.inf),
        ("*.ce_ci_*", 0, math.inf),
        ("*.ci_level", 0, 1),
        ("summary.*_ce_ratio", 0, math.inf),
        ("subspaces.principal_angle_*_deg", 0, 90),
        ("*outlier_mass*", 0, 1),
        # 1 − Var(X − A)/Var(X): below 0 when the subtracted part A adds variance (Cov(X, A) small,
        # measured: Matryoshka r=24's aligned latents, −0.02); never above 1.
        ("*.variance_removed_frac", -math.inf, 1),
        ("*.rank", 0, "d_in"),
    )
    aggregate_check = staticmethod(check_ce_ablation)
    leaderboard_columns = (
        table_column("CE× no scaffold", ("summary", "scaffold_ce_ratio"), better=None),
        table_column("CE× no top-r PCs", ("summary", "pca_ce_ratio"), better=None),
    )
    leaderboard_order = 70
    saebench_export = None  # SAEBench has no such eval

    def apply_limit(self, cfg: CEAblationConfig, limit: int) -> CEAblationConfig:
        # --limit caps evaluation tokens; the PCA fit and the matching sample shrink to one cache shard.
        return cfg.model_copy(update={"n_ce_tokens": min(cfg.n_ce_tokens, limit),
                                      "pca_fit_tokens": min(cfg.pca_fit_tokens, max(limit, 8_192)),
                                      "match_sample_tokens": min(cfg.match_sample_tokens, max(limit, 2_048)),
                                      "n_bootstrap": min(cfg.n_bootstrap, 200)})

    def run(self, ctx: EvalContext, sae, cfg: CEAblationConfig) -> TaskOutput:
        r, pca, sample, conditions = conditions_for(ctx, sae, cfg)

        cache = ctx.text_cache(math.ceil(cfg.n_ce_tokens / BODY), offset=CE_OFFSET_CONTEXTS, dataset=cfg.dataset)
        acts, tokens, special = cache.contexts(math.ceil(cfg.n_ce_tokens / BODY))
        acts = acts.to(sae.W_enc.device)
        lm = ctx.lm

        def run_from_hook(t, a):
            return lm.logits_from_hook(t, ctx.hook, a)

        model_only = {"clean": None, **{c.name: c.fn for c in conditions if c.applicable and c.model_only}}
        # clean, top-r PCA, random-subspace and zero-ablation CE are the same for every checkpoint with
        # this rank: once per eval call (the key holds everything they depend on)
        key = ("ce_ablation.model_only", ctx.hook, cfg.dataset, tokens.shape[0], CE_OFFSET_CONTEXTS, cfg.batch_contexts,
               r, cfg.pca_fit_tokens, ctx.seed, tuple(sorted(model_only)), str(acts.device), str(acts.dtype))
        if key not in ctx.memo:
            ctx.memo[key] = per_context_ce(run_from_hook, acts, tokens, special, model_only, cfg.batch_contexts)
        shared, counts = ctx.memo[key]
        own = {c.name: c.fn for c in conditions if c.applicable and not c.model_only}
        sums = {**shared, **(per_context_ce(run_from_hook, acts, tokens, special, own, cfg.batch_contexts)[0] if own else {})}
        eval_tokens = acts[~special.to(acts.device)]
        metrics = summarize(sums, counts, conditions, eval_tokens, cfg, ctx.generator(salt=777))
        geo = ab.geometry(sae, pca, r, cfg.outlier_factor)
        metrics["subspaces"] = {"rank": r, "pca_fit_tokens": pca.n_tokens, **geo["metrics"]}
        details = [{"condition": name, **m} for name, m in metrics.items() if name != "subspaces"]
        # a condition switched off (variance_matched=false) has no entry: its headline is None, as when it does not apply
        metrics["summary"] = {f"{short}_ce_ratio": metrics.get(name, {}).get("ce_ratio") for short, name in SUMMARY.items()}
        return TaskOutput(metrics=metrics, details=details,
                          unstructured={"geometry": geo["unstructured"],
                                        "conditions": {c.name: c.description for c in conditions}},
                          datasets=[ctx.dataset_id(cfg.dataset)],
                          token_counts={"ce_tokens": int(counts.sum()), "pca_fit_tokens": pca.n_tokens,
                                        "match_sample_tokens": int(sample.shape[0])})


def conditions_for(ctx: EvalContext, sae, cfg: CEAblationConfig) -> tuple[int, object, torch.Tensor, list[ab.Condition]]:
    """(r, PCA fit, variance-matching sample, conditions) of `cfg` for this checkpoint: what
    `ce_ablation` measures CE under and `downstream` measures task accuracy under (one implementation)."""
    r = ab.subspace_rank(sae, cfg.pca_rank)
    pca = ctx.train_pca(cfg.pca_fit_tokens, cfg.dataset)
    sample = ab.reference_sample(ctx, cfg.match_sample_tokens, cfg.dataset)
    return r, pca, sample, build_conditions(sae, pca, r, sample, cfg, ctx.generator(salt=4141))


def build_conditions(sae, pca, r: int, sample: torch.Tensor, cfg: CEAblationConfig, generator: torch.Generator) -> list[ab.Condition]:
    conds = ab.subspace_conditions(sae, pca, r, generator)
    target = None
    if cfg.variance_matched:
        ref = conds[0] if conds[0].applicable else conds[1]  # scaffold, else top-r PCA (mean-preserving)
        target = ab.variance_removed(ref.fn, sample.to(sae.W_enc.device))["variance_removed_frac"]
    n_fixed = cfg.n_aligned_latents if cfg.n_aligned_latents is not None else max(1, sae.d_sae // 20)
    conds += ab.aligned_latent_conditions(sae, pca, r, n_fixed, sample, target)
    if cfg.reference_conditions:
        conds += ab.reference_conditions(sae)
    return conds


@torch.no_grad()
def per_context_ce(run_from_hook: RunFromHook, acts: torch.Tensor, tokens: torch.Tensor, special: torch.Tensor,
                   conditions: dict[str, ab.Edit | None], batch_contexts: int = 8) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Per-context CE sums [n_ctx] for every condition (None = clean) and per-context prediction
    counts [n_ctx]. Each condition edits non-special positions of the cached hook activations and
    calls `run_from_hook(tokens, edited_acts)` (only the later layers): the early layers never rerun."""
    n = tokens.shape[0]
    sums = {name: torch.zeros(n, dtype=torch.float64) for name in conditions}
    counts = torch.zeros(n, dtype=torch.float64)
    for s in range(0, n, batch_contexts):
        a, t, sp = acts[s:s + batch_contexts], tokens[s:s + batch_contexts], special[s:s + batch_contexts]
        keep_pos = sp.unsqueeze(-1).to(a.device)
        b = t.shape[0]
        for name, fn in conditions.items():
            edited = a if fn is None else torch.where(keep_pos, a, fn(a))
            logits = run_from_hook(t, edited)
            ce, keep = masked_ce(logits, t, sp)
            ce = (ce * keep).view(b, -1).double().sum(1).cpu()
            sums[name][s:s + b] = ce
            counts[s:s + b] = keep.view(b, -1).double().sum(1).cpu()  # the same for every condition
    return sums, counts


def bootstrap_ce(sums: dict[str, torch.Tensor], counts: torch.Tensor, n_boot: int, level: float,
                 generator: torch.Generator, reference: str = "clean") -> dict[str, dict[str, float]]:
    """CE per condition and ratio to `reference`, each with a paired percentile bootstrap CI over contexts."""
    n = counts.numel()
    idx = torch.randint(0, n, (n_boot, n), generator=generator)
    cnt_b = counts[idx].sum(1)
    lo_q, hi_q = (1 - level) / 2, 1 - (1 - level) / 2
    ref_b = sums[reference][idx].sum(1) / cnt_b
    ref = float(sums[reference].sum() / counts.sum())
    out = {}
    for name, s in sums.items():
        ce = float(s.sum() / counts.sum())
        ce_b = s[idx].sum(1) / cnt_b
        ratio_b = ce_b / ref_b
        out[name] = {"ce": ce, "ce_ci_low": float(ce_b.quantile(lo_q)), "ce_ci_high": float(ce_b.quantile(hi_q)),
                     "ce_ratio": ce / ref, "ce_ratio_ci_low": float(ratio_b.quantile(lo_q)),
                     "ce_ratio_ci_high": float(ratio_b.quantile(hi_q)),
                     "ce_increase": ce - ref}
    return out


def summarize(sums, counts, conditions: list[ab.Condition], eval_tokens: torch.Tensor, cfg: CEAblationConfig,
              generator: torch.Generator) -> dict[str, dict]:
    stats = bootstrap_ce(sums, counts, cfg.n_bootstrap, cfg.ci_level, generator)
    metrics = {"clean": {**stats["clean"], "n_tokens": int(counts.sum()), "n_contexts": int(counts.numel()),
                         "ci_level": cfg.ci_level}}
    for c in conditions:
        if not c.applicable:
            metrics[c.name] = {"status": c.status, **c.info}
            continue
        var = ab.variance_removed(c.fn, eval_tokens)
        metrics[c.name] = {"status": "ok", **stats[c.name], **var, **c.info}
    return metrics
