"""AbsTopK SAE (SAELens `abstopk`, arXiv 2510.00404): per token, the k pre-activations of largest
magnitude keep their sign (no ReLU), so a latent can fire in either direction. Its negative
activations are firings too: core counts them in L0 (non-zero latents)."""

import torch

from .topk import TopKSAE


class AbsTopKSAE(TopKSAE):
    architecture = "abstopk"

    def activation(self, pre: torch.Tensor) -> torch.Tensor:
        idx = pre.abs().topk(self.cfg.k, dim=-1, sorted=False).indices
        return torch.zeros_like(pre).scatter_(-1, idx, pre.gather(-1, idx))
