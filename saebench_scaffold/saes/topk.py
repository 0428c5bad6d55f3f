"""Per-token TopK SAE (SAELens `topk`, sparsify): the k largest ReLU pre-activations of each token."""

import torch

from ..settings import UserError
from .base import SAE


class TopKSAE(SAE):
    architecture = "topk"

    def __init__(self, cfg):
        if not cfg.k or cfg.k > cfg.d_sae:
            raise UserError(f"{self.architecture} SAE needs 1 <= k <= d_sae (k={cfg.k}, d_sae={cfg.d_sae})")
        super().__init__(cfg)

    def activation(self, pre: torch.Tensor) -> torch.Tensor:
        vals, idx = torch.relu(pre).topk(self.cfg.k, dim=-1)
        return torch.zeros_like(pre).scatter_(-1, idx, vals)
