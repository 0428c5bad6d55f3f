"""Hybrid BatchTopK SAE: a BatchTopK dictionary with an optional rank-r dense scaffold in parallel
(arXiv 2606.14040):  x̂ = b_dec + U Vᵀ (x − b_dec) + W_dec f(x).

Training keeps the k·B largest ReLU pre-activations over the whole batch. Inference cannot see a
batch, so — as dictionary_learning does — a single learned threshold θ (running average of the
smallest kept activation) replaces it: f = relu(pre) · [pre > θ]. θ is stored in the checkpoint
(`threshold`, a scalar tensor).
"""

import torch
from torch import nn

from ..settings import UserError
from .base import SAE


def batch_topk(pre: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the k·B largest ReLU pre-activations of a [B, d_sae] batch (exact, flat top-k)."""
    relu = torch.relu(pre)
    flat = relu.flatten()
    vals, idx = flat.topk(min(k * pre.shape[0], flat.numel()), sorted=False)
    return torch.zeros_like(flat).scatter_(0, idx, vals).view_as(pre)


class BatchTopKSAE(SAE):
    architecture = "batchtopk"

    def __init__(self, cfg):
        if not cfg.k or cfg.k > cfg.d_sae:
            raise UserError(f"{self.architecture} needs 1 <= k <= d_sae (k={cfg.k}, d_sae={cfg.d_sae})")
        super().__init__(cfg)
        self.threshold = nn.Parameter(torch.tensor(0.0), requires_grad=False)

    def activation(self, pre: torch.Tensor) -> torch.Tensor:
        return torch.relu(pre) * (pre > self.threshold)

    def encode_batch(self, x: torch.Tensor) -> torch.Tensor:
        """Training-time code: BatchTopK over the rows of x (needs a batch)."""
        return batch_topk(self.pre_acts(x), self.cfg.k)
