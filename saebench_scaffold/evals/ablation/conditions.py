"""Ablation conditions shared by `ce_ablation` and `mmlu_topic` (arXiv 2606.14040's interventions).

Every condition is a function on [..., d] activations returning the edited activations, so the same
code serves next-token loss (edit the hooked residual stream, run the later layers) and probing
(edit each token, then mean-pool). All of them subtract something from x and keep the rest
(including the SAE's error term); none of them replaces x by a reconstruction.

  scaffold removed        x − U Vᵀ (x − b_dec)                 (hybrid SAEs; "not applicable" when r = 0)
  top-r PCA removed       mean-preserving  x − P (x − μ)        (μ = PCA mean, P = projector on the top-r PCs)
                          zeroing          x − P x              (also removes the subspace's share of the mean)
  aligned latents removed x − Σ_{i∈S} f_i(x) W_dec[i]           (S = the N latents whose unit decoder
                                                                 directions lie most in the scaffold subspace,
                                                                 or in the top-r PCA subspace when r = 0)
  random subspace removed x − P_rand (x − μ)                    (control: a random r-dim subspace, same r)
  topic latents removed   x − Σ_{i∈S} f_i(x) W_dec[i]           (S = latents with the largest topic mean difference)

Alignment of a latent = ‖Bᵀ d_i‖², the squared norm of its unit decoder direction inside the subspace
spanned by the orthonormal basis B (1: inside it, 0: orthogonal, r/d: a random direction on average).

Variance bookkeeping, over a sample X of token activations (sums over dims, around the mean μ = E X):
  variance_removed_frac = 1 − Var(X_ablated) / Var(X)           Var(X) = E‖X − μ‖²
  removed_energy_frac   = E‖X − X_ablated‖² / E‖X − μ‖²         (energy of what was subtracted; counts
                                                                 mean shifts: zeroing PCA, zero ablation > 1)
"Variance-matched N" = the smallest N whose aligned-latent removal reaches the scaffold condition's
variance_removed_frac (the top-r PCA mean-preserving condition's, for r = 0 SAEs); "energy-matched N"
the same with removed_energy_frac. Both are found by bisection on a sample of training tokens (assumes
the removed amount grows with N; the achieved value is reported next to the target); a target that
removing every latent does not reach is "unreachable: …" (no CE, no headline).

Alignment against chance: a uniformly random unit direction's alignment ‖Bᵀd‖² with an r-dim subspace
of R^d is Beta(r/2, (d−r)/2) (mean r/d). A set of aligned latents is reported with the quantiles of
every latent's alignment, chance's mean and 99th percentile, and how many latents (of all, and of the
chosen N) lie above that percentile: no latent above it → status "no latent aligned above chance";
some of the chosen N below it → the status says how many are above. Either way the condition's
headline is None (its CE is still reported).

Outlier dimensions (SmolLM2 and Gemma carry a few residual coordinates with huge means/variances):
dimension j is an outlier when |mean_j| > F · median_k |mean_k|  or  std_j > F · median_k std_k,
F = `outlier_factor` (default 10), statistics from the PCA fit's training tokens. Overlap of a
subspace with them = the fraction of the subspace's squared basis mass on those coordinates
(‖B[O, :]‖²_F / r; chance level |O| / d).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch

from ...saes.pca import ActivationPCA
from ...settings import UserError

Edit = Callable[[torch.Tensor], torch.Tensor]

NOT_APPLICABLE_SCAFFOLD = "not applicable: the checkpoint has no scaffold (scaffold_rank = 0)"


@dataclass
class Condition:
    """One intervention. `fn` is None when the condition does not apply to this checkpoint."""

    name: str
    fn: Edit | None
    description: str
    info: dict = field(default_factory=dict)
    status: str = "ok"
    model_only: bool = False
    """The edit does not depend on the checkpoint (only on the model, the PCA fit, the rank and the
    seed): its CE is computed once per `eval` call and reused for every checkpoint."""
    cache_id: str = ""
    """For a model-only condition: what its edit is, as a key its per-context CE is kept under on disk
    (`ce_ablation`; with the model, data, PCA budget and seed in the file's key)."""

    @property
    def applicable(self) -> bool:
        return self.fn is not None


# ---- the edits ------------------------------------------------------------------------------------

def orthonormalize(basis: torch.Tensor) -> torch.Tensor:
    """Orthonormal basis [d, r] of the column space of `basis` [d, r]."""
    if basis.shape[1] == 0:
        return basis.float()
    q, _ = torch.linalg.qr(basis.double())
    return q.float()


def identity(x: torch.Tensor) -> torch.Tensor:
    return x


def remove_subspace(basis: torch.Tensor, center: torch.Tensor | None = None) -> Edit:
    """x − P (x − center) with P = B Bᵀ (B orthonormal [d, r]); center None → zeroing variant x − P x."""
    B = basis.float()

    def fn(x: torch.Tensor) -> torch.Tensor:
        Bx = B.to(x.device, x.dtype)
        z = x if center is None else x - center.to(x.device, x.dtype)
        return x - (z @ Bx) @ Bx.T

    return fn


def remove_scaffold(sae) -> Edit:
    """x − scaffold(x) = x − U Vᵀ (x − b_dec): the dense part the hybrid SAE would have added."""

    @torch.no_grad()
    def fn(x: torch.Tensor) -> torch.Tensor:
        return x - sae.scaffold(x.to(sae.W_enc.dtype)).to(x.dtype)

    return fn


def remove_latents(sae, latents: torch.Tensor | list[int], chunk_tokens: int = 4096) -> Edit:
    """x − Σ_{i ∈ latents} f_i(x) · W_dec[i]: subtract the chosen latents' decoded contribution
    (encoding sees the unedited x; the SAE's error and the other latents stay in x)."""
    idx = torch.as_tensor(latents, dtype=torch.long)

    @torch.no_grad()
    def fn(x: torch.Tensor) -> torch.Tensor:
        if idx.numel() == 0:
            return x
        shape = x.shape
        flat = x.reshape(-1, shape[-1])
        W = sae.W_dec[idx.to(sae.W_dec.device)]
        out = torch.empty_like(flat)
        for s in range(0, flat.shape[0], chunk_tokens):
            xb = flat[s:s + chunk_tokens].to(sae.W_enc.dtype)
            f = sae.encode(xb)[:, idx.to(xb.device)] * sae.output_scale(xb)  # raw units under a per-token norm
            out[s:s + chunk_tokens] = (xb - f @ W).to(x.dtype)
        return out.reshape(shape)

    return fn


def zero_ablation(x: torch.Tensor) -> torch.Tensor:
    return torch.zeros_like(x)


def sae_splice(sae) -> Edit:
    @torch.no_grad()
    def fn(x: torch.Tensor) -> torch.Tensor:
        return sae(x.to(sae.W_enc.dtype)).to(x.dtype)

    return fn


def random_subspace(d: int, r: int, generator: torch.Generator) -> torch.Tensor:
    """A uniformly random r-dim subspace of R^d (orthonormal basis [d, r])."""
    return orthonormalize(torch.randn(d, r, generator=generator))


# ---- choosing latents ---------------------------------------------------------------------------

def unit_rows(w: torch.Tensor) -> torch.Tensor:
    return w / w.norm(dim=1, keepdim=True).clamp_min(1e-12)


def subspace_alignment(directions: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """[n] squared norm of each (unit-normalised) direction's projection on span(basis)."""
    B = orthonormalize(basis).to(directions.device)
    return (unit_rows(directions.float()) @ B).pow(2).sum(-1)


def aligned_order(sae, basis: torch.Tensor) -> torch.Tensor:
    """All latents, most subspace-aligned first (ties broken by index: deterministic)."""
    a = subspace_alignment(sae.W_dec.detach(), basis).cpu()
    return torch.sort(a, descending=True, stable=True).indices


def topic_scores(pooled_latents: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """[d_sae] association of each latent with the topics: max over classes c of
    |mean over class c − mean over the other classes| of its mean-pooled activation
    (SAEBench's sparse-probing latent score, taken over all classes at once)."""
    labels = torch.as_tensor(labels)
    z = pooled_latents.float()
    best = torch.zeros(z.shape[1])
    for c in labels.unique():
        pos = labels == c
        if pos.all() or not pos.any():
            continue
        diff = (z[pos].mean(0) - z[~pos].mean(0)).abs()
        best = torch.maximum(best, diff.cpu())
    return best


def top_latents(scores: torch.Tensor, n: int) -> torch.Tensor:
    n = max(0, min(int(n), scores.numel()))
    return torch.sort(scores, descending=True, stable=True).indices[:n]


# ---- variance ------------------------------------------------------------------------------------

def total_variance(x: torch.Tensor) -> float:
    xd = x.double()
    return float((xd - xd.mean(0)).pow(2).sum(-1).mean())


@torch.no_grad()
def variance_removed(fn: Edit, x: torch.Tensor) -> dict[str, float]:
    """How much of the activation variance of the [n, d] sample x an edit takes away (see module doc)."""
    y = fn(x)
    var_x = total_variance(x)
    if var_x == 0:
        return {"variance_removed_frac": 0.0, "removed_energy_frac": 0.0}
    return {"variance_removed_frac": 1.0 - total_variance(y) / var_x,
            "removed_energy_frac": float((x.double() - y.double()).pow(2).sum(-1).mean()) / var_x}


@torch.no_grad()
def variance_matched_count(sae, order: torch.Tensor, x: torch.Tensor, target: float,
                           max_n: int | None = None, measure: str = "variance") -> dict:
    """Smallest N such that removing the first N latents of `order` removes ≥ `target` of the
    variance of x (`measure="energy"`: of the energy, removed_energy_frac; module doc), by bisection
    (assumes monotonicity). Returns N, the achieved fraction and whether the target was reachable at
    all (if not, N = max_n)."""
    max_n = order.numel() if max_n is None else min(max_n, order.numel())
    xs = x.to(sae.W_enc.dtype)
    f = sae.encode(xs) * sae.output_scale(xs)  # raw units under a per-token normalisation
    order = order[:max_n].to(f.device)
    fo = f[:, order]
    Wo = sae.W_dec.detach()[order]
    var_x = total_variance(x)

    def removed(n: int) -> float:
        if n == 0 or var_x == 0:
            return 0.0
        delta = (fo[:, :n] @ Wo[:n]).to(x.dtype)
        if measure == "energy":
            return float(delta.double().pow(2).sum(-1).mean()) / var_x
        return 1.0 - total_variance(x - delta) / var_x

    full = removed(max_n)
    if full < target:
        return {"n": max_n, "achieved": full, "target": target, "reachable": False}
    lo, hi = 0, max_n  # removed(lo) < target <= removed(hi)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if removed(mid) >= target:
            hi = mid
        else:
            lo = mid
    return {"n": hi, "achieved": removed(hi), "target": target, "reachable": True}


def chance_alignment(r: int, d: int) -> dict[str, float]:
    """Alignment ‖Bᵀu‖² of a uniformly random unit u with an r-dim subspace of R^d: Beta(r/2, (d−r)/2)."""
    from scipy.stats import beta

    if r >= d:
        return {"mean": 1.0, "q99": 1.0}
    return {"mean": r / d, "q99": float(beta.ppf(0.99, r / 2, (d - r) / 2))}


ALIGN_QUANTILES = {"alignment_median": 0.5, "alignment_q90": 0.9, "alignment_q99": 0.99, "alignment_q999": 0.999}


def alignment_against_chance(align: torch.Tensor, chosen: torch.Tensor, r: int, d: int) -> dict:
    """Quantiles of every latent's alignment, chance's mean and 99th percentile, how many latents
    (of all, and of the chosen ones) lie above that percentile."""
    chance = chance_alignment(r, d)
    a = align.double()
    levels = torch.tensor(list(ALIGN_QUANTILES.values()), dtype=torch.float64)
    q = torch.quantile(a, levels) if a.numel() else torch.full((len(levels),), float("nan"))
    out = {name: float(v) for name, v in zip(ALIGN_QUANTILES, q)}
    out.update({"alignment_max": float(a.max()) if a.numel() else float("nan"),
                "chance_alignment_mean": chance["mean"], "chance_alignment_q99": chance["q99"],
                "n_latents_above_chance_q99": int((a > chance["q99"]).sum()),
                "n_latents_above_chance_q99_if_random": 0.01 * a.numel(),  # what random directions would give
                "n_chosen_above_chance_q99": int((a[chosen] > chance["q99"]).sum())})
    return out


def aligned_status(stats: dict, n: int) -> str:
    """ok, or why the condition's headline is withheld (module doc)."""
    if stats["n_latents_above_chance_q99"] == 0:
        return "no latent aligned above chance"
    if stats["n_chosen_above_chance_q99"] < n:
        return (f"only {stats['n_chosen_above_chance_q99']} of the {n} chosen latents are aligned above chance "
                f"(99th percentile {stats['chance_alignment_q99']:.4f}); no headline")
    return "ok"


# ---- subspace geometry ---------------------------------------------------------------------------

def principal_angles(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Principal angles (degrees, ascending) between span(a) and span(b), a [d, r1], b [d, r2]."""
    qa, qb = orthonormalize(a).double(), orthonormalize(b).double()
    if qb.shape[1] > qa.shape[1]:
        qa, qb = qb, qa
    m = qa.T @ qb
    cos = torch.linalg.svdvals(m).clamp(-1.0, 1.0)  # descending
    sin = torch.linalg.svdvals(qb - qa @ m).clamp(0.0, 1.0).flip(0)  # ascending (pairs with cos)
    # arccos is ill-conditioned near 0 degrees, arcsin near 90: take the accurate one (Björck & Golub).
    angles = torch.where(sin < 0.5 ** 0.5, torch.arcsin(sin), torch.arccos(cos))
    return torch.rad2deg(angles).float().sort().values


def outlier_dims(mean: torch.Tensor, var: torch.Tensor, factor: float = 10.0) -> dict:
    """Coordinates whose |mean| or std exceeds `factor` × the median over coordinates (module doc)."""
    am, sd = mean.abs().float(), var.clamp_min(0).sqrt().float()
    by_mean = (am > factor * am.median()).nonzero().flatten()
    by_std = (sd > factor * sd.median()).nonzero().flatten()
    dims = torch.unique(torch.cat([by_mean, by_std]))
    return {"dims": dims.tolist(), "by_mean": by_mean.tolist(), "by_std": by_std.tolist(),
            "criterion": f"|mean_j| > {factor:g} x median |mean| or std_j > {factor:g} x median std"}


def subspace_outlier_mass(basis: torch.Tensor, dims: Iterable[int]) -> float:
    """Fraction of the squared mass of an orthonormal basis [d, r] on coordinates `dims` (chance |dims|/d)."""
    dims = list(dims)
    if basis.shape[1] == 0:
        return float("nan")
    B = orthonormalize(basis)
    return float(B[dims].pow(2).sum() / B.shape[1]) if dims else 0.0


def per_dim_capture(basis: torch.Tensor, dims: Iterable[int]) -> dict[int, float]:
    """For each coordinate j in dims: ‖Bᵀ e_j‖², how much of that axis lies in the subspace."""
    B = orthonormalize(basis)
    return {int(j): float(B[j].pow(2).sum()) for j in dims}


def pca_dim_variances(pca: ActivationPCA) -> torch.Tensor:
    """Per-coordinate variance (diagonal of the covariance) from a fitted PCA."""
    return (pca.components.double().pow(2) * pca.variances.double().unsqueeze(1)).sum(0).float()


# ---- reference statistics (fitted once per eval context) ------------------------------------------

def reference_sample(ctx, n_tokens: int, dataset: str = "wikipedia") -> torch.Tensor:
    """The first `n_tokens` non-special training tokens [n, d] (for variance matching)."""
    key = ("sample", n_tokens, dataset)
    if key not in ctx.memo:
        cache = ctx.train_cache(math.ceil(n_tokens / 127), dataset=dataset)
        ctx.memo[key] = torch.cat(list(cache.iter_token_batches(limit=n_tokens)))
    return ctx.memo[key]


def check_rank(r: int, d_in: int, what: str = "pca_rank") -> None:
    if r < 1:
        raise UserError(f"{what} must be >= 1 (got {r})")
    if r > d_in:
        raise UserError(f"{what}={r} is larger than the activation width d_in={d_in}")


def subspace_rank(sae, pca_rank: int | None, default: int = 24) -> int:
    """r of the comparison subspaces: the scaffold's rank for hybrids (unless pca_rank is given),
    else `pca_rank` (default 24, the paper's)."""
    r = pca_rank if pca_rank is not None else (sae.scaffold_rank or default)
    check_rank(r, sae.d_in)
    return r


# ---- the standard condition set ------------------------------------------------------------------

def scaffold_condition(sae) -> Condition:
    """scaffold removed (not applicable, fn None, for r = 0 SAEs)."""
    if sae.scaffold_rank:
        return Condition("scaffold_removed", remove_scaffold(sae), "x - U V^T (x - b_dec)", {"rank": sae.scaffold_rank})
    return Condition("scaffold_removed", None, "x - U V^T (x - b_dec)", {"rank": 0}, NOT_APPLICABLE_SCAFFOLD)


def reference_conditions(sae) -> list[Condition]:
    """The SAE spliced in (error term dropped) and zero ablation: the two ends CE and accuracy are read between."""
    return [Condition("sae_spliced", sae_splice(sae), "x replaced by the SAE reconstruction"),
            Condition("zero_ablation", zero_ablation, "x replaced by zeros", model_only=True, cache_id="zero")]


def subspace_conditions(sae, pca: ActivationPCA, r: int, generator: torch.Generator) -> list[Condition]:
    """scaffold removed, top-r PCA removed (both variants), random r-dim subspace removed."""
    check_rank(r, sae.d_in)
    conds = [scaffold_condition(sae)]
    top = pca.top(r)
    conds.append(Condition("pca_removed_mean_preserving", remove_subspace(top, pca.mean),
                           f"x - P(x - mu), P = projector on the top-{r} PCs", {"rank": r}, model_only=True,
                           cache_id=f"pca_mean_preserving:{r}"))
    conds.append(Condition("pca_removed_zeroing", remove_subspace(top, None),
                           f"x - P x, P = projector on the top-{r} PCs", {"rank": r}, model_only=True,
                           cache_id=f"pca_zeroing:{r}"))
    conds.append(Condition("random_subspace_removed", remove_subspace(random_subspace(sae.d_in, r, generator), pca.mean),
                           f"x - P(x - mu), P = projector on a random {r}-dim subspace (control)", {"rank": r},
                           model_only=True, cache_id=f"random_subspace_removed:{r}"))
    # the generator is seeded by (eval seed, fixed salt) and draws this subspace first: same subspace
    return conds


def alignment_basis(sae, pca: ActivationPCA, r: int) -> tuple[torch.Tensor, str]:
    """The subspace aligned latents are chosen against: the scaffold's, or the top-r PCs for r = 0."""
    if sae.scaffold_rank:
        return sae.scaffold_basis().detach().cpu(), "scaffold"
    return pca.top(r), f"top-{r} PCA"


def aligned_latent_conditions(sae, pca: ActivationPCA, r: int, n_fixed: int, sample: torch.Tensor,
                              target: float | None, max_matched: int | None = None,
                              energy_target: float | None = None) -> list[Condition]:
    """Aligned latents removed: N = n_fixed, N matched to `target` removed variance (if given) and to
    `energy_target` removed energy (if given), against the scaffold (top-r PCs for r = 0)."""
    basis, basis_name = alignment_basis(sae, pca, r)
    ref = "scaffold" if sae.scaffold_rank else "top-r PCA"
    return latents_aligned_with(sae, basis, basis_name, "aligned_latents_removed", n_fixed, sample,
                                {"variance": target, "energy": energy_target}, ref, max_matched)


MATCHED_SUFFIX = {"variance": "_variance_matched", "energy": "_energy_matched"}


def latents_aligned_with(sae, basis: torch.Tensor, basis_name: str, name: str, n_fixed: int, sample: torch.Tensor,
                         targets: dict[str, float | None], reference: str, max_matched: int | None = None) -> list[Condition]:
    """`name`: this SAE's n_fixed latents most aligned with span(basis) removed; `name` + _variance_matched /
    _energy_matched: N chosen so the removed variance / energy on `sample` reaches targets[measure]
    (`reference` names the condition the target comes from). Each carries its alignment against chance
    and a status (module doc); an unreachable target is a condition with no edit."""
    order = aligned_order(sae, basis)
    align = subspace_alignment(sae.W_dec.detach(), basis).cpu().clamp(0.0, 1.0)  # reported: no float32 1 + 1e-7
    r = orthonormalize(basis).shape[1]

    def condition(cname: str, n: int, description: str, **extra) -> Condition:
        sel = order[:n]
        stats = alignment_against_chance(align, sel, r, sae.d_in)
        info = {"n_latents": int(n), "subspace": basis_name,
                "mean_alignment": float(align[sel].mean()) if n else float("nan"),
                "min_alignment": float(align[sel].min()) if n else float("nan"),
                "chance_alignment": r / sae.d_in, **stats, **extra}
        return Condition(cname, remove_latents(sae, sel), description, info, aligned_status(stats, n))

    n_fixed = min(n_fixed, sae.d_sae)
    conds = [condition(name, n_fixed, f"x - sum f_i W_dec[i] over the {n_fixed} latents most aligned with the {basis_name} subspace")]
    for measure, target in targets.items():
        if target is None:
            continue
        m = variance_matched_count(sae, order, sample.to(sae.W_enc.device), target, max_matched, measure)
        c = condition(name + MATCHED_SUFFIX[measure], m["n"],
                      f"as {name}, N chosen so the removed {measure} matches the {reference} condition's on training tokens",
                      **{f"matched_target_{measure}": m["target"], f"matched_achieved_{measure}": m["achieved"],
                         "matched_reachable": m["reachable"]})
        if not m["reachable"]:
            c.fn = None
            c.status = (f"unreachable: removing all {m['n']} latents removes {m['achieved']:.4f} of the {measure}, "
                        f"short of the target {m['target']:.4f}")
        conds.append(c)
    return conds


def geometry(sae, pca: ActivationPCA, r: int, outlier_factor: float) -> dict:
    """Principal angles scaffold vs top-r PCs, and overlap of both with the outlier coordinates."""
    out = outlier_dims(pca.mean, pca_dim_variances(pca), outlier_factor)
    top = pca.top(r)
    d = sae.d_in
    g = {"outlier_criterion": out["criterion"], "n_outlier_dims": len(out["dims"]),
         "outlier_mass_chance": len(out["dims"]) / d,
         "pca_outlier_mass": subspace_outlier_mass(top, out["dims"])}
    unstructured = {"outlier_dims": out, "pca_capture_of_outlier_dims": per_dim_capture(top, out["dims"])}
    if sae.scaffold_rank:
        basis = sae.scaffold_basis().detach().cpu()
        angles = principal_angles(basis, pca.top(sae.scaffold_rank))
        g.update({"scaffold_outlier_mass": subspace_outlier_mass(basis, out["dims"]),
                  "principal_angle_mean_deg": float(angles.mean()), "principal_angle_min_deg": float(angles.min()),
                  "principal_angle_max_deg": float(angles.max()),
                  "n_angles_below_30deg": int((angles < 30).sum()),
                  "scaffold_pca_overlap": float(torch.cos(torch.deg2rad(angles.double())).pow(2).mean())})
        unstructured["principal_angles_deg"] = angles.tolist()
        unstructured["scaffold_capture_of_outlier_dims"] = per_dim_capture(basis, out["dims"])
    else:
        g["scaffold_outlier_mass"] = None
    return {"metrics": g, "unstructured": unstructured}
