"""Standard ReLU SAE (SAELens `standard`, dictionary_learning `AutoEncoder`)."""

import torch

from .base import SAE


class StandardSAE(SAE):
    architecture = "standard"

    def activation(self, pre: torch.Tensor) -> torch.Tensor:
        return torch.relu(pre)
