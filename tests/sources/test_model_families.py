"""Hook points, splicing and masking on the model families SAEs are published for.

Each family is a tiny random-weight model (`family_models.py`: 3 layers, d_model 64, a byte-level
tokenizer; no hub, a fraction of a second per model). HF's `hidden_states` (output_hidden_states=True)
are the reference: entry L is the input of block L, entry L+1 its output, except the last entry,
which has the final norm applied (TransformerLens's `blocks.{last}.hook_resid_post` is before that
norm, and so is ours). `test_transformer_lens.py` checks every hook kind against TransformerLens.
"""

from __future__ import annotations

import json

import pytest
import torch
from helpers.family_models import D_MODEL, FAMILIES, N_LAYERS, TOKENIZER, tiny_model
from helpers.family_models import random_tokens as _tokens

from saebench_scaffold.evals.base import EvalContext
from saebench_scaffold.evals.core.task import CoreTask
from saebench_scaffold.saes import SAEConfig, make_sae
from saebench_scaffold.settings import UserError
from saebench_scaffold.sources.model import LanguageModel, ModelSpec, load_model

HOOKS = [f"blocks.{layer}.hook_{kind}" for layer in range(N_LAYERS) for kind in ("resid_pre", "resid_post")]


@pytest.fixture(scope="module", params=list(FAMILIES))
def family_lm(request) -> LanguageModel:
    return tiny_model(request.param)


def _reference(lm, tokens):
    with torch.no_grad():
        out = lm.hf(input_ids=tokens, output_hidden_states=True, use_cache=False)
    return out.hidden_states, out.logits


def test_hook_activations_match_hf_hidden_states(family_lm):
    lm, tokens = family_lm, _tokens()
    hidden, _ = _reference(lm, tokens)
    assert len(hidden) == N_LAYERS + 1
    for layer in range(N_LAYERS):
        pre = lm.hook_activations(tokens, f"blocks.{layer}.hook_resid_pre")
        post = lm.hook_activations(tokens, f"blocks.{layer}.hook_resid_post")
        assert pre.dtype == torch.float32
        torch.testing.assert_close(pre, hidden[layer], rtol=0, atol=1e-6)
        if layer < N_LAYERS - 1:
            torch.testing.assert_close(post, hidden[layer + 1], rtol=0, atol=1e-6)
        else:  # the last entry is normed; ours is the block output the norm is applied to
            assert not torch.allclose(post, hidden[-1], atol=1e-3)
            with torch.no_grad():
                torch.testing.assert_close(lm.final_norm(post), hidden[-1], rtol=0, atol=1e-5)


@pytest.mark.parametrize("hook", HOOKS)
def test_logits_from_unedited_hook_equal_full_forward(family_lm, hook):
    lm, tokens = family_lm, _tokens()
    _, logits = _reference(lm, tokens)
    spliced = lm.logits_from_hook(tokens, hook, lm.hook_activations(tokens, hook))
    torch.testing.assert_close(spliced, logits, rtol=0, atol=1e-5)
    # `positions`: only those rows are unembedded (and soft-capped), the same values
    rows = torch.tensor([2, 5, tokens.shape[1] - 1])
    torch.testing.assert_close(lm.logits_from_hook(tokens, hook, lm.hook_activations(tokens, hook), positions=rows),
                               logits[:, rows], rtol=0, atol=1e-5)


def test_logits_from_edited_hook_equal_forward_with_the_same_edit(family_lm):
    """Skipping the early layers must not change what the later ones see (positions, masks, rotary)."""
    lm, tokens, hook = family_lm, _tokens(), "blocks.1.hook_resid_post"
    acts = lm.hook_activations(tokens, hook)
    edited = acts.clone()
    edited[:, 5:] += torch.randn(edited[:, 5:].shape, generator=torch.Generator().manual_seed(2))

    def replace(_mod, _inp, out):
        return (edited,) + tuple(out[1:]) if isinstance(out, tuple) else edited

    handle = lm.layers[1].register_forward_hook(replace)
    try:
        _, expected = _reference(lm, tokens)
    finally:
        handle.remove()
    torch.testing.assert_close(lm.logits_from_hook(tokens, hook, edited), expected, rtol=0, atol=1e-5)
    assert not torch.allclose(expected, _reference(lm, tokens)[1], atol=1e-3)


def test_special_tokens_and_position_zero_are_masked(family_lm):
    tokens = _tokens()
    tokens[0, 4] = TOKENIZER.eos_token_id
    tokens[1, 7] = TOKENIZER.pad_token_id
    tokens[1, 0] = 50  # position 0 is excluded whatever token sits there
    mask = family_lm.special_mask(tokens)
    expected = torch.zeros_like(mask)
    expected[:, 0] = True
    expected[0, 4] = expected[1, 7] = True
    assert torch.equal(mask, expected)


def test_hook_past_the_last_layer_is_refused(family_lm):
    with pytest.raises(UserError, match="past the last layer"):
        family_lm.hook_activations(_tokens(), f"blocks.{N_LAYERS}.hook_resid_pre")


def test_gemma2_resid_post_is_the_block_output_after_its_post_feedforward_norm():
    """Gemma-2 normalises each branch's output before adding it (post_attention_layernorm,
    post_feedforward_layernorm). TransformerLens's hook_resid_post, which Gemma Scope SAEs read,
    is the block output: resid_mid + post_feedforward_layernorm(mlp(pre_feedforward_layernorm(resid_mid))).
    It is neither the bare post-norm output nor the pre-norm MLP sum: pin that we read exactly it."""
    lm, tokens = tiny_model("gemma2"), _tokens()
    block = lm.layers[1]
    seen = {}
    hooks = [block.pre_feedforward_layernorm.register_forward_hook(lambda m, i, o: seen.__setitem__("resid_mid", i[0])),
             block.post_feedforward_layernorm.register_forward_hook(lambda m, i, o: seen.update(mlp_out=i[0], normed=o))]
    try:
        _reference(lm, tokens)
    finally:
        for h in hooks:
            h.remove()
    post = lm.hook_activations(tokens, "blocks.1.hook_resid_post")
    torch.testing.assert_close(post, seen["resid_mid"] + seen["normed"], rtol=0, atol=1e-6)
    assert not torch.allclose(post, seen["resid_mid"] + seen["mlp_out"], atol=1e-3)
    # Gemma scales the embeddings by sqrt(d_model): resid_pre 0 includes that factor.
    raw = lm.hf.model.embed_tokens.weight[tokens]
    torch.testing.assert_close(lm.hook_activations(tokens, "blocks.0.hook_resid_pre"), raw * D_MODEL ** 0.5)


# ---- a whole `core` run per family --------------------------------------------------------------

class _SmallCorpusContext(EvalContext):
    """The real offsets (20,000 / 50,000 contexts) need the full Wikipedia sample; a tiny corpus keeps
    their order and disjointness at 1/1000 of the distance."""

    def text_cache(self, n_contexts, offset=20_000, *args, **kwargs):
        return super().text_cache(n_contexts, offset // 1000, *args, **kwargs)


@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    (root / "text").mkdir()
    g = torch.Generator().manual_seed(0)
    words = ["the", "model", "sparse", "latent", "river", "of", "a", "stone", "blue", "seven", "and", "runs"]
    with open(root / "text" / "wikipedia_en_sample.jsonl", "w") as f:
        for _ in range(40):  # ~40 x 700 bytes: about 200 byte-level contexts of 128
            idx = torch.randint(len(words), (120,), generator=g).tolist()
            f.write(json.dumps({"text": " ".join(words[i] for i in idx) + "."}) + "\n")
    return root


def test_core_runs_on_each_family(family_lm, tiny_corpus, tmp_path):
    lm = family_lm
    ctx = _SmallCorpusContext(lm.spec, "blocks.1.hook_resid_post", str(tiny_corpus), str(tmp_path / "cache"), progress=False)
    ctx.lm = lm
    sae = make_sae(SAEConfig("batchtopk", D_MODEL, 128, k=4, scaffold_rank=2, hook_name=ctx.hook))
    task = CoreTask()
    out = task.run(ctx, sae, task.make_config({"n_density_tokens": 1270, "n_ce_tokens": 254}))
    assert out.token_counts["density_tokens"] == 1270 and out.token_counts["ce_tokens"] > 200
    performance = out.metrics["model_performance_preservation"]
    for value in (out.metrics["reconstruction_quality"]["fvu"], performance["ce_loss_without_sae"], performance["ce_loss_score"]):
        assert torch.isfinite(torch.tensor(value))


# ---- model dtype ----------------------------------------------------------------------------------

def test_dtype_loads_the_weights_in_it_and_names_the_source(tmp_path):
    from saebench_scaffold.activations.cache import CacheSpec

    folder = tmp_path / "tiny-llama"
    tiny_model("llama").hf.save_pretrained(folder)
    TOKENIZER.save_pretrained(folder)
    f32 = load_model(ModelSpec(name=str(folder), device="cpu"))
    bf16 = load_model(ModelSpec(name=str(folder), dtype="bfloat16", device="cpu"))
    assert next(bf16.hf.parameters()).dtype == torch.bfloat16
    # float32 keeps the source id (and so every existing activation-cache key); other dtypes get their own.
    assert f32.source_id == str(folder) and bf16.source_id == f"{folder}@bfloat16"
    key = lambda lm: CacheSpec(lm.source_id, "blocks.1.hook_resid_post", "wikipedia", "x", 128, 64).key
    assert key(f32) == CacheSpec(str(folder), "blocks.1.hook_resid_post", "wikipedia", "x", 128, 64).key != key(bf16)
    tokens, hook = _tokens(), "blocks.1.hook_resid_post"
    acts = bf16.hook_activations(tokens, hook)
    assert acts.dtype == torch.float32  # what SAEs are handed
    torch.testing.assert_close(acts, f32.hook_activations(tokens, hook), rtol=0.05, atol=0.05)
    spliced = bf16.logits_from_hook(tokens, hook, acts)
    assert spliced.dtype == torch.float32
    torch.testing.assert_close(spliced, bf16.logits(tokens), rtol=0, atol=1e-6)


def test_unknown_dtype_is_refused(tmp_path):
    from typer.testing import CliRunner

    from saebench_scaffold.cli import app

    with pytest.raises(UserError, match="unknown model dtype 'float64'"):
        ModelSpec(dtype="float64")
    sae = make_sae(SAEConfig("topk", 576, 32, k=2)).save(tmp_path / "ckpt")
    result = CliRunner().invoke(app, ["eval", str(sae), "--dtype", "float64", "--output-dir", str(tmp_path / "out")])
    assert result.exit_code == 2 and result.output.strip().splitlines()[-1].startswith("error: unknown model dtype")


@pytest.mark.slow
def test_embedded_model_in_bfloat16_tracks_float32(lm, hook):
    from saebench_scaffold.sources.model import _GGUF_FILE, DEFAULT_MODEL

    assert lm.source_id == f"{DEFAULT_MODEL}:{_GGUF_FILE}"  # the float32 cache keys everyone has built
    bf16 = load_model(ModelSpec(dtype="bfloat16"))
    assert bf16.source_id == f"{DEFAULT_MODEL}:{_GGUF_FILE}@bfloat16"
    tokens = torch.tensor([[lm.bos_token_id] + lm.tokenizer("The river runs past seven blue stones.").input_ids])
    a32, a16 = lm.hook_activations(tokens, hook)[:, 1:], bf16.hook_activations(tokens, hook)[:, 1:]
    rel = ((a16 - a32).norm(dim=-1) / a32.norm(dim=-1)).max().item()
    assert rel < 0.1, rel
