"""JumpReLU SAE (SAELens `jumprelu`, Gemma Scope): a latent fires when its pre-activation exceeds
its own learned threshold. SAELens saves trained BatchTopK/Matryoshka SAEs in this form."""

import torch
from torch import nn

from .base import SAE


class JumpReLUSAE(SAE):
    architecture = "jumprelu"

    def __init__(self, cfg):
        super().__init__(cfg)
        self.threshold = nn.Parameter(torch.zeros(cfg.d_sae))

    def activation(self, pre: torch.Tensor) -> torch.Tensor:
        return pre * (pre > self.threshold) * (pre > 0)
