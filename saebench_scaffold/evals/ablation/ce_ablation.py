"""`ce_ablation` (version 2): next-token loss when the scaffold, the top-r PCA subspace, the
scaffold-aligned sparse latents or a random subspace is removed from the residual stream (arXiv
2606.14040: on Gemma-2-2B removing the scaffold raises CE 7.5x, the top-24 PCs 2.8x, the 787 of 16,384
latents most aligned with the scaffold 2.9x).

Procedure
  - held-out contexts (from CE_OFFSET_CONTEXTS), hook activations read once from the shared cache;
    each condition edits them at non-special positions only and runs only the layers after the hook
    (`lm.logits_from_hook`), as `core`'s CE does; loss over predictions made from non-special
    positions of non-special next tokens (`core.masked_ce`);
  - PCA fitted on training-split tokens (`ctx.train_cache`), r = the scaffold rank (hybrids) or
    `pca_rank` (default 24) — see `conditions.py` for every condition's exact formula (and
    `FORMULAS` below: the paper's wording beside ours, stored in every result);
  - per context: summed CE and summed removed energy ‖Δx‖² (and ‖x − μ‖²), for every condition;
    CE ratio = Σ CE(condition) / Σ CE(clean) over the contexts, removed_energy_frac = Σ‖Δx‖² / Σ‖x − μ‖²;
  - intervals: percentile context bootstrap, paired (every condition and clean resampled with the same
    contexts), on the fixed draws `stats.unit_draws(n_contexts, n_bootstrap)`; its first 200 draws
    are the evaluation replicates `claims` reads (`evaluation_replicates`, stats.replicates_block);
  - curves (model-only, cached on disk once per model/hook/data/budget/seed): top-k PC removal
    (mean-preserving and zeroing) and random k-dim subspaces for k in `curve_ranks`; the PCA curve's
    CE ratio at the scaffold's removed energy is read off by linear interpolation in energy (the
    point k = 0: energy 0, ratio 1 included), and scaffold / PCA at equal energy reported with its
    paired interval;
  - `twin` (an r = 0 checkpoint's r > 0 twin: same recipe, seed, tokens): the twin's scaffold removed
    on this checkpoint's contexts, and this checkpoint's latents most aligned with the twin's scaffold
    (and with the top-r PCs) removed, N fixed (787/16,384 of the dictionary, as the paper) or
    energy-matched — the paper's "aligned latents" comparison;
  - aligned-latent conditions carry their alignment against chance (Beta(r/2, (d−r)/2)); a set that
    is not above chance, or a match that cannot be reached, has a status and no headline.

Budget (`n_ce_tokens`, measured on baselines/batchtopk_r24; docs/ce_ablation.md). Half-widths of
scaffold_ce_ratio (1.59), context bootstrap, 95%: ±0.121 at 4,096 tokens (33 contexts, version 1's
budget), ±0.078 at 64, ±0.059 at 128, ±0.050 at 192 contexts; ±0.02 needs ~1,300 contexts
(1/√n from 192). Cost: every condition runs the layers after the hook over every context, ~0.16 s per
condition per context on an idle 2-core machine. Default (`quick`): 16,256 tokens = 128 contexts
(±0.06; a warm second checkpoint ~1.5 min idle, ~4 min with a twin). `--preset saebench`: 166,400
tokens = 1,311 contexts, the ±0.02 budget (~15 min per warm checkpoint idle). Either way the result
stores its evaluation replicates, so `claims`' intervals carry this noise rather than hide it.
`curves=false` skips the 27 curve conditions of a cold first run (cached on disk afterwards).
"""

from __future__ import annotations

import hashlib
import io
import json
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from filelock import FileLock
from pydantic import Field, field_validator, model_validator

from . import conditions as ab
from ..base import CE_OFFSET_CONTEXTS, EvalContext, Task, TaskConfig, TaskOutput, sorted_positive_ints
from .ce import BODY, masked_ce
from ..declarations import table_column
from ..stats import N_REPLICATES, replicates_block, unit_draws
from .checks import ENERGY_SUMMARY, SUMMARY, check_ce_ablation
from ...saes import load_sae
from ...saes.base import checkpoint_sha256
from ...settings import UserError, atomic_write, cache_dir

RunFromHook = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (tokens, acts) -> logits

PAPER_ALIGNED_FRACTION = 787 / 16_384
"""The paper's N of aligned latents, as a fraction of its dictionary (787 of 16,384)."""
DEFAULT_N_CE_TOKENS = 16_256  # 128 contexts: ±0.06 on one CE ratio, minutes per checkpoint (module doc)
PRECISE_N_CE_TOKENS = 166_400  # 1,311 contexts: ±0.02 on one CE ratio (--preset saebench)
CURVE_RANKS = [1, 2, 4, 8, 16, 24, 32, 48, 64]
CURVES = ("pca_mean_preserving", "pca_zeroing", "random_subspace")

FORMULAS = {
    "scaffold_removed": {"paper": "removing the scaffold (the rank-r linear path) from the residual stream: CE rises 7.5x on Gemma-2-2B",
                         "ours": "x - U V^T (x - b_dec) at non-special positions; the SAE's error and latents stay in x"},
    "pca_removed_mean_preserving": {"paper": "removing the top-24 PCA directions: CE 2.8x",
                                    "ours": "x - P (x - mu), P = projector on the top-r training-split PCs (r = scaffold rank)"},
    "pca_removed_zeroing": {"paper": "(same intervention; the paper does not say whether the mean is kept)",
                            "ours": "x - P x (also removes the subspace's share of the mean)"},
    "aligned_latents_removed": {"paper": "removing the 787 (of 16,384) sparse latents most aligned with the scaffold: CE 2.9x",
                                "ours": "x - sum_{i in S} f_i(x) W_dec[i], S = this SAE's N most aligned latents (||B^T d_i||^2), "
                                        "N = round(d_sae x 787/16384); own scaffold (top-r PCs for r = 0)"},
    "twin_aligned_latents_removed": {"paper": "as above: the latents of the sparse dictionary most aligned with the scaffold subspace",
                                     "ours": "this (r = 0) SAE's N latents most aligned with its r > 0 twin's scaffold subspace removed"},
    "random_subspace_removed": {"paper": "(control not in the paper's headline)", "ours": "x - P_rand (x - mu), a random r-dim subspace"},
    "removed_energy_frac": {"paper": "(not reported)", "ours": "mean ||x - x_ablated||^2 / mean ||x - mu||^2 over evaluation tokens"},
}


def default_n_aligned(d_sae: int) -> int:
    """The paper's proportion: round(d_sae × 787 / 16,384) (787 for a 16k dictionary)."""
    return max(1, round(d_sae * PAPER_ALIGNED_FRACTION))


class CEAblationConfig(TaskConfig):
    n_ce_tokens: int = Field(DEFAULT_N_CE_TOKENS, gt=0, description="evaluation tokens (held-out contexts from CE_OFFSET_CONTEXTS); 16,256 = 128 contexts: "
                             "95% half-width of one CE ratio ~0.06 (measured on batchtopk_r24: +-0.12 at 4,096 tokens, "
                             "version 1's budget); --preset saebench: 166,400 = 1,311 contexts, +-0.02")
    batch_contexts: int = Field(8, gt=0)
    pca_rank: int | None = Field(None, description="r of the PCA/random subspaces; default: the scaffold rank, or 24 for ordinary SAEs")
    pca_fit_tokens: int = Field(200_000, gt=0, description="training-split tokens for the PCA fit (same as the PCA baseline's)")
    n_aligned_latents: int | None = Field(None, ge=0, description="N of every fixed-N aligned condition; default round(d_sae x 787/16384) (the paper's 787 of 16,384)")
    variance_matched: bool = Field(True, description="also remove the aligned latents matching the scaffold condition's removed variance")
    energy_matched: bool = Field(True, description="also remove the aligned latents matching the scaffold condition's removed energy")
    match_sample_tokens: int = Field(8_192, gt=0, description="training tokens used to choose the matched N")
    reference_conditions: bool = Field(True, description="also report the SAE spliced in and zero ablation")
    twin: str | None = Field(None, description="the r > 0 twin of this r = 0 checkpoint (same recipe, seed, tokens): adds the twin_* and pca_aligned_* conditions")
    twin_sha256: str | None = Field(None, description="filled in from `twin` (its files' sha256, as provenance's checkpoint_sha256)")
    curves: bool = Field(True, description="top-k PCA / random k-dim removal curves (model-only, cached on disk)")
    curve_ranks: list[int] = Field(default_factory=lambda: list(CURVE_RANKS), description="k of the curves")
    n_bootstrap: int = Field(1000, ge=N_REPLICATES, description="context draws for the intervals (the first 200 are the evaluation replicates)")
    ci_level: float = Field(0.95, gt=0, lt=1)
    outlier_factor: float = Field(10.0, gt=1)
    dataset: str = "wikipedia"

    @field_validator("curve_ranks")
    @classmethod
    def _ranks(cls, v: list[int]) -> list[int]:
        return sorted_positive_ints(v, "curve_ranks")

    @model_validator(mode="after")
    def _twin_identity(self):
        if self.twin is None:
            if self.twin_sha256 is not None:
                raise UserError("ce_ablation: twin_sha256 is set without a twin")
            return self
        read_twin(self.twin)  # refuses a twin without a scaffold before anything runs
        sha = checkpoint_sha256(Path(self.twin))
        if self.twin_sha256 not in (None, sha):
            raise UserError(f"ce_ablation: twin {self.twin} has sha256 {sha[:12]}…, not the given twin_sha256 {self.twin_sha256[:12]}…")
        self.twin_sha256 = sha
        return self


class CEAblationTask(Task):
    name = "ce_ablation"
    description = "Next-token CE with the scaffold / top-r PCs / scaffold-aligned latents / a random subspace removed (ratio to clean, bootstrap CIs)"
    version = 2
    accepted_versions = (1,)
    Config = CEAblationConfig
    presets = {"saebench": {"n_ce_tokens": PRECISE_N_CE_TOKENS}}  # the ±0.02 budget (no SAEBench counterpart: the larger budget)
    summary_metrics = (("summary", "scaffold_ce_ratio"), ("summary", "pca_ce_ratio"),
                       ("summary", "aligned_matched_ce_ratio"), ("summary", "random_ce_ratio"),
                       ("summary", "scaffold_over_pca_at_equal_energy"))

    metric_ranges = (
        ("*.ce_increase", -math.inf, math.inf),
        ("*.ce_ratio*", 0, math.inf),
        ("*.ce", 0, math.inf),
        ("*.ce_ci_*", 0, math.inf),
        ("*.ci_level", 0, 1),
        ("summary.*", 0, math.inf),
        ("summary_ci.*", 0, math.inf),
        ("*subspaces.principal_angle_*_deg", 0, 90),
        ("*outlier_mass*", 0, 1),
        # 1 − Var(X − A)/Var(X): below 0 when the subtracted part A adds variance (Cov(X, A) small,
        # measured: Matryoshka r=24's aligned latents, −0.02); never above 1.
        ("*.variance_removed_frac", -math.inf, 1),
        # E‖Δx‖² / E‖x − μ‖²: above 1 when the edit also removes the mean (zeroing, zero ablation)
        ("*.removed_energy_frac*", 0, math.inf),
        ("*.matched_target_*", -math.inf, math.inf),
        ("*.matched_achieved_*", -math.inf, math.inf),
        ("*alignment*", 0, 1),
        ("*.n_latents*", 0, "d_sae"),
        ("*.n_chosen_above_chance_q99", 0, "d_sae"),
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
                                      "n_bootstrap": min(cfg.n_bootstrap, max(200, N_REPLICATES))})

    def run(self, ctx: EvalContext, sae, cfg: CEAblationConfig) -> TaskOutput:
        twin = load_twin(ctx, sae, cfg) if cfg.twin else None  # refusals before anything is computed
        r, pca, sample, conditions = conditions_for(ctx, sae, cfg)

        n_ctx = math.ceil(cfg.n_ce_tokens / BODY)
        cache = ctx.text_cache(n_ctx, offset=CE_OFFSET_CONTEXTS, dataset=cfg.dataset)
        acts, tokens, special = cache.contexts(n_ctx)
        acts = acts.to(sae.W_enc.device)
        lm = ctx.lm

        def run_from_hook(t, a):
            return lm.logits_from_hook(t, ctx.hook, a)

        keep = ~special.to(acts.device)
        eval_tokens = acts[keep]
        mu = eval_tokens.double().mean(0)
        var = ((acts.double() - mu) ** 2).sum(-1).masked_fill(~keep, 0).sum(1).cpu()  # Σ‖x − μ‖² per context

        # clean, top-r PCA, random-subspace, zero-ablation and the curves do not depend on the
        # checkpoint: once per (model, hook, data, budget, seed), on disk and in this call's memo
        curve = curve_conditions(ctx, pca, cfg.curve_ranks, sae.d_in) if cfg.curves else {}
        shared_fns = {"clean": None, **{c.cache_id: c.fn for c in conditions if c.applicable and c.model_only},
                      **{cid: fn for cid, (_, _, fn) in curve.items()}}
        shared, counts = model_only_stats(ctx, cache, acts, tokens, special, shared_fns, cfg, run_from_hook)
        own = {c.name: c.fn for c in conditions if c.applicable and not c.model_only}
        own_stats = per_context_stats(run_from_hook, acts, tokens, special, own, cfg.batch_contexts) if own else ({}, counts, {})
        sums = {"clean": shared["clean"][0], **{c.name: shared[c.cache_id][0] for c in conditions if c.applicable and c.model_only},
                **own_stats[0]}
        energy = {"clean": shared["clean"][1], **{c.name: shared[c.cache_id][1] for c in conditions if c.applicable and c.model_only},
                  **own_stats[2]}
        for cid in curve:
            sums[cid], energy[cid] = shared[cid]

        rows = draw_weights(counts.numel(), cfg.n_bootstrap)
        per_draw = PerDraw(rows, sums, energy, counts, var)
        metrics = condition_metrics(per_draw, conditions, eval_tokens, cfg)
        curves = curve_results(per_draw, curve, cfg.ci_level)
        summary, status, intervals, replicates = summary_metrics(per_draw, conditions, curve, cfg)

        geo = ab.geometry(sae, pca, r, cfg.outlier_factor)
        metrics["subspaces"] = {"rank": r, "pca_fit_tokens": pca.n_tokens, **geo["metrics"]}
        unstructured = {"geometry": geo["unstructured"], "conditions": {c.name: c.description for c in conditions},
                        "formulas": FORMULAS, "curves": curves, "summary_status": status}
        if twin is not None:
            tgeo = ab.geometry(twin, pca, twin.scaffold_rank, cfg.outlier_factor)
            metrics["twin_subspaces"] = {"rank": twin.scaffold_rank, **tgeo["metrics"]}
            unstructured["twin"] = twin_record(cfg.twin, cfg.twin_sha256, twin)
        details = [{"condition": name, **m} for name, m in metrics.items() if name not in ("subspaces", "twin_subspaces")]
        details += [{"curve": name, **row} for name, points in curves.items() for row in points]
        metrics["summary"] = summary
        metrics["summary_ci"] = intervals
        for c in conditions:
            if c.applicable:
                replicates[f"{c.name}.ce_ratio"] = per_draw.ratio(c.name)[1:N_REPLICATES + 1]
                replicates[f"{c.name}.removed_energy_frac"] = per_draw.energy_frac(c.name)[1:N_REPLICATES + 1]
        unstructured["evaluation_replicates"] = replicates_block("contexts", counts.numel(), replicates)
        return TaskOutput(metrics=metrics, details=details, unstructured=unstructured,
                          datasets=[ctx.dataset_id(cfg.dataset)],
                          token_counts={"ce_tokens": int(counts.sum()), "pca_fit_tokens": pca.n_tokens,
                                        "match_sample_tokens": int(sample.shape[0])})


# ---- the twin --------------------------------------------------------------------------------------

def read_twin(path: str):
    """The twin checkpoint; refused (one line) when it has no scaffold."""
    twin = load_sae(path)
    if not twin.scaffold_rank:
        raise UserError(f"ce_ablation: twin {path} has no scaffold (scaffold_rank = 0); give the r > 0 twin of this r = 0 checkpoint")
    return twin


def load_twin(ctx: EvalContext, sae, cfg: CEAblationConfig):
    """The twin (loaded once per eval call), refused (one line) if it reads another model, hook or width."""
    key = ("ce_ablation.twin", cfg.twin, cfg.twin_sha256)
    if key not in ctx.memo:
        ctx.memo[key] = read_twin(cfg.twin)
    twin = ctx.memo[key].to(sae.W_enc.device)
    a, b = twin.cfg, sae.cfg
    for what, mine, theirs in (("d_in", b.d_in, a.d_in), ("hook", b.hook_name, a.hook_name), ("model", b.model_name, a.model_name)):
        if mine != theirs and (what == "d_in" or (mine and theirs)):
            raise UserError(f"ce_ablation: twin {cfg.twin} has {what} {theirs}, this checkpoint {mine}; a twin must read the same activations")
    return twin


def twin_record(path: str, sha: str | None, twin) -> dict:
    """Provenance of the twin, read from its cfg as `claims` reads seed / recipe_version / tokens."""
    cfg = twin.cfg.to_dict()
    extra = cfg.get("extra") or {}
    training = extra.get("training") or {}
    recipe = training.get("recipe") or extra.get("recipe") or {}
    version = training.get("recipe_version", recipe.get("recipe_version"))
    return {"path": str(path), "sha256": sha, "architecture": cfg.get("architecture"),
            "scaffold_rank": int(cfg.get("scaffold_rank") or 0), "seed": cfg.get("seed", recipe.get("seed")),
            "recipe_version": "1" if version is None else str(version),
            "tokens": training.get("tokens") or recipe.get("total_tokens")}


# ---- conditions ------------------------------------------------------------------------------------

def conditions_for(ctx: EvalContext, sae, cfg: CEAblationConfig) -> tuple[int, object, torch.Tensor, list[ab.Condition]]:
    """(r, PCA fit, matching sample, conditions) of `cfg` for this checkpoint: what `ce_ablation`
    measures CE under and `downstream` measures task accuracy under (one implementation). With
    `cfg.twin`, the twin conditions too."""
    r = ab.subspace_rank(sae, cfg.pca_rank)
    pca = ctx.train_pca(cfg.pca_fit_tokens, cfg.dataset)
    sample = ab.reference_sample(ctx, cfg.match_sample_tokens, cfg.dataset)
    conds = build_conditions(sae, pca, r, sample, cfg, ctx.generator(salt=4141))
    if cfg.twin:
        twin_conds = twin_conditions(sae, load_twin(ctx, sae, cfg), pca, sample, cfg)
        at = next((i for i, c in enumerate(conds) if c.name == "sae_spliced"), len(conds))
        conds[at:at] = twin_conds
    return r, pca, sample, conds


def build_conditions(sae, pca, r: int, sample: torch.Tensor, cfg: CEAblationConfig, generator: torch.Generator) -> list[ab.Condition]:
    conds = ab.subspace_conditions(sae, pca, r, generator)
    removed = {"variance_removed_frac": None, "removed_energy_frac": None}
    if cfg.variance_matched or cfg.energy_matched:
        ref = conds[0] if conds[0].applicable else conds[1]  # scaffold, else top-r PCA (mean-preserving)
        removed = ab.variance_removed(ref.fn, sample.to(sae.W_enc.device))
    n_fixed = cfg.n_aligned_latents if cfg.n_aligned_latents is not None else default_n_aligned(sae.d_sae)
    conds += ab.aligned_latent_conditions(sae, pca, r, n_fixed, sample,
                                          removed["variance_removed_frac"] if cfg.variance_matched else None,
                                          energy_target=removed["removed_energy_frac"] if cfg.energy_matched else None)
    if cfg.reference_conditions:
        conds += ab.reference_conditions(sae)
    return conds


def twin_conditions(sae, twin, pca, sample: torch.Tensor, cfg: CEAblationConfig) -> list[ab.Condition]:
    """twin_scaffold_removed; this SAE's latents most aligned with the twin's scaffold (N fixed, and
    energy-matched to twin_scaffold_removed) and with the top-r PCs, r = the twin's rank (N fixed, and
    energy-matched to top-r PCA removal, mean-preserving)."""
    rt = twin.scaffold_rank
    ab.check_rank(rt, sae.d_in, "the twin's scaffold rank")
    s = sample.to(sae.W_enc.device)
    scaffold = ab.Condition("twin_scaffold_removed", ab.remove_scaffold(twin), "x - U_t V_t^T (x - b_dec_t): the twin's scaffold",
                            {"rank": rt})
    n_fixed = cfg.n_aligned_latents if cfg.n_aligned_latents is not None else default_n_aligned(sae.d_sae)
    e_twin = ab.variance_removed(scaffold.fn, s)["removed_energy_frac"] if cfg.energy_matched else None
    top = pca.top(rt)
    e_pca = ab.variance_removed(ab.remove_subspace(top, pca.mean), s)["removed_energy_frac"] if cfg.energy_matched else None
    return [scaffold,
            *ab.latents_aligned_with(sae, twin.scaffold_basis().detach().cpu(), "twin scaffold", "twin_aligned_latents_removed",
                                     n_fixed, sample, {"energy": e_twin}, "twin_scaffold_removed"),
            *ab.latents_aligned_with(sae, top, f"top-{rt} PCA", "pca_aligned_latents_removed", n_fixed, sample,
                                     {"energy": e_pca}, f"top-{rt} PCA removed (mean-preserving)")]


def curve_conditions(ctx, pca, ranks: list[int], d: int) -> dict[str, tuple[str, int, ab.Edit]]:
    """{cache id: (curve, k, edit)}: top-k PCs removed (mean-preserving, zeroing) and a random k-dim
    subspace removed (mean-preserving; its own seeded generator per k) for k in `ranks` (k ≤ d)."""
    out = {}
    for k in (k for k in ranks if k <= d):
        top = pca.top(k)
        out[f"pca_mean_preserving:{k}"] = ("pca_mean_preserving", k, ab.remove_subspace(top, pca.mean))
        out[f"pca_zeroing:{k}"] = ("pca_zeroing", k, ab.remove_subspace(top, None))
        out[f"random_subspace:{k}"] = ("random_subspace", k,
                                       ab.remove_subspace(ab.random_subspace(d, k, ctx.generator(salt=5_000 + k)), pca.mean))
    return out


# ---- per-context CE and removed energy ---------------------------------------------------------------

@torch.no_grad()
def per_context_stats(run_from_hook: RunFromHook, acts: torch.Tensor, tokens: torch.Tensor, special: torch.Tensor,
                      conditions: dict[str, ab.Edit | None], batch_contexts: int = 8
                      ) -> tuple[dict[str, torch.Tensor], torch.Tensor, dict[str, torch.Tensor]]:
    """Per-context CE sums [n_ctx] for every condition (None = clean), per-context prediction counts
    [n_ctx] and per-context removed energy Σ‖Δx‖² [n_ctx]. Each condition edits non-special positions
    of the cached hook activations and calls `run_from_hook(tokens, edited_acts)` (only the later
    layers): the early layers never rerun."""
    n = tokens.shape[0]
    sums = {name: torch.zeros(n, dtype=torch.float64) for name in conditions}
    energy = {name: torch.zeros(n, dtype=torch.float64) for name in conditions}
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
            energy[name][s:s + b] = (edited.double() - a.double()).pow(2).sum(-1).sum(1).cpu()
            counts[s:s + b] = keep.view(b, -1).double().sum(1).cpu()  # the same for every condition
    return sums, counts, energy


def per_context_ce(run_from_hook: RunFromHook, acts: torch.Tensor, tokens: torch.Tensor, special: torch.Tensor,
                   conditions: dict[str, ab.Edit | None], batch_contexts: int = 8) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Per-context CE sums and prediction counts (`per_context_stats` without the energies)."""
    sums, counts, _ = per_context_stats(run_from_hook, acts, tokens, special, conditions, batch_contexts)
    return sums, counts


MODEL_ONLY_FORMAT = 1


def model_only_key(ctx, cache, acts: torch.Tensor, tokens: torch.Tensor, cfg: CEAblationConfig) -> str:
    """What the model-only conditions' per-context CE depends on: the evaluation token set (the
    activation cache's key: model, processing, hook, data, contexts), the PCA budget and data, the
    seed (random subspaces), the batching and the device/dtype."""
    spec = getattr(cache, "spec", None)
    ident = {"format": MODEL_ONLY_FORMAT, "cache": getattr(spec, "key", None),
             "tokens": hashlib.sha256(tokens.cpu().numpy().tobytes()).hexdigest(),
             "model": str(getattr(ctx.lm, "source_id", type(ctx.lm).__name__)), "hook": str(ctx.hook),
             "n_contexts": int(tokens.shape[0]), "pca_fit_tokens": cfg.pca_fit_tokens, "dataset": cfg.dataset,
             "seed": ctx.seed, "batch_contexts": cfg.batch_contexts, "device": str(acts.device), "dtype": str(acts.dtype)}
    return hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[:24]


def model_only_stats(ctx, cache, acts, tokens, special, fns: dict[str, ab.Edit | None], cfg: CEAblationConfig,
                     run_from_hook: RunFromHook) -> tuple[dict[str, tuple[torch.Tensor, torch.Tensor]], torch.Tensor]:
    """{cache id: (per-context CE sums, per-context removed energy)} and per-context counts of the
    model-only conditions: from this call's memo, else from the disk cache (`<cache dir>/ce_ablation/
    <key>.pt`, read and extended under a file lock, written atomically), else computed."""
    key = model_only_key(ctx, cache, acts, tokens, cfg)
    memo = ctx.memo.setdefault(("ce_ablation.model_only", key), {})
    if all(cid in memo for cid in fns) and "_counts" in memo:
        return {cid: memo[cid] for cid in fns}, memo["_counts"]
    root = getattr(ctx, "cache_dir", False)
    if root is False:  # a context without a cache dir (tests' fakes): memo only
        _compute_into(memo, fns, run_from_hook, acts, tokens, special, cfg)
    else:
        path = cache_dir(root) / "ce_ablation" / f"{key}.pt"
        path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(path) + ".lock"):
            if path.exists():
                try:
                    memo.update({k: tuple(v) if k != "_counts" else v for k, v in
                                 torch.load(io.BytesIO(path.read_bytes()), weights_only=True).items() if k not in memo})
                except (OSError, RuntimeError, EOFError, ValueError):
                    pass  # damaged: recomputed and rewritten
            if not (all(cid in memo for cid in fns) and "_counts" in memo):
                _compute_into(memo, fns, run_from_hook, acts, tokens, special, cfg)
                buf = io.BytesIO()
                torch.save({k: (list(v) if k != "_counts" else v) for k, v in memo.items()}, buf)
                atomic_write(path, buf.getvalue())
    return {cid: memo[cid] for cid in fns}, memo["_counts"]


def _compute_into(memo: dict, fns, run_from_hook, acts, tokens, special, cfg) -> None:
    missing = {cid: fn for cid, fn in fns.items() if cid not in memo}
    if "_counts" not in memo:
        missing.setdefault("clean", fns.get("clean"))
    sums, counts, energy = per_context_stats(run_from_hook, acts, tokens, special, missing, cfg.batch_contexts)
    memo["_counts"] = counts
    for cid in missing:
        memo[cid] = (sums[cid], energy[cid])


# ---- statistics on the context draws --------------------------------------------------------------

def draw_weights(n_contexts: int, n_draws: int) -> np.ndarray:
    """[1 + n_draws, n_contexts] multiplicities: row 0 all ones (the point estimate), row b + 1 the
    contexts of `stats.unit_draws(n_contexts, n_draws)[b]` (its first 200 rows are the replicates')."""
    idx = unit_draws(n_contexts, n_draws)
    w = np.zeros((n_draws + 1, n_contexts))
    w[0] = 1
    np.add.at(w, (np.arange(1, n_draws + 1)[:, None], idx), 1)
    return w


class PerDraw:
    """Every statistic on the point estimate (row 0) and on each context draw (rows 1..B): sums over
    the drawn contexts, exactly as the point estimate sums over all of them."""

    def __init__(self, rows: np.ndarray, sums, energy, counts, var):
        self.rows = rows
        self._ce = {k: rows @ v.double().numpy() for k, v in sums.items()}
        self._en = {k: rows @ v.double().numpy() for k, v in energy.items()}
        self._cnt = rows @ counts.double().numpy()
        self._var = rows @ var.double().numpy()

    def ce(self, name: str) -> np.ndarray:
        return self._ce[name] / self._cnt

    def ratio(self, name: str, reference: str = "clean") -> np.ndarray:
        return self._ce[name] / self._ce[reference]

    def energy_frac(self, name: str) -> np.ndarray:
        return self._en[name] / self._var


def interval(values: np.ndarray, level: float) -> tuple[float | None, float | None]:
    """Percentile interval of the draws (rows 1..); None when no draw is finite."""
    v = np.asarray(values[1:], dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return None, None
    lo, hi = np.quantile(v, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(lo), float(hi)


def bootstrap_ce(sums: dict[str, torch.Tensor], counts: torch.Tensor, n_boot: int, level: float,
                 generator: torch.Generator | None = None, reference: str = "clean",
                 rows: np.ndarray | None = None) -> dict[str, dict[str, float]]:
    """CE per condition and ratio to `reference`, each with a paired percentile bootstrap CI over
    contexts: on `rows` (`draw_weights`), else on `n_boot` draws from `generator`."""
    n = counts.numel()
    if rows is None:
        idx = torch.randint(0, n, (n_boot, n), generator=generator).numpy()
        rows = np.zeros((n_boot + 1, n))
        rows[0] = 1
        np.add.at(rows, (np.arange(1, n_boot + 1)[:, None], idx), 1)
    d = PerDraw(rows, sums, {}, counts, torch.zeros(n))
    out = {}
    for name in sums:
        ce, ratio = d.ce(name), d.ratio(name, reference)
        (clo, chi), (rlo, rhi) = interval(ce, level), interval(ratio, level)
        out[name] = {"ce": float(ce[0]), "ce_ci_low": clo, "ce_ci_high": chi, "ce_ratio": float(ratio[0]),
                     "ce_ratio_ci_low": rlo, "ce_ratio_ci_high": rhi, "ce_increase": float(ce[0] - d.ce(reference)[0])}
    return out


def condition_metrics(d: PerDraw, conditions: list[ab.Condition], eval_tokens: torch.Tensor, cfg: CEAblationConfig) -> dict[str, dict]:
    metrics = {"clean": {**_ce_block(d, "clean", cfg.ci_level), "n_tokens": int(d._cnt[0]), "n_contexts": int(d.rows.shape[1]),
                         "ci_level": cfg.ci_level, "n_draws": int(d.rows.shape[0] - 1)}}
    for c in conditions:
        if not c.applicable:
            metrics[c.name] = {"status": c.status, **c.info}
            continue
        energy = d.energy_frac(c.name)
        lo, hi = interval(energy, cfg.ci_level)
        var = ab.variance_removed(c.fn, eval_tokens)["variance_removed_frac"]
        metrics[c.name] = {"status": c.status, **_ce_block(d, c.name, cfg.ci_level), "removed_energy_frac": float(energy[0]),
                           "removed_energy_frac_ci_low": lo, "removed_energy_frac_ci_high": hi,
                           "variance_removed_frac": var, **c.info}
    return metrics


def _ce_block(d: PerDraw, name: str, level: float) -> dict:
    ce, ratio = d.ce(name), d.ratio(name)
    (clo, chi), (rlo, rhi) = interval(ce, level), interval(ratio, level)
    return {"ce": float(ce[0]), "ce_ci_low": clo, "ce_ci_high": chi, "ce_ratio": float(ratio[0]),
            "ce_ratio_ci_low": rlo, "ce_ratio_ci_high": rhi, "ce_increase": float(ce[0] - d.ce("clean")[0])}


def curve_results(d: PerDraw, curve: dict, level: float) -> dict[str, list[dict]]:
    """{curve: [{k, removed_energy_frac, ce_ratio, ce_ratio_ci_low, ce_ratio_ci_high}, …]} in k order."""
    out: dict[str, list[dict]] = {name: [] for name in CURVES if any(v[0] == name for v in curve.values())}
    for cid, (name, k, _) in sorted(curve.items(), key=lambda kv: kv[1][1]):
        ratio = d.ratio(cid)
        lo, hi = interval(ratio, level)
        out[name].append({"k": k, "removed_energy_frac": float(d.energy_frac(cid)[0]), "ce_ratio": float(ratio[0]),
                          "ce_ratio_ci_low": lo, "ce_ratio_ci_high": hi})
    return out


def interpolate_at(energies: np.ndarray, ratios: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Per row: the curve's CE ratio at `target` energy by linear interpolation in energy over the points
    (energies[k, row], ratios[k, row]) plus (0, 1) (nothing removed); NaN where the target lies outside
    [0, the curve's largest energy]. energies, ratios [K, rows]; target [rows]."""
    energies = np.atleast_2d(np.asarray(energies, dtype=np.float64))
    ratios = np.atleast_2d(np.asarray(ratios, dtype=np.float64))
    target = np.atleast_1d(np.asarray(target, dtype=np.float64))
    out = np.full(target.shape, np.nan)
    for j in range(target.size):
        e = np.concatenate([[0.0], energies[:, j]])
        r = np.concatenate([[1.0], ratios[:, j]])
        order = np.argsort(e, kind="stable")
        e, r = e[order], r[order]
        if np.isfinite(target[j]) and e[0] <= target[j] <= e[-1]:
            out[j] = np.interp(target[j], e, r)
    return out


NO_TWIN = "no twin given (--set ce_ablation.twin=<the r > 0 twin of this r = 0 checkpoint>)"


def summary_metrics(d: PerDraw, conditions: list[ab.Condition], curve: dict, cfg: CEAblationConfig
                    ) -> tuple[dict, dict, dict, dict]:
    """The `summary` block (contract with `claims`: checks.SUMMARY / ENERGY_SUMMARY and the equal-energy
    names), its status per name, its intervals (`summary_ci`) and its evaluation replicates."""
    by_name = {c.name: c for c in conditions}
    rows: dict[str, np.ndarray | None] = {}
    status: dict[str, str] = {}

    def condition_status(name: str) -> str:
        if name in by_name:
            return by_name[name].status
        if name.startswith(("twin_", "pca_aligned_")):
            return NO_TWIN
        return f"condition {name} switched off in this config"

    for short, name in SUMMARY.items():
        st = condition_status(name)
        status[f"{short}_ce_ratio"] = st
        rows[f"{short}_ce_ratio"] = d.ratio(name) if st == "ok" and by_name[name].applicable else None
    for metric, name in ENERGY_SUMMARY.items():
        st = condition_status(name)
        ok = name in by_name and by_name[name].applicable
        status[metric] = "ok" if ok else st
        rows[metric] = d.energy_frac(name) if ok else None

    scaffold = by_name.get("scaffold_removed")
    for metric, curve_name in (("pca_ce_ratio_at_scaffold_energy", "pca_mean_preserving"),
                               ("pca_zeroing_ce_ratio_at_scaffold_energy", "pca_zeroing")):
        ids = [cid for cid, (n, _, _) in curve.items() if n == curve_name]
        rows[metric] = None
        if scaffold is None or not scaffold.applicable:
            status[metric] = scaffold.status if scaffold is not None else "no scaffold condition"
        elif not ids:
            status[metric] = "no curve (curves = false, or no curve rank within d_in)"
        else:
            e = np.stack([d.energy_frac(cid) for cid in ids])
            at = interpolate_at(e, np.stack([d.ratio(cid) for cid in ids]), d.energy_frac("scaffold_removed"))
            if not np.isfinite(at[0]):
                status[metric] = (f"the scaffold's removed energy {d.energy_frac('scaffold_removed')[0]:.4f} lies outside the "
                                  f"{curve_name} curve's range [0, {e[:, 0].max():.4f}] (raise curve_ranks)")
            else:
                status[metric], rows[metric] = "ok", at
    pca_at = rows["pca_ce_ratio_at_scaffold_energy"]
    if rows["scaffold_ce_ratio"] is not None and pca_at is not None:
        rows["scaffold_over_pca_at_equal_energy"] = rows["scaffold_ce_ratio"] / pca_at
        status["scaffold_over_pca_at_equal_energy"] = "ok"
    else:
        rows["scaffold_over_pca_at_equal_energy"] = None
        status["scaffold_over_pca_at_equal_energy"] = (status["scaffold_ce_ratio"] if rows["scaffold_ce_ratio"] is None
                                                       else status["pca_ce_ratio_at_scaffold_energy"])

    summary, intervals, replicates = {}, {}, {}
    for metric, v in rows.items():
        summary[metric] = None if v is None else float(v[0])
        if v is not None:
            lo, hi = interval(v, cfg.ci_level)
            intervals[f"{metric}_ci_low"], intervals[f"{metric}_ci_high"] = lo, hi
            replicates[f"summary.{metric}"] = v[1:N_REPLICATES + 1]
    return summary, status, intervals, replicates
