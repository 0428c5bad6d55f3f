"""Next-token cross-entropy over the predictions that count, shared by `core` (CE with the SAE spliced
in) and `ce_ablation` (CE with parts of the activations removed)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

BODY = 127  # non-special tokens per 128-token context


def masked_ce(logits: torch.Tensor, tokens: torch.Tensor, special: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-prediction CE and a mask of the predictions that count (made from a non-special position,
    of a non-special next token)."""
    ce = F.cross_entropy(logits[:, :-1].flatten(0, 1), tokens[:, 1:].flatten().to(logits.device), reduction="none")
    return ce, prediction_mask(special).to(ce.device)


def prediction_mask(special: torch.Tensor) -> torch.Tensor:
    """The predictions that count, flattened [b·(t−1)]: made from a non-special position, of a
    non-special next token."""
    return (~special[:, :-1] & ~special[:, 1:]).flatten()
