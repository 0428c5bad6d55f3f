"""SAEs trained on a TransformerLens-processed model get that model's activations: a SAELens config's
`model_from_pretrained_kwargs` is read, `center_writing_weights` is reproduced exactly (checked
against TransformerLens's own processed model), and what cannot be honoured is refused in one line."""

from __future__ import annotations

import json
import warnings

import pytest
import torch
from helpers.family_models import D_MODEL, TOKENIZER, tiny_model
from safetensors.torch import save_file

from saebench_scaffold.evals.base import EvalContext
from saebench_scaffold.evals.ablation.ce import masked_ce
from saebench_scaffold.evals.core.task import CoreTask
from saebench_scaffold.execution.checkpoints import LoadedCheckpoint
from saebench_scaffold.execution.plan import trained_processing
from saebench_scaffold.saes import own_hook
from saebench_scaffold.saes import load_sae
from saebench_scaffold.settings import UserError
from saebench_scaffold.sources.hooked import hooked_transformer
from saebench_scaffold.sources.hooks import HookPoint, as_hook_point
from saebench_scaffold.sources.model import ModelSpec, load_model
from saebench_scaffold.sources.processing import Processing, ProcessedModel, processed

HOOK = "blocks.1.hook_resid_post"
CENTRED = {"center_writing_weights": True}


def _tokens(n=2, ctx=16):
    g = torch.Generator().manual_seed(3)
    t = torch.randint(3, 259, (n, ctx), generator=g)
    t[:, 0] = TOKENIZER.bos_token_id
    return t


def _saelens_folder(path, kwargs: dict | None, d_sae=96, **meta):
    """A SAELens-format standard SAE on the tiny GPT-2's layer-1 residual stream."""
    g = torch.Generator().manual_seed(0)
    w = torch.randn(d_sae, D_MODEL, generator=g)
    w /= w.norm(dim=1, keepdim=True)
    path.mkdir(parents=True)
    save_file({"W_enc": w.T.contiguous(), "b_enc": torch.full((d_sae,), -0.1), "W_dec": w.contiguous(),
               "b_dec": torch.zeros(D_MODEL)}, str(path / "sae_weights.safetensors"))
    metadata = {"model_name": "tiny-gpt2", "hook_name": HOOK, **meta}
    if kwargs is not None:
        metadata["model_from_pretrained_kwargs"] = kwargs
    (path / "cfg.json").write_text(json.dumps({"architecture": "standard", "d_in": D_MODEL, "d_sae": d_sae,
                                               "apply_b_dec_to_input": True, "metadata": metadata}))
    return path


def _loaded(path) -> LoadedCheckpoint:
    return LoadedCheckpoint(path.name, str(path), load_sae(path), "saelens", "x")


@pytest.mark.parametrize("hook", ["blocks.0.hook_resid_pre", "blocks.1.hook_resid_mid", "blocks.1.hook_attn_out",
                                  "blocks.1.hook_mlp_out", "blocks.2.hook_resid_post"])
def test_centred_activations_equal_transformer_lens_processed_model(hook):
    lm, tokens = tiny_model("gpt2"), _tokens()
    ours = processed(lm, Processing.from_kwargs(CENTRED, "sae"), hook)
    assert isinstance(ours, ProcessedModel) and ours.source_id == f"{lm.source_id}+center_writing_weights"
    tl = hooked_transformer(lm, center_writing_weights=True)
    _, cache = tl.run_with_cache(tokens)
    reference = cache[hook]
    torch.testing.assert_close(ours.hook_activations(tokens, hook), reference, rtol=1e-5, atol=1e-5)
    raw = lm.hook_activations(tokens, hook)  # the raw activations differ from them by exactly their mean
    assert not torch.allclose(raw, reference, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(raw - reference, raw.mean(-1, keepdim=True).expand_as(raw), rtol=1e-4, atol=1e-5)


def test_spliced_forward_equals_the_processed_model_with_the_same_edit():
    """An SAE's output is spliced into the raw model; the processed model, edited the same way at the
    same hook, gives the same next-token distribution (every LayerNorm removes the mean)."""
    lm, tokens = tiny_model("gpt2"), _tokens()
    ours = processed(lm, Processing.from_kwargs(CENTRED, "sae"), HOOK)
    edited = ours.hook_activations(tokens, HOOK) * 0.5
    tl = hooked_transformer(lm, center_writing_weights=True)
    reference = tl.run_with_hooks(tokens, fwd_hooks=[(HOOK, lambda act, hook: edited)])
    torch.testing.assert_close(torch.log_softmax(ours.logits_from_hook(tokens, HOOK, edited), -1),
                               torch.log_softmax(reference, -1), rtol=1e-4, atol=1e-4)


def test_core_on_a_centred_saelens_sae_equals_transformer_lens_processed_activations(tmp_path):
    """`core` on a SAELens SAE whose config asks for center_writing_weights, on a tiny GPT-2: FVU, L0
    and CE with the SAE spliced in equal the figures computed on TransformerLens's processed model,
    and differ from the figures on raw activations."""
    folder = tmp_path / "tiny-gpt2"
    tiny_model("gpt2").hf.save_pretrained(folder)
    TOKENIZER.save_pretrained(folder)
    corpus = tmp_path / "data" / "text"
    corpus.mkdir(parents=True)
    g = torch.Generator().manual_seed(0)
    words = ["the", "model", "sparse", "latent", "river", "of", "a", "stone", "blue", "seven", "and", "runs"]
    with open(corpus / "wikipedia_en_sample.jsonl", "w") as f:
        for _ in range(40):
            f.write(json.dumps({"text": " ".join(words[i] for i in torch.randint(12, (120,), generator=g).tolist()) + "."}) + "\n")
    ckpt = _loaded(_saelens_folder(tmp_path / "sae", CENTRED))
    sae = ckpt.sae

    class SmallCorpus(EvalContext):  # the real offsets at 1/1000 of the distance (as test_model_families)
        def text_cache(self, n_contexts, offset=20_000, *args, **kwargs):
            return super().text_cache(n_contexts, offset // 1000, *args, **kwargs)

    def core(processing):
        ctx = SmallCorpus(ModelSpec(name=str(folder), device="cpu"), HOOK, str(tmp_path / "data"), str(tmp_path / "cache"),
                          progress=False, processing=processing)
        task = CoreTask()
        return ctx, task.run(ctx, sae, task.make_config({"n_density_tokens": 1270, "n_ce_tokens": 254}))

    ctx, out = core(trained_processing([ckpt]))
    _, raw_out = core(None)
    tl = hooked_transformer(load_model(ModelSpec(name=str(folder), device="cpu")), center_writing_weights=True)

    # density / FVU / L0: the first 10 contexts x 127 non-special tokens of the density token set
    _, tokens, special = ctx.text_cache(10).contexts()
    x = tl.run_with_cache(tokens)[1][HOOK][~special]
    with torch.no_grad():
        recon, f = sae(x), sae.encode(x)
    fvu = ((x - recon) ** 2).sum() / ((x - x.mean(0)) ** 2).sum()
    assert out.metrics["reconstruction_quality"]["fvu"] == pytest.approx(fvu.item(), rel=1e-4)
    assert out.metrics["sparsity"]["l0"] == pytest.approx((f > 0).float().sum(-1).mean().item(), rel=1e-4)
    assert abs(raw_out.metrics["reconstruction_quality"]["fvu"] - fvu.item()) > 1e-3

    # CE with the SAE spliced in at non-special positions, in the processed model
    _, tokens, special = ctx.text_cache(2, offset=50_000).contexts()

    def splice(act, hook):
        with torch.no_grad():
            return torch.where(special.unsqueeze(-1), act, sae(act))

    ce, keep = masked_ce(tl.run_with_hooks(tokens, fwd_hooks=[(HOOK, splice)]), tokens, special)
    performance = out.metrics["model_performance_preservation"]
    assert performance["ce_loss_with_sae"] == pytest.approx(ce[keep].mean().item(), rel=1e-4)
    assert performance["ce_loss_with_sae"] != pytest.approx(raw_out.metrics["model_performance_preservation"]["ce_loss_with_sae"], rel=1e-4)


def test_rmsnorm_models_are_left_alone_as_transformer_lens_does():
    lm = tiny_model("llama")
    assert processed(lm, Processing.from_kwargs(CENTRED, "sae"), HOOK) is lm
    tokens = _tokens()
    torch.testing.assert_close(lm.hook_activations(tokens, HOOK),
                               hooked_transformer(lm, center_writing_weights=True).run_with_cache(tokens)[1][HOOK],
                               rtol=1e-4, atol=1e-4)


def test_settings_that_leave_activations_alone_are_recorded_and_the_rest_refused(tmp_path):
    lm = tiny_model("gpt2")
    quiet = Processing.from_kwargs({"fold_ln": True, "center_unembed": True, "dtype": "float32"}, "sae")
    assert processed(lm, quiet, HOOK) is lm
    assert quiet.describe(lm)["model_from_pretrained_kwargs"] == {"fold_ln": True, "center_unembed": True, "dtype": "float32"}
    with pytest.raises(UserError, match=r"\['n_ctx_override'\] cannot be honoured") as err:
        Processing.from_kwargs({"n_ctx_override": 64, "fold_ln": True}, "my_sae")
    assert "\n" not in str(err.value) and str(err.value).startswith("my_sae:")
    with pytest.raises(UserError, match="fold_value_biases changes attn.hook_z"):
        processed(lm, Processing.from_kwargs({"fold_value_biases": True}, "sae"), "blocks.1.attn.hook_z")


def test_a_single_head_hook_z_sae_trained_with_fold_value_biases_is_refused(tmp_path):
    """One head of hook_z (SAELens's `hook_head_index`) is hook_z too: fold_value_biases changed it."""
    lm = tiny_model("gpt2")
    folded = Processing.from_kwargs({"fold_value_biases": True}, "sae")
    for hook in ("blocks.1.attn.hook_z[2]", as_hook_point("blocks.1.attn.hook_z", 2)):
        with pytest.raises(UserError, match=r"fold_value_biases changes attn.hook_z.*blocks.1.attn.hook_z\[2\] cannot be read"):
            processed(lm, folded, hook)
    # as `eval` meets it: the checkpoint's own hook and processing, read from its SAELens config
    ckpt = _loaded(_saelens_folder(tmp_path / "head", {"fold_value_biases": True}, hook_name="blocks.1.attn.hook_z",
                                   hook_head_index=2))
    ctx = EvalContext(ModelSpec(), own_hook(ckpt.sae), processing=trained_processing([ckpt]), given=lm)
    assert ctx.hook == HookPoint(1, "z", 2)
    with pytest.raises(UserError, match="fold_value_biases changes attn.hook_z"):
        ctx.lm  # noqa: B018 - the model view is built (and refused) on first use


def test_plan_reads_saelens_settings_refuses_mixtures_and_says_what_it_did(tmp_path):
    centred = _loaded(_saelens_folder(tmp_path / "a", CENTRED))
    plain = _loaded(_saelens_folder(tmp_path / "b", None))
    assert trained_processing([plain]) is None
    assert trained_processing([centred]).center_writing_weights
    with pytest.raises(UserError, match="a and b were trained on differently processed models"):
        trained_processing([centred, plain])
    odd = _loaded(_saelens_folder(tmp_path / "c", None, context_size=1024, prepend_bos=False))
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        trained_processing([odd])
    said = " ".join(str(w.message) for w in seen)
    assert "trained on 1024-token contexts; scored on 128-token contexts" in said and "without a BOS token" in said


def test_every_model_implements_the_written_contract_explicitly():
    """LanguageModel, the TransformerLens-backed model and the processed view subclass ModelLike; the
    view forwards the contract by name (no __getattr__), so nothing outside it leaks through."""
    from saebench_scaffold.sources.model import LanguageModel
    from saebench_scaffold.sources.model_like import ModelLike
    from saebench_scaffold.sources.transformer_lens_model import TransformerLensModel

    assert all(ModelLike in cls.__mro__ for cls in (LanguageModel, TransformerLensModel, ProcessedModel))
    assert LanguageModel not in TransformerLensModel.__mro__ and "__getattr__" not in vars(ProcessedModel)
    lm = tiny_model("gpt2")
    view = processed(lm, Processing.from_kwargs(CENTRED, "sae"), HOOK)
    assert isinstance(view, ProcessedModel) and isinstance(view, ModelLike)
    tokens = _tokens()
    torch.testing.assert_close(view.logits(tokens), lm.logits(tokens))
    assert torch.equal(view.special_mask(tokens), lm.special_mask(tokens)) and view.hook_width(HOOK) == lm.d_model
    assert not hasattr(view, "hf")  # the HF module is not part of the contract
