"""The written contract of a model: what tasks, activation caches and the processed view ask of one.

Three classes implement it, each explicitly (they subclass `ModelLike`): `LanguageModel` (a Hugging
Face causal LM, model.py), `TransformerLensModel` (a HookedTransformer the caller holds) and
`ProcessedModel` (a view whose activations are a processed model's, processing.py). Tasks and
activation caches use nothing else of a model; only `sources/hooked.py` and the autointerp judge,
which need the Hugging Face module itself, take a `LanguageModel`. Optional: a model with
`supports_packing = True` (LanguageModel, and ProcessedModel over one) takes `packed=(mask, position
ids)` in `hook_activations` / `logits_from_hook` (packed prefix trees, evals/downstream/packing.py).
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch

from .hooks import HookPoint


@runtime_checkable
class ModelLike(Protocol):
    spec: Any
    """The `ModelSpec` it was loaded from (name, device, dtype)."""
    tokenizer: Any
    """A Hugging Face tokenizer."""
    source_id: str
    """What the weights are (and how they were processed): the key of every cache built from it."""
    device: str
    n_layers: int
    d_model: int
    bos_token_id: int
    special_ids: torch.Tensor
    """Token ids left out of metrics (with position 0): `special_mask`."""
    final_norm: Any
    """The final norm module (its type says whether centring applies, processing.py), or None."""

    def special_mask(self, tokens: torch.Tensor) -> torch.Tensor:
        """True at positions tasks exclude by default: position 0 (the BOS/attention-sink position,
        where SmolLM2 puts activations of norm ~23,600) and any special token."""
        mask = torch.isin(tokens, self.special_ids.to(tokens.device))
        mask[..., 0] = True
        return mask

    def hook_width(self, hook: HookPoint | str, head_index: int | None = None) -> int:
        """Width of the activations at `hook` (an SAE's d_in there)."""
        ...

    def hook_activations(self, tokens: torch.Tensor, hook: HookPoint | str, head_index: int | None = None) -> torch.Tensor:
        """float32 [batch, ctx, width] activations at `hook`; the forward pass may stop there."""
        ...

    def logits(self, tokens: torch.Tensor) -> torch.Tensor:
        """float32 [batch, ctx, vocab] logits."""
        ...

    def logits_from_hook(self, tokens: torch.Tensor, hook: HookPoint | str, acts: torch.Tensor,
                         head_index: int | None = None) -> torch.Tensor:
        """Logits with the activation at `hook` replaced by `acts` (as `hook_activations` returns it)."""
        ...
