"""`core`: sparsity, latent density (the dense-latent fraction), reconstruction, the scaffold's share,
typical-token figures, and what splicing the SAE in does to next-token loss.

Conventions (SAEBench's, except where noted):
  - statistics over non-special tokens only (position 0 / BOS and special tokens are excluded);
  - a latent "fires" when its activation is > 0; density = fraction of tokens where it fires;
  - L0 = non-zero sparse latents per token (AbsTopK's negative latents count; density keeps `> 0`):
    the scaffold is dense by design and is reported on its own;
  - FVU = Σ‖x − x̂‖² / Σ‖x − mean(x)‖² (variance around the mean) and our `explained_variance` =
    1 − FVU: the headline. SAEBench 0.6.0's two figures, computed as its `evals/core/main.py`
    computes them (per batch of 16 prompts), are under `saebench_compat` with SAEBench's names —
    `explained_variance` (its buggy denominator, a squared mean of squares) and
    `explained_variance_legacy` (per-token 1 − ‖x − x̂‖² / ‖x − batch mean‖², averaged: the figure
    SAEBench's paper and published results use);
  - `typical_tokens`: a few massive-activation tokens (norm far above the median) dominate the
    all-token sums, so FVU and the variance shares are also given without them;
  - CE: the SAE output (or zeros) replaces the hook activation at non-special positions only, and
    loss is averaged over predictions made from non-special positions; zero ablation is the same
    edit with zeros. CE-loss score = (CE_zero − CE_sae) / (CE_zero − CE_clean), under SAEBench's
    `model_performance_preservation`; KL figures under `model_behavior_preservation`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from pydantic import Field

from ..ablation.ce import BODY, prediction_mask
from ..base import CE_OFFSET_CONTEXTS, EvalContext, Task, TaskConfig, TaskOutput
from ..declarations import SAEBenchExport, table_column
from ..stats import N_REPLICATES
from .checks import check_core
from .saebench_layout import saebench_core_metrics

SAEBENCH_BATCH_PROMPTS = 16  # sae-bench 0.6.0 core: CoreEvalConfig.batch_size_prompts and its CLI default

# Massive-activation tokens: norm > MASSIVE_NORM_MULTIPLE × the median token norm. Measured on
# SmolLM2-135M layer 14, core's default token set (131,072 held-out non-special tokens; median norm
# 154): the bulk is tight — p99 at 1.31× the median, p99.9 at 1.72× — and only 52 tokens (0.04%) lie
# above 2×, spread out to 180× (the massive activations of Sun et al. 2024). The count hardly moves
# between 3× (43) and 10× (35), so the split does not hinge on the exact multiple; 5× falls in a gap
# of the measured norms (none between 4.9× and 6.7×) and keeps a wide margin above the bulk (39 tokens).
MASSIVE_NORM_MULTIPLE = 5.0


class CoreConfig(TaskConfig):
    n_density_tokens: int = Field(131_072, gt=0, description="non-special tokens for density, L0 and FVU (SAEBench: ~4.1M)")
    n_ce_tokens: int = Field(4_096, ge=0, description="tokens for CE / KL with the SAE spliced in (SAEBench: ~410k); 0 skips CE")
    dense_thresholds: list[float] = Field([0.1, 0.01], description="a latent is dense when its density exceeds a threshold")
    saebench_batch_prompts: int = Field(SAEBENCH_BATCH_PROMPTS, gt=0,
                                        description="contexts per batch; SAEBench's explained-variance figures are per-batch statistics")
    massive_norm_multiple: float = Field(MASSIVE_NORM_MULTIPLE, gt=1,
                                         description="a token is massive when its norm exceeds this multiple of the median norm")
    ce_batch_contexts: int = Field(8, gt=0, description="contexts per forward pass for CE / KL (memory, not results)")
    dataset: str = Field("wikipedia", description="corpus the token sets are drawn from")
    n_replicates: int = Field(N_REPLICATES, ge=0, description="evaluation replicates over contexts (evals/stats.py) "
                                                              "for claims' intervals; 0: none")


class CoreTask(Task):
    name = "core"
    description = ("L0, latent density and dense-latent fraction, FVU (around the mean), SAEBench's explained-variance "
                   "figures, scaffold share, typical-token figures, CE/KL with the SAE spliced in")
    version = 3  # v3 adds eval_result_unstructured.evaluation_replicates (contexts); figures unchanged
    accepted_versions = (2,)
    Config = CoreConfig
    summary_metrics = (("sparsity", "l0"), ("reconstruction_quality", "fvu"), ("typical_tokens", "fvu"),
                       ("density", "dense_frac_gt_0.1"), ("density", "frac_dead"),
                       ("model_performance_preservation", "ce_loss_score"))

    # Density: SAEBench uses ~4.1M tokens; the local Wikipedia sample holds 3.8M between the density and CE
    # offsets, so that is the local canonical budget.
    presets = {"saebench": {"n_density_tokens": 3_800_000, "n_ce_tokens": 409_600}}
    metric_ranges = (
        ("sparsity.l0", 0, "d_sae"),
        ("sparsity.l1", 0, math.inf),
        ("density.dense_count_gt_*", 0, "d_sae"),
        ("density.*", 0, 1),                        # frac_alive, frac_dead, dense_frac_gt_*, mean_density
        ("*.scaffold_fvu_alone", -math.inf, 1),
        ("*.fvu", 0, math.inf),                     # all-token and typical-token FVU
        ("*explained_variance*", -math.inf, 1),     # ours (= 1 - fvu) and SAEBench's own figures
        ("*.mse", 0, math.inf),
        ("*.cossim", -1, 1),
        ("*.l2_ratio", 0, math.inf),
        ("scaffold.scaffold_rank", 0, "d_in"),
        ("*variance_share", 0, math.inf),           # can exceed 1 when scaffold and sparse parts anti-correlate
        ("typical_tokens.massive_token_frac", 0, 1),
        ("typical_tokens.massive_*", 0, math.inf),
        ("*.ce_loss_score", -math.inf, math.inf),   # finite; beyond [0, 1] when the SAE is worse than ablation
        ("*.ce_loss_*", 0, math.inf),               # CE with / without SAE, with ablation (nats)
        ("*.kl_div_score", -math.inf, 1),
        ("*.kl_div_*", 0, math.inf),
        ("details.density", 0, 1),
        ("details.mean_activation_when_firing", 0, math.inf),
    )
    aggregate_check = staticmethod(check_core)
    leaderboard_columns = (
        table_column("L0", ("sparsity", "l0"), better=None),
        table_column("FVU", ("reconstruction_quality", "fvu"), better=False),
        table_column("FVU typical", ("typical_tokens", "fvu"), better=False),
        table_column("dense>10%", ("density", "dense_frac_gt_0.1"), better=False),
        table_column("dense>1%", ("density", "dense_frac_gt_0.01"), better=False),
        table_column("dead", ("density", "frac_dead"), better=False),
        table_column("CE score", ("model_performance_preservation", "ce_loss_score"),
                     ("model_behavior_preservation", "ce_loss_score")),
        table_column("KL score", ("model_behavior_preservation", "kl_div_score")),
        table_column("scaffold var", ("scaffold", "scaffold_variance_share"), better=None),
        table_column("scaffold var typical", ("typical_tokens", "scaffold_variance_share"), better=None),
    )
    leaderboard_order = 10
    saebench_export = SAEBenchExport("core", metrics=saebench_core_metrics)

    def apply_limit(self, cfg: CoreConfig, limit: int) -> CoreConfig:
        return cfg.model_copy(update={"n_density_tokens": min(cfg.n_density_tokens, limit),
                                      "n_ce_tokens": min(cfg.n_ce_tokens, limit)})

    def run(self, ctx: EvalContext, sae, cfg: CoreConfig) -> TaskOutput:
        cache = ctx.text_cache(math.ceil(cfg.n_density_tokens / BODY), dataset=cfg.dataset)
        stats = reconstruction_stats(
            sae, lambda: cache.iter_token_batches_with_contexts(cfg.saebench_batch_prompts * BODY, limit=cfg.n_density_tokens),
            cfg.dense_thresholds, cfg.massive_norm_multiple, n_replicates=cfg.n_replicates)
        metrics = {k: v for k, v in stats.items() if k not in ("per_latent", "n_tokens", "replicates")}
        unstructured = {"evaluation_replicates": stats["replicates"]} if stats.get("replicates") else None
        token_counts = {"density_tokens": stats["n_tokens"]}
        if cfg.n_ce_tokens:
            ce_cache = ctx.text_cache(math.ceil(cfg.n_ce_tokens / BODY), offset=CE_OFFSET_CONTEXTS, dataset=cfg.dataset)
            ce = ce_with_sae(ctx, sae, ce_cache, cfg.ce_batch_contexts)
            token_counts["ce_tokens"] = ce.pop("n_tokens")
            metrics["model_performance_preservation"] = {k: ce[k] for k in CE_KEYS}
            metrics["model_behavior_preservation"] = {k: ce[k] for k in KL_KEYS}
        details = [{"latent": i, "density": d, "mean_activation_when_firing": m}
                   for i, (d, m) in enumerate(zip(stats["per_latent"]["density"], stats["per_latent"]["mean_when_firing"]))]
        return TaskOutput(metrics=metrics, details=details, datasets=[ctx.dataset_id(cfg.dataset)], token_counts=token_counts,
                          unstructured=unstructured)


CLEAN_MEMO_BYTES = 2 << 30  # the default 4,096 CE tokens need 1.66 GB of clean log-probs and probs (vocab 49,152)

CE_KEYS = ("ce_loss_score", "ce_loss_with_sae", "ce_loss_with_ablation", "ce_loss_without_sae")
KL_KEYS = ("kl_div_score", "kl_div_with_sae", "kl_div_with_ablation")


class VarianceSums:
    """Σ‖x − x̂‖², Σ x, Σ‖x‖² and the same for the reconstruction's parts over a set of tokens, in
    float64: variances around the mean from one streamed pass."""

    def __init__(self):
        self.n, self.sse, self.ss0, self.x_sum = 0, 0.0, 0.0, 0.0
        self.parts = {name: [0.0, 0.0] for name in ("recon", "sparse", "scaffold")}  # [sum vector, sum of squares]

    def add(self, xd, recon, sparse, scaffold) -> None:
        self.n += xd.shape[0]
        self.sse += (xd - recon).pow(2).sum().item()
        self.ss0 += xd.pow(2).sum().item()
        self.x_sum = self.x_sum + xd.sum(0)
        for name, t in (("recon", recon), ("sparse", sparse), ("scaffold", scaffold)):
            self.parts[name][0] = self.parts[name][0] + t.sum(0)
            self.parts[name][1] += t.pow(2).sum().item()

    def minus(self, other: "VarianceSums") -> "VarianceSums":
        """The sums over this set's tokens that are not in `other` (a subset of them). float64 keeps the
        difference exact enough even when `other` holds the massive tokens that dominate the sums."""
        out = VarianceSums()
        out.n, out.sse, out.ss0 = self.n - other.n, self.sse - other.sse, self.ss0 - other.ss0
        out.x_sum = self.x_sum - other.x_sum
        out.parts = {k: [v[0] - other.parts[k][0], v[1] - other.parts[k][1]] for k, v in self.parts.items()}
        return out

    def total_var(self) -> float:  # Σ‖x − mean‖²
        return self.ss0 - _sq(self.x_sum) / self.n

    def var(self, name: str) -> float:
        s, sq = self.parts[name]
        return max(sq - _sq(s) / self.n, 0.0)

    def fvu(self) -> float:
        return self.sse / self.total_var()

    def shares(self) -> dict:
        recon_var = self.var("recon")
        return {"scaffold_variance_share": self.var("scaffold") / recon_var if recon_var > 0 else 0.0,
                "sparse_variance_share": self.var("sparse") / recon_var if recon_var > 0 else 0.0}


def _sq(v) -> float:
    return v.pow(2).sum().item() if torch.is_tensor(v) else 0.0


class SAEBenchVariance:
    """SAEBench 0.6.0's two explained-variance figures, reproducing `get_sparsity_and_variance_metrics`
    in sae_bench/evals/core/main.py step by step (float32, as there; one call per SAEBench batch):
      legacy = mean over tokens of 1 − ‖x − x̂‖² / ‖x − mean_batch(x)‖²;
      explained_variance = 1 − mean_b(E‖x − x̂‖²) / (mean_b(E‖x‖²) − m²), m = the mean over batches
      and dims of E[x_d²] (a mean of squares, squared: SAEBench's bug, kept so figures compare)."""

    def __init__(self):
        self.legacy, self.mean_ss, self.mean_act, self.mean_resid = [], [], [], []

    def add(self, x: torch.Tensor, recon: torch.Tensor) -> None:
        x, recon = x.float(), recon.float()
        resid_ss = (x - recon).pow(2).sum(-1)
        self.legacy.append(1 - resid_ss / (x - x.mean(0)).pow(2).sum(-1))
        self.mean_ss.append(x.pow(2).sum(-1).mean(0))
        self.mean_act.append(x.pow(2).mean(0))
        self.mean_resid.append(resid_ss.mean(0))

    def metrics(self) -> dict:
        total = torch.stack(self.mean_ss).mean(0) - torch.cat(self.mean_act).mean(0) ** 2
        return {"explained_variance": (1 - torch.stack(self.mean_resid).mean(0) / total).item(),
                "explained_variance_legacy": torch.cat(self.legacy).mean().item()}


def median_token_norm(batches) -> float:
    norms = torch.cat([x.float().norm(dim=-1) for x in batches])
    if norms.numel() == 0:
        raise ValueError("no tokens to evaluate")
    return norms.median().item()


class ContextSums:
    """Per-context sums for evaluation replicates over contexts: tokens, non-zero latents, firing counts
    per latent (int16: a context holds < 32k tokens), squared error, Σ‖x‖² and Σx. Replicate b of a
    figure is the figure recomputed on the contexts `unit_draws(N, B)[b]` (with multiplicity): every
    figure here is a ratio of sums over tokens, so it is a ratio of multiplicity-weighted context sums."""

    def __init__(self, d_sae: int):
        self.d_sae, self.size = d_sae, 0
        self.fire = torch.zeros(0, d_sae, dtype=torch.int16)
        self.scalars = torch.zeros(0, 4, dtype=torch.float64)  # tokens, non-zero latents, sse, Σ‖x‖²
        self.x_sum = torch.zeros(0, 0, dtype=torch.float64)

    def _grow(self, n: int, d: int) -> None:
        if self.x_sum.shape[1] != d:
            self.x_sum = torch.zeros(self.x_sum.shape[0], d, dtype=torch.float64)
        if n > self.fire.shape[0]:
            cap = max(n, 2 * self.fire.shape[0], 256)
            self.fire = torch.cat([self.fire, torch.zeros(cap - self.fire.shape[0], self.d_sae, dtype=torch.int16)])
            self.scalars = torch.cat([self.scalars, torch.zeros(cap - self.scalars.shape[0], 4, dtype=torch.float64)])
            self.x_sum = torch.cat([self.x_sum, torch.zeros(cap - self.x_sum.shape[0], d, dtype=torch.float64)])
        self.size = max(self.size, n)

    def add(self, ctx: torch.Tensor, rows, cols, fired, x: torch.Tensor, recon: torch.Tensor) -> None:
        ctx = ctx.cpu().long()
        self._grow(int(ctx.max()) + 1, x.shape[-1])
        lo = int(ctx.min())
        local = ctx - lo
        n_local = int(local.max()) + 1
        r, c = rows[fired].cpu(), cols[fired].cpu()
        counts = torch.bincount(local[r] * self.d_sae + c, minlength=n_local * self.d_sae).view(n_local, self.d_sae)
        self.fire[lo:lo + n_local] += counts.to(torch.int16)
        xd = x.double().cpu()
        per_token = torch.stack([torch.ones(len(ctx), dtype=torch.float64),
                                 torch.bincount(rows.cpu(), minlength=len(ctx)).double(),
                                 (xd - recon.double().cpu()).pow(2).sum(-1), xd.pow(2).sum(-1)], 1)
        self.scalars.index_add_(0, ctx, per_token)
        self.x_sum.index_add_(0, ctx, xd)

    def replicates(self, thresholds, n_replicates: int) -> dict:
        """The `replicates_block` of density.dense_frac_gt_<t>, density.frac_dead, sparsity.l0 and
        reconstruction_quality.fvu over the contexts seen."""
        from ..stats import replicates_block, unit_draws

        n = self.size
        draws = torch.as_tensor(unit_draws(n, n_replicates))
        w = torch.zeros(n_replicates, n, dtype=torch.float64)
        w.scatter_add_(1, draws, torch.ones_like(draws, dtype=torch.float64))
        fire = torch.zeros(n_replicates, self.d_sae, dtype=torch.float64)
        for s in range(0, n, 1024):  # bounded memory: a float copy of 1,024 contexts' counts at a time
            fire += w[:, s:s + 1024] @ self.fire[s:min(s + 1024, n)].double()
        sums = w @ self.scalars[:n]
        tokens = sums[:, 0]
        density = fire / tokens[:, None]
        total_var = sums[:, 3] - (w @ self.x_sum[:n]).pow(2).sum(-1) / tokens
        metrics = {f"density.dense_frac_gt_{t:g}": (density > t).double().mean(1).tolist() for t in thresholds}
        metrics["density.frac_dead"] = (density == 0).double().mean(1).tolist()
        metrics["sparsity.l0"] = (sums[:, 1] / tokens).tolist()
        metrics["reconstruction_quality.fvu"] = (sums[:, 2] / total_var).tolist()
        return replicates_block("contexts", n, metrics, n_replicates=n_replicates)


@torch.no_grad()
def reconstruction_stats(sae, batches, dense_thresholds=(0.1, 0.01), massive_multiple: float = MASSIVE_NORM_MULTIPLE,
                         n_replicates: int = 0) -> dict:
    """Sparsity, density, FVU, SAEBench's figures, scaffold share, typical-token figures.

    `batches`: a re-iterable of [b, d] token batches (a list, or a callable returning a fresh iterator);
    for SAEBench's figures a batch must be what SAEBench calls one (16 contexts). A first pass reads
    token norms only (no SAE: 3.7 s vs ~90 s for the SAE pass at the default 131k tokens, measured)
    to set the massive-token threshold exactly; the second streams the SAE once. Batches may be
    ([b, d], [b] context index) pairs (`iter_token_batches_with_contexts`): with `n_replicates` > 0
    the result then also holds "replicates", the evaluation-replicates block over contexts (`ContextSums`)."""
    fresh = batches if callable(batches) else (lambda: iter(batches))

    def tokens_only():
        for item in fresh():
            yield item[0] if isinstance(item, tuple) else item

    median = median_token_norm(tokens_only())
    threshold = massive_multiple * median
    d_sae = sae.d_sae
    fire = torch.zeros(d_sae, dtype=torch.float64)
    act_sum = torch.zeros(d_sae, dtype=torch.float64)
    l0 = l1 = cos = l2_ratio = 0.0
    max_norm = 0.0
    every, massive, saebench = VarianceSums(), VarianceSums(), SAEBenchVariance()
    per_context = ContextSums(d_sae) if n_replicates else None
    for item in fresh():
        x, ctx = item if isinstance(item, tuple) else (item, None)
        x = x.to(sae.W_enc.device, sae.W_enc.dtype)
        f, sparse, scaffold = sae.reconstruct_parts(x)
        recon = sparse + scaffold + sae.b_dec
        # Latent statistics from the nonzero entries only (~L0 per token): one pass over the dense
        # [tokens × latents] matrix instead of one per statistic.
        rows, cols = f.nonzero(as_tuple=True)
        vals = f[rows, cols].double()
        fired = vals > 0
        fire += torch.bincount(cols[fired], minlength=d_sae).double().cpu()
        act_sum += torch.bincount(cols[fired], weights=vals[fired], minlength=d_sae).cpu()
        l0 += vals.numel()  # non-zero latents (signed ones too: AbsTopK, the PCA baseline)
        l1 += vals.abs().sum().item()
        cos += F.cosine_similarity(recon, x, dim=-1).sum().item()
        norm = x.norm(dim=-1)
        l2_ratio += (recon.norm(dim=-1) / norm.clamp_min(1e-12)).sum().item()
        max_norm = max(max_norm, norm.max().item())
        saebench.add(x, recon)
        if per_context is not None and ctx is not None:
            per_context.add(ctx, rows, cols, fired, x, recon)
        parts = [t.double() for t in (x, recon, sparse, scaffold)]
        every.add(*parts)
        heavy = norm > threshold  # typical tokens = all minus these few (0.04% on SmolLM2)
        if heavy.any():
            massive.add(*(t[heavy] for t in parts))
    typical = every.minus(massive)
    n = every.n
    density = fire / n
    mean_when = torch.where(fire > 0, act_sum / fire.clamp_min(1), torch.zeros_like(fire))
    fvu = every.fvu()
    density_metrics = {"frac_alive": (density > 0).double().mean().item(), "frac_dead": (density == 0).double().mean().item()}
    for t in dense_thresholds:
        count = int((density > t).sum())
        density_metrics[f"dense_frac_gt_{t:g}"] = count / d_sae
        density_metrics[f"dense_count_gt_{t:g}"] = count
    density_metrics["mean_density"] = density.mean().item()
    n_massive = n - typical.n
    return {
        "sparsity": {"l0": l0 / n, "l1": l1 / n},
        "density": density_metrics,
        "reconstruction_quality": {
            "fvu": fvu, "explained_variance": 1 - fvu,
            "mse": every.sse / (n * x.shape[-1]), "cossim": cos / n, "l2_ratio": l2_ratio / n,
        },
        "saebench_compat": saebench.metrics(),
        "scaffold": {
            "scaffold_rank": sae.scaffold_rank,
            **every.shares(),
            "scaffold_fvu_alone": 1 - every.var("scaffold") / every.total_var() if sae.scaffold_rank else 1.0,
        },
        "typical_tokens": {
            "massive_norm_multiple": massive_multiple, "median_norm": median,
            "max_norm_over_median": max_norm / median if median > 0 else float("inf"),
            "massive_token_count": n_massive, "massive_token_frac": n_massive / n,
            "fvu": typical.fvu() if typical.n > 1 else float("nan"),
            **typical.shares(),
        },
        "n_tokens": n,
        "per_latent": {"density": density.tolist(), "mean_when_firing": mean_when.tolist()},
        "replicates": per_context.replicates(dense_thresholds, n_replicates) if per_context and per_context.size else None,
    }


class CleanBatch:
    """What the spliced passes need of one batch's clean pass: log-probabilities and probabilities
    [b, t, vocab] and the clean CE per prediction [b, t−1]. Kept per eval call (checkpoint-independent)."""

    def __init__(self, logits: torch.Tensor, tokens: torch.Tensor):
        self.lp = F.log_softmax(logits, -1)
        self.ce = next_token_ce(self.lp, tokens)
        self.p = self.lp.exp()

    @property
    def nbytes(self) -> int:
        return self.lp.nbytes + self.p.nbytes


def next_token_ce(lp: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """−log p(next token) per prediction [b, t−1], from log-probabilities [b, t, vocab]."""
    return -lp[:, :-1].gather(-1, tokens[:, 1:].to(lp.device).unsqueeze(-1)).squeeze(-1)


def ce_and_kl(logits: torch.Tensor, tokens: torch.Tensor, clean: CleanBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """CE per prediction [b, t−1] and KL(clean ‖ edited) = Σ p_clean (log p_clean − log p) per position
    [b, t]. One log-softmax, then the KL terms in place in its buffer with the clean probabilities
    kept from the clean pass: ~5× faster than F.cross_entropy (a second log-softmax) plus a fresh
    exp and product, same KL bit for bit. (The algebraically shorter lse − Σ p·logits + Σ p·log p
    loses small KLs to float32 cancellation: 0.4–13% off at KL ~0.01, measured; not used.)"""
    lp = F.log_softmax(logits, -1)
    ce = next_token_ce(lp, tokens)
    kl = torch.sub(clean.lp, lp, out=lp).mul_(clean.p).sum(-1)
    return ce, kl


@torch.no_grad()
def ce_with_sae(ctx: EvalContext, sae, cache, batch_contexts: int = 8) -> dict:
    """CE clean / with SAE / with zero ablation, and KL to the clean distribution, from cached hook
    activations; only the layers after the hook run (the clean pass included, for KL)."""
    lm = ctx.lm
    acts, tokens, special = cache.contexts()
    tot = {"clean": 0.0, "sae": 0.0, "zero": 0.0, "kl_sae": 0.0, "kl_zero": 0.0}
    count = 0
    device = sae.W_enc.device
    # The zero-ablation and clean passes do not depend on the checkpoint: once per eval call, per
    # batch. The clean pass's probabilities (KL needs them) are kept only while they fit in
    # CLEAN_MEMO_BYTES; beyond that budget (SAEBench-size CE sets) the clean pass reruns.
    root = getattr(cache, "root", None)
    key = (ctx.hook, str(root), tokens.shape[0], batch_contexts, str(device), str(acts.dtype))
    shared = root is not None and hasattr(ctx, "memo")
    zero_memo = ctx.memo.setdefault(("core.zero_ablation", *key), {}) if shared else {}
    clean_memo = ctx.memo.setdefault(("core.clean_probs", *key), {}) if shared else {}
    for s in range(0, tokens.shape[0], batch_contexts):
        a, t, sp = acts[s:s + batch_contexts], tokens[s:s + batch_contexts], special[s:s + batch_contexts]
        a = a.to(device)
        keep_pos = sp.unsqueeze(-1).to(a.device)
        if s in clean_memo:
            clean = clean_memo[s]
        else:
            clean = CleanBatch(lm.logits_from_hook(t, ctx.hook, a), t)
            if shared and sum(v.nbytes for v in clean_memo.values()) + clean.nbytes <= CLEAN_MEMO_BYTES:
                clean_memo[s] = clean
        keep = prediction_mask(sp).to(clean.ce.device)
        tot["clean"] += clean.ce.flatten()[keep].sum().item()
        edits = {"sae": lambda: torch.where(keep_pos, a, sae(a))}
        if s in zero_memo:
            tot["zero"], tot["kl_zero"] = tot["zero"] + zero_memo[s][0], tot["kl_zero"] + zero_memo[s][1]
        else:
            edits["zero"] = lambda: torch.where(keep_pos, a, torch.zeros_like(a))
        for name, edit in edits.items():
            ce, kl = ce_and_kl(lm.logits_from_hook(t, ctx.hook, edit()), t, clean)
            sums = ce.flatten()[keep].sum().item(), kl[:, :-1].flatten()[keep].sum().item()
            tot[name] += sums[0]
            tot[f"kl_{name}"] += sums[1]
            if name == "zero":
                zero_memo[s] = sums
        count += int(keep.sum())
    m = {k: v / count for k, v in tot.items()}
    denom = m["zero"] - m["clean"]
    return {
        "ce_loss_without_sae": m["clean"], "ce_loss_with_sae": m["sae"], "ce_loss_with_ablation": m["zero"],
        "ce_loss_score": (m["zero"] - m["sae"]) / denom if denom else float("nan"),
        "kl_div_with_sae": m["kl_sae"], "kl_div_with_ablation": m["kl_zero"],
        "kl_div_score": (m["kl_zero"] - m["kl_sae"]) / m["kl_zero"] if m["kl_zero"] else float("nan"),
        "n_tokens": count,
    }
