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
    `ce_config.FORMULAS`: the paper's wording beside ours, stored in every result);
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

Modules: this file (the task's `run`, and the conditions it and `downstream` measure under),
`ce_config.py` (config, budgets, FORMULAS), `twin.py` (the r > 0 twin), `ce_passes.py` (per-context CE
and removed energy, the model-only disk cache), `ce_draws.py` (statistics on the context draws:
intervals, curves, equal-energy interpolation, the summary block).
"""

from __future__ import annotations

import math

import torch

from . import conditions as ab
from ..base import CE_OFFSET_CONTEXTS, EvalContext, Task, TaskOutput
from .ce import BODY
from ..declarations import table_column
from ..stats import N_REPLICATES, replicates_block
from .ce_config import FORMULAS, PRECISE_N_CE_TOKENS, CEAblationConfig, default_n_aligned
from .ce_draws import PerDraw, condition_metrics, curve_results, draw_weights, summary_metrics
from .ce_passes import model_only_stats, per_context_stats
from .checks import check_ce_ablation
from .twin import load_twin, twin_record


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
