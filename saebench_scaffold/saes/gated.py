"""Gated SAE (Rajamanoharan et al. 2024; SAELens `gated`, dictionary_learning `GatedAutoEncoder`):
one encoder matrix read twice, a gate deciding which latents fire and a magnitude path saying how much.

    z = (x − b_dec) W_enc                      (SAELens `process_sae_in`; dictionary_learning the same)
    f = [z + b_gate > 0] · relu(z · exp(r_mag) + b_mag)

`b_enc` holds the gate bias (SAELens `b_gate`, dictionary_learning `gate_bias`), so `pre_acts` is
the gate's pre-activation and a latent fires exactly where the gate is open and the magnitude > 0."""

import torch
from torch import nn

from .base import SAE


class GatedSAE(SAE):
    architecture = "gated"
    extra_params = ("b_mag", "r_mag")

    def __init__(self, cfg):
        super().__init__(cfg)
        self.b_mag = nn.Parameter(torch.zeros(cfg.d_sae))
        self.r_mag = nn.Parameter(torch.zeros(cfg.d_sae))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        z = self.encoder_input(x) @ self.W_enc
        gate = (z + self.b_enc > 0).to(z.dtype)
        return gate * torch.relu(z * self.r_mag.exp() + self.b_mag)

    def activation(self, pre: torch.Tensor) -> torch.Tensor:  # pre = the gate's pre-activation z + b_gate
        return (pre > 0).to(pre.dtype) * torch.relu((pre - self.b_enc) * self.r_mag.exp() + self.b_mag)
