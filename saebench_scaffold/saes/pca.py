"""PCA of cached activations, and the PCA baseline "SAE" built from it (a reference point every
eval can score: d_sae = d_in latents, the projections on the principal directions)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import SAE, SAEConfig


@dataclass
class ActivationPCA:
    mean: torch.Tensor  # [d]
    components: torch.Tensor  # [d, d], rows = principal directions, by decreasing variance
    variances: torch.Tensor  # [d]
    n_tokens: int

    def top(self, r: int) -> torch.Tensor:
        """Orthonormal basis [d, r] of the top-r principal subspace."""
        return self.components[:r].T


def fit_pca(batches, limit: int | None = None) -> ActivationPCA:
    """Exact PCA from streamed [b, d] batches (float64 moments, so the mean-centred covariance is
    accurate even with SmolLM2's large outlier dimensions)."""
    n, s, ss = 0, None, None
    for x in batches:
        x = x.double()
        if limit is not None:
            x = x[: limit - n]
        s = x.sum(0) if s is None else s + x.sum(0)
        ss = x.T @ x if ss is None else ss + x.T @ x
        n += x.shape[0]
        if limit is not None and n >= limit:
            break
    if not n:
        raise ValueError("no activations to fit PCA on")
    mean = s / n
    cov = ss / n - torch.outer(mean, mean)
    evals, evecs = torch.linalg.eigh(cov)
    order = evals.argsort(descending=True)
    return ActivationPCA(mean.float(), evecs[:, order].T.float().contiguous(), evals[order].clamp_min(0).float(), n)


class PCASAE(SAE):
    architecture = "pca"

    def activation(self, pre: torch.Tensor) -> torch.Tensor:
        return pre  # dense projections: a baseline, not a sparse code

    @classmethod
    def from_pca(cls, pca: ActivationPCA, model_name: str = "", hook_name: str = "") -> PCASAE:
        d = pca.mean.shape[0]
        sae = cls(SAEConfig("pca", d, d, model_name, hook_name, extra={"fit_tokens": pca.n_tokens}))
        with torch.no_grad():
            sae.W_enc.copy_(pca.components.T)
            sae.W_dec.copy_(pca.components)
            sae.b_dec.copy_(pca.mean)
            sae.b_enc.zero_()
        return sae
