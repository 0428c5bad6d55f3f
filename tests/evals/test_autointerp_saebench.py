"""Our autointerp equals SAEBench 0.6.0's own code (`sae_bench.evals.autointerp.main`, its indexing
utilities) on identical inputs.

SAEBench's `AutoInterp` wants a HookedTransformer, an SAE and the OpenAI client; here it gets the same
tokens (real Wikipedia contexts in the embedded model's tokenizer, with BOS, EOS, line breaks and a
split multi-byte character), the same latent activations (synthetic, bfloat16 as SAEBench collects
them: sparse and dense latents, ties, a dead latent, one with too few activations for importance
sampling), TransformerLens's own `to_str_tokens`, and, for the judge, one deterministic rule on both
sides (`autointerp_fakes.rule_answer`). Compared: the latent draw, every example (tokens, activations, threshold, text with and
without highlights, order), the generation and scoring prompts, answer parsing, per-latent scores
and the aggregate."""

from __future__ import annotations

import asyncio
import os
import random
import sys
import types
from types import SimpleNamespace

import pytest
from helpers.peers import peer_import
import torch

os.environ.setdefault("JAXTYPING_DISABLE", "1")
if "openai" not in sys.modules:  # SAEBench imports the OpenAI client at module level; never called here
    try:
        import openai  # noqa: F401
    except ImportError:
        sys.modules["openai"] = types.SimpleNamespace(OpenAI=None)  # type: ignore[assignment]
sb = peer_import("sae_bench.evals.autointerp.main")
sb_idx = peer_import("sae_bench.sae_bench_utils.indexing_utils")
sb_config = peer_import("sae_bench.evals.autointerp.eval_config")

from helpers.autointerp_fakes import rule_answer  # noqa: E402

from saebench_scaffold.evals.autointerp import examples as ax  # noqa: E402
from saebench_scaffold.evals.autointerp import prompts as ap  # noqa: E402
from saebench_scaffold.evals.autointerp.task import (  # noqa: E402
    AutointerpConfig,
    FailureBreaker,
    alive_latents,
    judge_latent,
    summarize,
)
from saebench_scaffold.sources import data  # noqa: E402

N_CTX, L = 48, 128
SEED = 42
SB_DEAD = 15  # SAEBench's dead_latent_threshold (fires in total_tokens)
DEAD, FEW, TIED16 = 19, 20, 21  # latents of `world` (18 random ones of six densities, then one of ties first)


class TLTokens:
    """What SAEBench's `Example` reads of a HookedTransformer: TransformerLens's own `to_str_tokens`."""

    def __init__(self, tokenizer):
        from transformer_lens import HookedTransformer

        self.tokenizer, self.cfg = tokenizer, SimpleNamespace(default_prepend_bos=True)
        self._to_str = HookedTransformer.to_str_tokens

    def to_str_tokens(self, tokens):
        return self._to_str(self, tokens)


class RuleJudge:
    kind, concurrency = "rule", 1

    def complete(self, messages, max_tokens, form="", n_examples=0):
        return rule_answer(messages)


@pytest.fixture(scope="module")
def world(lm):
    with pytest.MonkeyPatch.context() as mp:  # the embedded Wikipedia sample, as the `offline` fixture gives
        mp.delenv("SAEBENCH_DATA_DIR", raising=False)
        mp.setenv("HF_HUB_OFFLINE", "1")
        contexts = data.token_contexts(lm, "wikipedia", N_CTX)
        tokens = torch.stack([next(contexts) for _ in range(N_CTX)])
    tok = lm.tokenizer
    replacement = next(i for i in range(200, len(tok)) if tok.decode([i]) == "\ufffd")  # one byte of a UTF-8 character
    tokens[3, 40:45] = tok.eos_token_id
    tokens[5, 60] = replacement
    special = lm.special_mask(tokens)
    g = torch.Generator().manual_seed(0)
    lat = []
    for density in (0.002, 0.005, 0.01, 0.03, 0.1, 0.4):
        for _ in range(3):
            fires = torch.rand(N_CTX, L, generator=g) < density
            lat.append(fires * torch.empty(N_CTX, L).exponential_(1.0, generator=g))
    lat.append(((torch.rand(N_CTX, L, generator=g) < 0.05) * (1 + (torch.rand(N_CTX, L, generator=g) < 0.5))).float())  # ties
    lat.append(torch.zeros(N_CTX, L))  # DEAD
    few = torch.zeros(N_CTX, L)  # FEW: 12 separate top activations and one below them, too few to sample 7 from
    few[torch.arange(12), 30] = torch.linspace(5, 6, 12)
    few[20, 50] = 1.0
    lat.append(few)
    tied = torch.zeros(N_CTX, L)  # TIED16: alive, but its 12 top windows leave nothing below their smallest value
    tied[torch.arange(16), 40] = 2.0
    lat.append(tied)
    acts = (torch.stack(lat, dim=-1) * (~special).unsqueeze(-1)).to(torch.bfloat16)
    rate = (acts.float()[~special] > 0).float().mean(0)
    return SimpleNamespace(tokens=tokens, acts=acts, rate=rate, tok=tok, model=TLTokens(tok))


def saebench_autointerp(world, monkeypatch, n_latents: int, **cfg):
    """SAEBench's AutoInterp on our activations, its RNGs seeded as its `run_eval_single_sae` seeds them."""
    sb_cfg = sb_config.AutoInterpEvalConfig(model_name="smollm2-135m", n_latents=n_latents, total_tokens=N_CTX * L, **cfg)
    random.seed(SEED)
    torch.manual_seed(SEED)
    auto = sb.AutoInterp(cfg=sb_cfg, model=world.model, sae=SimpleNamespace(cfg=SimpleNamespace(hook_layer=0, hook_name="h")),
                         tokenized_dataset=world.tokens, sparsity=world.rate.clone(), device="cpu", api_key="")
    monkeypatch.setattr(sb.activation_collection, "collect_sae_activations",
                        lambda *a, selected_latents, **k: world.acts[..., selected_latents])
    return auto


def ours(world, n_latents: int, **cfg):
    """Our latent draw and examples, from the same seed."""
    config = AutointerpConfig(n_latents=n_latents, total_tokens=N_CTX * L, **cfg)
    rng, gen = random.Random(SEED), torch.Generator().manual_seed(SEED)
    alive = alive_latents(world.rate, SB_DEAD / config.total_tokens)  # SAEBench's count at this budget, as a frequency
    latents = alive if len(alive) < n_latents else rng.sample(alive, k=n_latents)
    examples = {lat: ax.latent_examples(lat, world.acts[..., lat].contiguous(), world.tokens, config, gen, rng, world.tok)
                for lat in latents}
    return config, latents, examples, rng


def assert_same_examples(mine: list[ax.Example], theirs) -> None:
    assert len(mine) == len(theirs) > 0
    for a, b in zip(mine, theirs):
        assert a.str_toks == b.str_toks and a.acts == b.acts and a.act_threshold == b.act_threshold
        assert a.active_toks == b.toks_are_active and a.is_active == b.is_active
        assert a.to_str(mark_toks=True) == b.to_str(mark_toks=True) and a.to_str() == b.to_str()


# ---- indexing ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("buffer", [1, 5, 10])
def test_top_k_windows_and_importance_sampling_equal_saebench(dtype, buffer):
    g = torch.Generator().manual_seed(buffer)
    x = (torch.rand(20, 64, generator=g) < 0.1) * torch.randn(20, 64, generator=g).abs().round(decimals=1)
    x = x.to(dtype)  # rounded: many ties
    for no_overlap in (True, False):
        mine = ax.top_indices(x, 12, buffer, no_overlap)
        assert torch.equal(mine, sb_idx.get_k_largest_indices(x, 12, buffer, no_overlap))
        assert torch.equal(ax.windows(x, mine, buffer), sb_idx.index_with_buffer(x, mine, buffer))
    near = torch.zeros(3, 64, dtype=dtype)  # picks exactly `buffer` apart in one context: SAEBench passes over the second
    near[1, 20], near[1, 20 + buffer], near[1, 21 + buffer], near[2, 30] = 4, 3, 2, 1
    assert torch.equal(ax.top_indices(near, 3, buffer, True), sb_idx.get_k_largest_indices(near, 3, buffer, True))
    for seed in range(5):
        torch.manual_seed(seed)
        theirs = sb_idx.get_iw_sample_indices(x, 7, buffer)
        assert torch.equal(ax.importance_sampled_indices(x, 7, buffer, torch.Generator().manual_seed(seed)), theirs)


# ---- latents, examples, prompts -----------------------------------------------------------------------

def test_alive_rule_equals_saebench_at_the_threshold(world):
    rate = torch.tensor([0.0, 5 / 2048, 5 / 2048 + 1e-6, 0.5])  # 5/2048 × 6144 tokens = 15 fires exactly: dead
    sb_cfg = sb_config.AutoInterpEvalConfig(model_name="smollm2-135m", n_latents=10, total_tokens=6144)
    auto = sb.AutoInterp(cfg=sb_cfg, model=world.model, sae=None, tokenized_dataset=world.tokens, sparsity=rate.clone(),
                         device="cpu", api_key="")
    assert auto.latents == alive_latents(rate, sb_cfg.dead_latent_threshold / 6144) == [2, 3]
    # our default is SAEBench's rule at SAEBench's budget: its count over its total_tokens
    default = sb_config.AutoInterpEvalConfig(model_name="smollm2-135m")
    assert AutointerpConfig().min_firing_rate == default.dead_latent_threshold / default.total_tokens


@pytest.mark.parametrize("n_latents", [8, 100])  # a sample of the alive latents; all of them (fewer alive than asked)
def test_latents_and_examples_equal_saebench_gather_data(world, monkeypatch, n_latents):
    auto = saebench_autointerp(world, monkeypatch, n_latents)
    _, latents, examples, _ = ours(world, n_latents)
    assert auto.latents == latents
    generation, scoring = auto.gather_data()
    assert set(generation) == {lat for lat, ex in examples.items() if ex is not None}
    if n_latents == 100:  # every alive latent: the dead and the too-rare one are not, the tied one has no examples
        assert DEAD not in latents and FEW not in latents and TIED16 in latents and len(latents) > 15
        assert examples[TIED16] is None
    for lat in generation:
        assert_same_examples(examples[lat].generation, generation[lat])
        assert_same_examples(examples[lat].scoring, scoring[lat])
    texts = "".join(ex.to_str(mark_toks=True) for e in examples.values() if e for ex in e.generation + e.scoring)
    assert "<<" in texts and "↵" in texts  # highlights and line breaks were compared, not just plain text


def test_few_activations_latent_samples_like_saebench(world, monkeypatch):
    """13 activations: 12 top windows, one position to sample 7 from; torch's sampler goes on to zero
    positions on both sides, and the latent is kept."""
    few = FEW
    config = AutointerpConfig(total_tokens=N_CTX * L)
    auto = saebench_autointerp(world, monkeypatch, None, override_latents=[few])
    random.seed(SEED)
    torch.manual_seed(SEED)
    generation, scoring = auto.gather_data()
    ex = ax.latent_examples(few, world.acts[..., few].contiguous(), world.tokens, config,
                            torch.Generator().manual_seed(SEED), random.Random(SEED), world.tok)
    assert ex.n_iw_candidates == 1
    assert_same_examples(ex.generation, generation[few])
    assert_same_examples(ex.scoring, scoring[few])


@pytest.mark.parametrize("use_demos", [True, False])
def test_generation_and_scoring_prompts_equal_saebench(world, monkeypatch, use_demos):
    auto = saebench_autointerp(world, monkeypatch, 8, use_demos_in_explanation=use_demos)
    config, _, examples, _ = ours(world, 8, use_demos_in_explanation=use_demos)
    generation, scoring = auto.gather_data()
    for i, lat in enumerate(generation):
        assert ap.generation_messages(examples[lat].generation, use_demos) == auto.get_generation_prompts(generation[lat])
        explanation = f"the token 'x{i}' in lists"
        random.seed(i)
        theirs = auto.get_scoring_prompts(explanation, scoring[lat])
        answer = ap.example_answer(random.Random(i), config.n_ex_for_scoring, config.n_correct_for_scoring)
        assert ap.scoring_messages(explanation, examples[lat].scoring, config.n_ex_for_scoring, answer) == theirs
    assert config.max_tokens_in_prediction == auto.cfg.max_tokens_in_prediction


ANSWERS = ["This neuron activates on the word 'knows' in rhetorical questions.", "activates on numbers. activates on dates.",
           "The neuron fires on verbs", "", "1, 2, 3", "1,2 and 5.", "None", "None.", " 4 , 5 ", "3 and 7", "1, two",
           "I'm sorry, I can't help with that.", "12", ",,3", "1 2", "0", "2and3", "4 AND 5", "None, 3"]


def test_answer_parsing_and_score_equal_saebench(world, monkeypatch):
    auto = saebench_autointerp(world, monkeypatch, 8)
    _, scoring = auto.gather_data()
    _, _, examples, _ = ours(world, 8)
    for text in ANSWERS:
        assert ap.parse_explanation(text) == auto.parse_explanation(text)
        assert ap.parse_predictions(text) == auto.parse_predictions(text), text
    lat = next(iter(scoring))
    for predictions in ([], [1, 2, 3], list(range(1, 15)), [2, 99], [5, 5]):
        assert ap.score_predictions(predictions, examples[lat].scoring) == auto.score_predictions(predictions, scoring[lat])


def test_whole_run_with_one_judge_equals_saebench(world, monkeypatch):
    """SAEBench's `AutoInterp.run` (gather, both phases, parsing, scoring) with its API call answered by
    the rule judge, against ours with the same judge: every latent's explanation, predictions, correct
    examples and score, then SAEBench's aggregate (torch mean and std over the latents)."""
    auto = saebench_autointerp(world, monkeypatch, 10)
    monkeypatch.setattr(auto, "get_api_response", lambda messages, max_tokens, n_completions=1: ([rule_answer(messages)], ""))
    theirs = asyncio.run(auto.run())
    config, _, examples, rng = ours(world, 10)
    breaker = FailureBreaker(3)
    rows = [judge_latent(RuleJudge(), ex, ap.example_answer(rng, 14, 4), config, breaker)
            for ex in examples.values() if ex is not None]
    assert sorted(theirs) == sorted(r["latent"] for r in rows) and len(rows) >= 8
    for r in rows:
        t = theirs[r["latent"]]
        assert (r["explanation"], r["predictions"], r["correct_seqs"], r["score"]) == \
               (t["explanation"], t["predictions"], t["correct seqs"], t["score"])
    scores = torch.tensor([t["score"] for t in theirs.values()])
    mine = summarize(rows)
    assert mine["autointerp_score"] == pytest.approx(scores.mean().item(), abs=1e-6)
    assert mine["autointerp_std_dev"] == pytest.approx(scores.std().item(), abs=1e-6)
    assert 0 < mine["autointerp_std_dev"] and len({r["score"] for r in rows}) > 1  # scores differ: a real comparison
