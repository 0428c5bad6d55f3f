"""`ce_ablation`'s configuration and constants: the evaluation budgets, the curve ranks, the paper's
aligned-latent fraction and FORMULAS (the paper's wording beside ours, stored in every result).
Budgets and their precision: the module doc of `ce_ablation.py`."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator, model_validator

from ..base import TaskConfig, sorted_positive_ints
from ..stats import N_REPLICATES
from .twin import read_twin
from ...saes.base import checkpoint_sha256
from ...settings import UserError


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
