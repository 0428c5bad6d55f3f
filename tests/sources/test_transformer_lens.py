"""Our hook points against TransformerLens itself, the model SAELens SAEs are trained and scored on.

For each tiny family (`family_models.py`) and the embedded SmolLM2, `hooked_transformer(lm)` builds
TL's own re-implementation (`HookedTransformer`, unprocessed) from the same weights, offline. At
every hook kind we accept, `lm.hook_activations` must equal TL's `run_with_cache`, and
`lm.logits_from_hook` with an edited activation must equal TL's `run_with_hooks` with the same edit.

Tolerance: TL and HF compute the same float32 arithmetic in different orders (einsum against
linear layers, rotary tables built differently), so they agree to rounding: measured per-position
relative errors are at most 4e-6 here (up to 30 layers deep). `RTOL` = 1e-4 bounds that with margin,
while a real mismatch (a hook one norm too early, a head out of place) is of order 1. The error is
taken per position, relative to that position's vector norm: SmolLM2's position 0 has residual norm
~25,000 against ~200 elsewhere, so one tolerance scaled to the whole tensor would be blind at the
ordinary positions, and an element-wise relative one trips on entries near zero.
"""

from __future__ import annotations

import pytest
import torch
from family_models import DECODER, FAMILIES, N_HEADS, N_LAYERS, random_tokens, tiny_model
from transformers import GPTNeoXConfig, GraniteConfig

from saebench_scaffold.settings import UserError
from saebench_scaffold.sources.hooked import hooked_transformer
from saebench_scaffold.sources.hooks import parse_hook

RTOL, FLOOR = 1e-4, 1e-5  # FLOOR: absolute slack on the norm, for vectors that are (nearly) zero
KINDS = ("hook_resid_pre", "hook_resid_mid", "hook_attn_out", "hook_mlp_out", "hook_resid_post", "attn.hook_z")


def assert_matches(ours: torch.Tensor, ref: torch.Tensor, what: str) -> None:
    """Equal up to float32 rounding, position by position (see the module docstring)."""
    assert ours.shape == ref.shape, f"{what}: shape {tuple(ours.shape)} != {tuple(ref.shape)}"
    err, scale = (ours - ref).norm(dim=-1), ref.norm(dim=-1)
    worst = (err / scale.clamp_min(FLOOR)).max().item()
    assert bool((err <= RTOL * scale + FLOOR).all()), f"{what}: per-position relative error up to {worst:.1e}"


def has_resid_mid(lm) -> bool:
    config = lm.hf.config
    return not (config.model_type == "gpt_neox" and config.use_parallel_residual)


def hooks_of(lm, layers) -> list[str]:
    return [f"blocks.{layer}.{kind}" for layer in layers for kind in KINDS
            if kind != "hook_resid_mid" or has_resid_mid(lm)]


def tl_value(cache, hook: str, head: int | None = None) -> torch.Tensor:
    """TL's activation at `hook` in our layout: hook_z [batch, pos, n_heads, d_head] flattened head-major
    (as SAELens feeds hook_z SAEs), or one head of it."""
    value = cache[hook]
    if hook.endswith("hook_z"):
        return value.flatten(-2) if head is None else value[:, :, head]
    return value


def edited(acts: torch.Tensor, seed: int = 3) -> torch.Tensor:
    """A reconstruction-like edit: shrunk, plus noise at the activation's own scale."""
    noise = torch.randn(acts.shape, generator=torch.Generator().manual_seed(seed))
    return 0.5 * acts + 0.3 * acts.std() * noise


def tl_splice(name: str, acts: torch.Tensor, head: int | None = None):
    """A TL forward hook that puts `acts` (our layout) in place of the activation at hook `name`."""
    def put(value, hook):  # TL calls it with the HookPoint as `hook`
        if head is not None:
            value = value.clone()
            value[:, :, head] = acts
            return value
        return acts.reshape(value.shape)  # hook_z: back to [batch, pos, n_heads, d_head]

    return (name, put)


def check_hooks(lm, tl, tokens, layers, heads) -> None:
    with torch.no_grad():
        logits, cache = tl.run_with_cache(tokens)
    assert_matches(lm.logits(tokens), logits, "logits")
    for hook in hooks_of(lm, layers):
        ours = lm.hook_activations(tokens, hook)
        assert ours.dtype == torch.float32 and ours.shape[-1] == lm.hook_width(hook)
        assert_matches(ours, tl_value(cache, hook), hook)
    for layer in layers:
        hook = f"blocks.{layer}.attn.hook_z"
        for head in heads:
            ours = lm.hook_activations(tokens, hook, head_index=head)
            assert ours.shape[-1] == lm.hook_width(hook, head_index=head)
            assert_matches(ours, tl_value(cache, hook, head), f"{hook} head {head}")


def check_splices(lm, tl, tokens, layers, head) -> None:
    clean = lm.logits(tokens)  # equal to TL's (check_hooks)
    with torch.no_grad():
        cases = [(hook, None) for hook in hooks_of(lm, layers)] + [(f"blocks.{layer}.attn.hook_z", head) for layer in layers]
        for hook, head_index in cases:
            what = hook if head_index is None else f"{hook} head {head_index}"
            acts = lm.hook_activations(tokens, hook, head_index=head_index)
            new = edited(acts)
            theirs = tl.run_with_hooks(tokens, fwd_hooks=[tl_splice(hook, new, head_index)])
            assert not torch.allclose(theirs, clean, atol=1e-3), f"{what}: the edit should change the logits"
            assert_matches(lm.logits_from_hook(tokens, hook, new, head_index=head_index), theirs, f"spliced {what}")
            # Splicing back what was read changes nothing (the skipped layers, the zero trick of resid_mid).
            torch.testing.assert_close(lm.logits_from_hook(tokens, hook, acts, head_index=head_index), clean,
                                       rtol=0, atol=1e-5)


# ---- the tiny families ----------------------------------------------------------------------------

@pytest.fixture(scope="module", params=list(FAMILIES))
def family_pair(request):
    lm = tiny_model(request.param)
    return lm, hooked_transformer(lm)


def test_every_hook_and_the_logits_equal_transformer_lens(family_pair):
    lm, tl = family_pair
    check_hooks(lm, tl, random_tokens(), range(N_LAYERS), range(N_HEADS))


def test_spliced_forward_equals_transformer_lens_run_with_hooks(family_pair):
    lm, tl = family_pair
    check_splices(lm, tl, random_tokens(), (0, N_LAYERS - 1), head=N_HEADS - 1)


def test_sequential_neox_has_resid_mid_and_parallel_neox_refuses_it():
    """Pythia's blocks are parallel (no resid_mid, in TL either); NeoX configs with
    use_parallel_residual=False are sequential and have one."""
    parallel = tiny_model("gpt_neox")
    with pytest.raises(UserError, match="does not exist in gpt_neox models with a parallel residual") as err:
        parallel.hook_activations(random_tokens(), "blocks.1.hook_resid_mid")
    assert "\n" not in str(err.value)
    sequential = tiny_model("gpt_neox", GPTNeoXConfig(use_parallel_residual=False, **DECODER))
    assert has_resid_mid(sequential)
    tl = hooked_transformer(sequential)
    check_hooks(sequential, tl, random_tokens(), (1,), ())
    check_splices(sequential, tl, random_tokens(), (1,), head=0)


def test_processing_flags_reach_transformer_lens():
    """SAELens's model_from_pretrained_kwargs are TL's processing: the processed GPT-2 computes the
    same distribution, with every write to the residual stream centred (so is the stream)."""
    lm, tokens = tiny_model("gpt2"), random_tokens()
    tl = hooked_transformer(lm, fold_ln=True, center_writing_weights=True, center_unembed=True, fold_value_biases=True)
    with torch.no_grad():
        logits, cache = tl.run_with_cache(tokens)
    assert_matches(torch.log_softmax(logits, -1), torch.log_softmax(lm.logits(tokens), -1), "processed log-probs")
    assert cache["blocks.1.hook_resid_post"].mean(-1).abs().max() < 1e-5
    assert lm.hook_activations(tokens, "blocks.1.hook_resid_post").mean(-1).abs().max() > 1e-3
    # Gemma-2 soft-caps its logits, which is not shift-invariant: TL drops center_unembed there, and so do we.
    gemma = tiny_model("gemma2")
    with pytest.warns(UserWarning, match="center_unembed dropped for Gemma2ForCausalLM"):
        gemma_tl = hooked_transformer(gemma, center_unembed=True)
    with torch.no_grad():
        assert_matches(gemma_tl(tokens), gemma.logits(tokens), "gemma2 logits")


def test_reading_any_hook_stops_inside_its_block():
    """The speed rule of hook_activations holds for every kind: no block after the hook's runs, and
    `last_layer_needed` (what caches and early stops count on) names the block the hook is in."""
    lm, ran = tiny_model("llama"), []
    handles = [block.register_forward_hook(lambda _m, _i, _o, index=i: ran.append(index)) for i, block in enumerate(lm.layers)]
    try:
        for hook in hooks_of(lm, (1,)):
            ran.clear()
            lm.hook_activations(random_tokens(), hook)
            expected = [0, 1] if hook.endswith("resid_post") else [0]  # resid_post is block 1's output
            assert ran == expected, f"{hook}: blocks run to completion: {ran}"
            assert parse_hook(hook).last_layer_needed == (0 if hook.endswith("resid_pre") else 1)
    finally:
        for handle in handles:
            handle.remove()


# ---- refusals --------------------------------------------------------------------------------------

def test_unknown_processing_kwarg_is_refused_in_one_line():
    with pytest.raises(UserError, match="unsupported TransformerLens model_from_pretrained_kwargs n_devices, zero; "
                                        "supported: fold_ln") as err:
        hooked_transformer(tiny_model("llama"), n_devices=2, zero=True, fold_ln=False)
    assert "\n" not in str(err.value)


def test_family_transformer_lens_cannot_build_is_refused_in_one_line():
    """Granite has Llama's layout, but neither TL's HookedTransformer nor our hook table knows it:
    its residual stream is readable, TL and the branch hooks are refused, each in one line."""
    granite = tiny_model("granite", GraniteConfig(num_key_value_heads=2, **DECODER))
    with pytest.raises(UserError, match="TransformerLens cannot build GraniteForCausalLM \\(tiny-granite\\) offline") as err:
        hooked_transformer(granite)
    assert "\n" not in str(err.value)
    assert granite.hook_activations(random_tokens(), "blocks.1.hook_resid_post").shape == (2, 12, DECODER["hidden_size"])
    with pytest.raises(UserError, match="hook blocks.1.hook_attn_out is supported on llama, .* models, not granite") as err:
        granite.hook_activations(random_tokens(), "blocks.1.hook_attn_out")
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("hook", ["blocks.1.hook_mlp_in", "blocks.1.attn.hook_q", "blocks.1.hook_z",
                                  "blocks.1.attn.hook_pattern", "blocks.1.ln2.hook_normalized", "hook_embed"])
def test_unsupported_hook_names_are_refused_with_the_list(hook):
    with pytest.raises(UserError, match="unsupported hook point .* use one of .*hook_resid_mid.*attn.hook_z") as err:
        parse_hook(hook)
    assert "\n" not in str(err.value)


def test_head_index_outside_hook_z_or_past_the_heads_is_refused():
    lm, tokens = tiny_model("llama"), random_tokens()
    with pytest.raises(UserError, match="applies only to blocks.<layer>.attn.hook_z"):
        lm.hook_activations(tokens, "blocks.1.hook_attn_out", head_index=0)
    with pytest.raises(UserError, match=f"head index {N_HEADS} of blocks.1.attn.hook_z is past the last head"):
        lm.logits_from_hook(tokens, "blocks.1.attn.hook_z", torch.zeros(2, 12, 16), head_index=N_HEADS)
    with pytest.raises(UserError, match="negative"):
        lm.hook_width("blocks.1.attn.hook_z", head_index=-1)


# ---- the embedded SmolLM2-135M ------------------------------------------------------------------

@pytest.fixture(scope="module")
def smollm2_tl(lm):
    return hooked_transformer(lm)


def _smollm2_tokens(lm) -> torch.Tensor:
    return torch.tensor([[lm.bos_token_id] + lm.tokenizer("The river runs past seven blue stones.").input_ids])


@pytest.mark.slow
def test_smollm2_hooks_and_logits_equal_transformer_lens(lm, smollm2_tl):
    check_hooks(lm, smollm2_tl, _smollm2_tokens(lm), (0, 14, lm.n_layers - 1), heads=(0, 8))


@pytest.mark.slow
def test_smollm2_spliced_forward_equals_transformer_lens(lm, smollm2_tl):
    check_splices(lm, smollm2_tl, _smollm2_tokens(lm), (14,), head=3)
