"""A TransformerLens `HookedTransformer` of a loaded `LanguageModel`, built offline from its weights.

SAELens SAEs are trained and evaluated on TransformerLens models (SAELens's `run_evals` loads
`HookedTransformer.from_pretrained_no_processing(model_name, **model_from_pretrained_kwargs)`), so TL's
hook points are the definition our HF-side hooks must reproduce; this module builds the reference.

Why `HookedTransformer` and not TL 3's `TransformerBridge` (which can boot on a loaded HF model):
the bridge runs the HF modules themselves, wrapped, so checking our hooks against it would check HF
against HF; HookedTransformer is TL's own re-implementation of each architecture (its own attention,
norms, rotary, soft caps), and it is what SAELens loads. Its hub loader is not usable offline, so the
pieces are assembled here from TL's own functions:

- the config: TL's `convert_hf_model_config(path)` maps an HF config to a HookedTransformerConfig
  dict, reading `config.json` with AutoConfig; given a local directory it never touches the hub, so
  the model's config is written to a temporary directory and TL is handed that path. Gemma-2 is the
  exception: TL maps it by hub name with hard-coded sizes (`google/gemma-2-2b`, `-9b`, `-27b`), so
  `_gemma2_config` fills the same fields from the HF config (see its docstring).
- the weights: `get_pretrained_state_dict(path, cfg, hf_model=lm.hf)`, which dispatches to TL's
  converter for the architecture (`convert_llama_weights`, `convert_gpt2_weights`,
  `convert_neox_weights`, `convert_gemma_weights`, `convert_qwen2_weights`, ...) on the loaded model.
- the processing: `load_and_process_state_dict` with the flags SAELens configs carry; all off by
  default (the unprocessed model, whose activations equal the HF model's).

The TL model gets no tokenizer: callers pass token tensors. (TL's `set_tokenizer` reloads a tokenizer
by its name, i.e. from the hub, and edits the padding side and pad token of the one it keeps.)
"""

from __future__ import annotations

import copy
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from ..settings import UserError
from .model import LanguageModel

if TYPE_CHECKING:  # importing transformer_lens takes seconds: only when a TL model is built
    from transformer_lens import HookedTransformer

PROCESSING_FLAGS = ("fold_ln", "center_writing_weights", "center_unembed", "fold_value_biases",
                    "refactor_factored_attn_matrices")
"""The `model_from_pretrained_kwargs` SAELens configs carry that change TL's weights (all False here by
default, as in `from_pretrained_no_processing`)."""

# convert_hf_model_config picks a name-based branch (with no HF config behind it) when the path it is
# given contains one of these, so the temporary config directory must not.
_NAME_TRIGGERS = ("llama", "gemma")


def hooked_transformer(lm: LanguageModel, **from_pretrained_kwargs) -> HookedTransformer:
    """`transformer_lens.HookedTransformer` with `lm.hf`'s weights, on `lm`'s device and dtype.

    `from_pretrained_kwargs`: the processing flags of `PROCESSING_FLAGS` (SAELens's
    `model_from_pretrained_kwargs`), each False unless given. As TL's `from_pretrained` does,
    `center_unembed` is dropped for models with a logit soft cap (Gemma-2: softcapping is not
    shift-invariant) and `fold_ln` / `center_writing_weights` for post-norm architectures."""
    from transformer_lens import HookedTransformer, HookedTransformerConfig
    from transformer_lens import loading_from_pretrained as tl_loading
    from transformer_lens.utilities.activation_functions import softcap_enabled
    from transformer_lens.utilities.architectures import POST_NORM_ARCHITECTURES

    unknown = sorted(set(from_pretrained_kwargs) - set(PROCESSING_FLAGS))
    if unknown:
        raise UserError(f"unsupported TransformerLens model_from_pretrained_kwargs {', '.join(unknown)}; "
                        f"supported: {', '.join(PROCESSING_FLAGS)}")
    flags = {flag: bool(from_pretrained_kwargs.get(flag, False)) for flag in PROCESSING_FLAGS}
    architecture = type(lm.hf).__name__  # what the weights in hand are, whatever config.json declares
    dtype = next(lm.hf.parameters()).dtype

    with tempfile.TemporaryDirectory(prefix="saebench-tl-") as tmp:
        local = Path(tmp) / "config"
        if any(word in str(local).lower() for word in _NAME_TRIGGERS):
            raise UserError(f"cannot build a TransformerLens model: TransformerLens reads model names from paths "
                            f"and the temporary directory {local} looks like one; set TMPDIR elsewhere")
        hf_config = copy.deepcopy(lm.hf.config)
        hf_config.architectures = [architecture]
        if architecture == "GPT2LMHeadModel" and not hasattr(hf_config, "n_ctx"):
            # TL reads n_ctx, which GPT-2 configs on the hub carry (= n_positions) and configs built
            # in code under transformers 5 lack.
            hf_config.n_ctx = hf_config.n_positions
        hf_config.save_pretrained(local)
        try:
            if architecture == "Gemma2ForCausalLM":
                cfg_dict = _gemma2_config(hf_config)
            else:
                cfg_dict = tl_loading.convert_hf_model_config(str(local))
        except NotImplementedError as err:
            raise UserError(f"TransformerLens cannot build {architecture} ({lm.spec.name}) offline: "
                            f"{str(err).splitlines()[0]}") from err
        cfg_dict.update(model_name=lm.spec.name, tokenizer_name=None, init_weights=False, dtype=dtype,
                        device=lm.device, n_devices=1, from_checkpoint=False,
                        d_vocab=int(hf_config.vocab_size))
        cfg_dict.setdefault("default_prepend_bos", True)
        cfg = HookedTransformerConfig.from_dict(cfg_dict)
        try:
            state_dict = tl_loading.get_pretrained_state_dict(str(local), cfg, hf_model=lm.hf, dtype=dtype)
        except ValueError as err:
            raise UserError(f"TransformerLens cannot convert the weights of {architecture} ({lm.spec.name}): "
                            f"{str(err).splitlines()[0]}") from err

    if softcap_enabled(cfg.output_logits_soft_cap) and flags["center_unembed"]:
        warnings.warn(f"center_unembed dropped for {architecture}: its logits are soft-capped (as TransformerLens does)")
        flags["center_unembed"] = False
    if architecture in POST_NORM_ARCHITECTURES and (flags["fold_ln"] or flags["center_writing_weights"]):
        warnings.warn(f"fold_ln and center_writing_weights dropped for post-norm {architecture} (as TransformerLens does)")
        flags["fold_ln"] = flags["center_writing_weights"] = False
    with warnings.catch_warnings():
        # TL 3 deprecates HookedTransformer for TransformerBridge; it is the reference on purpose (see above).
        warnings.filterwarnings("ignore", message="HookedTransformer is deprecated", category=DeprecationWarning)
        model = HookedTransformer(cfg, tokenizer=None, move_to_device=True)  # to cfg.device = lm.device
    model.load_and_process_state_dict(state_dict, **flags)
    return model.eval()


def _gemma2_config(hf_config) -> dict:
    """TL's Gemma-2 entries (`google/gemma-2-2b` etc. in `convert_hf_model_config`), with each
    hard-coded value read from the HF config field it was copied from. The attention scale is
    sqrt(query_pre_attn_scalar): TL leaves 2b/9b at the default sqrt(d_head) because their scalar is
    d_head (256), and writes 12.0 = sqrt(144) for 27b. HF's `layer_types` gives the sliding layers."""
    return {
        "d_model": hf_config.hidden_size,
        "d_head": hf_config.head_dim,
        "n_heads": hf_config.num_attention_heads,
        "d_mlp": hf_config.intermediate_size,
        "n_layers": hf_config.num_hidden_layers,
        "n_ctx": hf_config.max_position_embeddings,
        "eps": hf_config.rms_norm_eps,
        "d_vocab": hf_config.vocab_size,
        "act_fn": hf_config.hidden_activation,
        "initializer_range": hf_config.initializer_range,
        "normalization_type": "RMS",
        "rotary_base": _rope_theta(hf_config),
        "positional_embedding_type": "rotary",
        "use_attn_scale": True,
        "attn_scale": float(hf_config.query_pre_attn_scalar) ** 0.5,
        "n_key_value_heads": hf_config.num_key_value_heads,
        "window_size": hf_config.sliding_window,
        "use_local_attn": True,
        "attn_types": ["local" if kind == "sliding_attention" else "global" for kind in hf_config.layer_types],
        "attn_scores_soft_cap": hf_config.attn_logit_softcapping,
        "output_logits_soft_cap": hf_config.final_logit_softcapping,
        "gated_mlp": True,
        "final_rms": True,
        "use_normalization_before_and_after": True,
        "original_architecture": "Gemma2ForCausalLM",
    }


def _rope_theta(hf_config) -> float:
    from transformer_lens.loading_from_pretrained import _get_rope_theta

    return float(_get_rope_theta(hf_config))

