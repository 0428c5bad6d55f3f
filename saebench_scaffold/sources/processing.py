"""TransformerLens weight processing, as an SAE trained on a processed model sees it.

A SAELens SAE trained on a `HookedTransformer` records how that model's weights were processed
(`model_from_pretrained_kwargs`, e.g. `{"center_writing_weights": true}`), and SAELens's own evals
load the model with exactly those kwargs: the SAE expects the processed model's activations. We run
the unprocessed Hugging Face model and apply the exact equivalent of each setting to what the SAE
reads (tests/sources/test_processing.py checks it against TransformerLens's processed model):

- `center_writing_weights`: every write into the residual stream (embeddings, attention and MLP
  outputs with their biases) is made mean-zero over d_model, so every residual-stream activation
  (resid_pre / resid_mid / resid_post, attn_out, mlp_out) is the raw one minus its mean over
  d_model. TransformerLens does this for LayerNorm models only (an RMSNorm does not remove the mean,
  so centring would change the model); for RMSNorm models it is a no-op there and here. The logits do
  not change (every LayerNorm removes the mean first), so an SAE output spliced into the raw model
  gives the processed model's logits.
- `fold_ln`, `center_unembed`: change the weights after a norm and the unembedding; hook
  activations stay as they are and the logits move by a per-position constant that softmax ignores.
- `fold_value_biases`, `refactor_factored_attn_matrices`: leave the residual stream alone but change
  `attn.hook_z`; that combination is refused.
- `dtype`, `default_prepend_bos`, `device`, `n_devices`, `move_to_device`: how the model was loaded,
  not what it computes (our `--dtype` sets precision); recorded only.
Any other key is refused in one line naming it: we will not score an SAE on activations it was not
trained on without saying so.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..settings import UserError
from .hooks import HookPoint, as_hook_point
from .model_like import ModelLike

CHANGES_Z = ("fold_value_biases", "refactor_factored_attn_matrices")
SAME_ACTIVATIONS = ("fold_ln", "center_unembed") + CHANGES_Z
LOADING_ONLY = ("dtype", "torch_dtype", "default_prepend_bos", "device", "n_devices", "move_to_device")
KNOWN = ("center_writing_weights",) + SAME_ACTIVATIONS + LOADING_ONLY
_RESIDUAL_WRITES = ("resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out")  # HookPoint kinds


@dataclass(frozen=True)
class Processing:
    """The processing an SAE asked for: the settings that change what it reads, and all it gave."""

    center_writing_weights: bool = False
    changes_z: tuple[str, ...] = ()
    requested: tuple[tuple[str, Any], ...] = ()  # every key the SAE's config gave, sorted

    @classmethod
    def from_kwargs(cls, kwargs: dict | None, where: str) -> Processing:
        kwargs = dict(kwargs or {})
        unknown = sorted(set(kwargs) - set(KNOWN))
        if unknown:
            raise UserError(f"{where}: model_from_pretrained_kwargs {unknown} cannot be honoured (known: {', '.join(KNOWN)}); "
                            "its activations would not be the ones the SAE was trained on")
        return cls(bool(kwargs.get("center_writing_weights")), tuple(k for k in CHANGES_Z if kwargs.get(k)),
                   tuple(sorted((k, v) for k, v in kwargs.items())))

    @property
    def active(self) -> bool:
        return self.center_writing_weights

    def check(self, lm, hook: HookPoint | str) -> None:
        """Refuse what cannot be reproduced exactly at this hook (any `attn.hook_z`, one head or all)."""
        if self.changes_z and as_hook_point(hook).kind == "z":
            raise UserError(f"{', '.join(self.changes_z)} changes attn.hook_z and is not reproduced here; "
                            f"{hook} cannot be read as the SAE was trained")

    def describe(self, lm) -> dict:
        """For provenance: what was asked, and what was done to the activations."""
        centred = self.center_writing_weights and uses_layernorm(lm)
        done = getattr(lm, "processing_note", None) or ("residual-stream activations centred over d_model (= TransformerLens center_writing_weights)" if centred
                else "none needed: these settings leave the activations the SAE reads unchanged"
                + (" (center_writing_weights is a no-op for RMSNorm models, as in TransformerLens)"
                   if self.center_writing_weights else ""))
        return {"model_from_pretrained_kwargs": dict(self.requested), "applied": done}


def uses_layernorm(lm) -> bool:
    return isinstance(lm.final_norm, nn.LayerNorm)


class ProcessedModel(ModelLike):
    """A view of a model (same weights, same forward) whose hook activations are the processed
    model's, under a `source_id` of its own so its activation caches are its own. Everything else of
    the contract is the wrapped model's."""

    def __init__(self, lm: ModelLike, processing: Processing):
        self._lm = lm
        self.processing = processing
        self.source_id = f"{lm.source_id}+center_writing_weights"
        self.spec, self.tokenizer, self.device = lm.spec, lm.tokenizer, lm.device
        self.n_layers, self.d_model, self.final_norm = lm.n_layers, lm.d_model, lm.final_norm
        self.bos_token_id, self.special_ids = lm.bos_token_id, lm.special_ids

    def hook_width(self, hook: HookPoint | str, head_index: int | None = None) -> int:
        return self._lm.hook_width(hook, head_index)

    @property
    def supports_packing(self) -> bool:
        return bool(getattr(self._lm, "supports_packing", False))

    def hook_activations(self, tokens: torch.Tensor, hook: HookPoint | str, head_index: int | None = None,
                         **packed) -> torch.Tensor:
        acts = self._lm.hook_activations(tokens, hook, head_index, **packed)
        if as_hook_point(hook).kind in _RESIDUAL_WRITES:
            acts = acts - acts.mean(dim=-1, keepdim=True)
        return acts

    def logits(self, tokens: torch.Tensor) -> torch.Tensor:
        return self._lm.logits(tokens)

    def logits_from_hook(self, tokens: torch.Tensor, hook: HookPoint | str, acts: torch.Tensor,
                         head_index: int | None = None, **kwargs) -> torch.Tensor:
        """As the model's (`positions`, `packed` handed on)."""
        return self._lm.logits_from_hook(tokens, hook, acts, head_index, **kwargs)


def processed(lm, processing: Processing | None, hook: HookPoint | str):
    """`lm` as an SAE trained under `processing` must see it (`lm` itself where nothing changes)."""
    if processing is None:
        return lm
    processing.check(lm, hook)
    return ProcessedModel(lm, processing) if processing.active and uses_layernorm(lm) else lm
