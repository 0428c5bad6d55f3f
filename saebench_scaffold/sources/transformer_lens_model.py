"""A `HookedTransformer` the user already holds, as the suite's model:

    run_eval(EvalRequest(checkpoints=["my_sae"], tasks="core", model=my_hooked_transformer))

Everything a task asks of a model — activations at a hook, the logits, the logits with an edited
activation spliced in, the tokenizer and the positions to leave out — is answered by TransformerLens
itself (`run_with_cache` up to the hook's block, `run_with_hooks`), so the SAE sees exactly what it
sees in the user's own TransformerLens code, processed or not. The model is used as it is given: its
weight processing is the user's choice and is recorded, not redone.
"""

from __future__ import annotations

import hashlib
import json

import torch

from ..settings import UserError
from .hooks import HookPoint, as_hook_point
from .model_like import ModelLike


class TransformerLensModel(ModelLike):
    """The model contract (`ModelLike`) over a `transformer_lens.HookedTransformer`."""

    processing_note = "the given HookedTransformer is used as it is (its weight processing is the caller's)"

    def __init__(self, model, spec):
        tokenizer = getattr(model, "tokenizer", None)
        if tokenizer is None:
            raise UserError("the HookedTransformer has no tokenizer; give it one (model.set_tokenizer(...)) so texts can be tokenized")
        self.spec, self.tl, self.tokenizer = spec, model.eval(), tokenizer
        self.device = str(model.cfg.device)
        self.n_layers, self.d_model = model.cfg.n_layers, model.cfg.d_model
        self.final_norm = None  # nothing to centre here (see processing.py): the model is used as given
        self.bos_token_id = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        self.special_ids = torch.tensor(sorted(set(tokenizer.all_special_ids)), dtype=torch.long)
        self.source_id = f"transformer_lens:{model.cfg.model_name}:{_fingerprint(model)}"

    def hook_width(self, hook: HookPoint | str, head_index: int | None = None) -> int:
        hp = self._check(hook, head_index)
        if hp.kind != "z":
            return self.d_model
        return self.tl.cfg.d_head * (1 if hp.head is not None else self.tl.cfg.n_heads)

    @torch.inference_mode()
    def hook_activations(self, tokens: torch.Tensor, hook: HookPoint | str, head_index: int | None = None) -> torch.Tensor:
        hp = self._check(hook, head_index)
        _, cache = self.tl.run_with_cache(tokens.to(self.device), names_filter=[hp.name], stop_at_layer=hp.layer + 1)
        acts = cache[hp.name]
        if hp.kind == "z":  # TL: [batch, pos, head, d_head]; SAEs read heads concatenated, or one head
            acts = acts[:, :, hp.head] if hp.head is not None else acts.flatten(-2)
        return acts.float().contiguous()

    @torch.inference_mode()
    def logits(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.tl(tokens.to(self.device)).float()

    @torch.inference_mode()
    def logits_from_hook(self, tokens: torch.Tensor, hook: HookPoint | str, acts: torch.Tensor,
                         head_index: int | None = None) -> torch.Tensor:
        hp = self._check(hook, head_index)
        acts = acts.to(self.device, dtype=self.tl.cfg.dtype)

        def replace(value, hook):
            if hp.kind != "z":
                return acts
            if hp.head is None:
                return acts.view_as(value)
            value = value.clone()
            value[:, :, hp.head] = acts
            return value

        return self.tl.run_with_hooks(tokens.to(self.device), fwd_hooks=[(hp.name, replace)]).float()

    def _check(self, hook: HookPoint | str, head_index: int | None):
        hp = as_hook_point(hook, head_index)
        if hp.layer >= self.n_layers:
            raise UserError(f"hook {hook} is past the last layer of {self.spec.name} ({self.n_layers} layers)")
        if hp.head is not None and hp.head >= self.tl.cfg.n_heads:
            raise UserError(f"head index {hp.head} of {hook} is past the last head ({self.tl.cfg.n_heads} heads)")
        return hp


def _fingerprint(model) -> str:
    """Identifies the weights (for activation-cache keys) without hashing every byte: the config and
    each parameter's sum and sum of squares (one pass over the weights, a fraction of a second)."""
    h = hashlib.sha256(json.dumps(model.cfg.to_dict(), sort_keys=True, default=str).encode())
    with torch.no_grad():
        for name, p in model.state_dict().items():
            p = p.double()
            h.update(f"{name}:{tuple(p.shape)}:{p.sum().item():.17g}:{(p * p).sum().item():.17g}".encode())
    return h.hexdigest()[:16]
