"""Our absorption equals SAEBench 0.6.0's own code (`sae_bench.evals.absorption.*`) on identical inputs.

SAEBench's pipeline wants a HookedTransformer and files on disk; here its inner functions get the same
tensors and example sets as ours: the words of the same tokenizer, the prompts from the same seed, the
same activations (the fake spelling world of test_absorption.py, where absorption is planted), the
same SAE. Compared: word selection, prompts and split, the token position, the ground-truth probe,
k-sparse probing (latents chosen, F1 per k, split latents), the probe-positive words, every word's
absorption fraction and full absorption, and the per-letter and headline scores."""

from __future__ import annotations

import os
import random
import statistics
import string
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from helpers.peers import peer_import
import torch

os.environ.setdefault("JAXTYPING_DISABLE", "1")
sb_vocab = peer_import("sae_bench.evals.absorption.vocab")
sb_prompting = peer_import("sae_bench.evals.absorption.prompting")
sb_probing = peer_import("sae_bench.evals.absorption.probing")
sb_ksp = peer_import("sae_bench.evals.absorption.k_sparse_probing")
sb_fa = peer_import("sae_bench.evals.absorption.feature_absorption")
sb_calc = peer_import("sae_bench.evals.absorption.feature_absorption_calculator")
sb_main = peer_import("sae_bench.evals.absorption.main")
sb_config = peer_import("sae_bench.evals.absorption.eval_config")

from test_absorption import SpellingLM, WordTokenizer, fake_words, planted_sae

from saebench_scaffold.evals.absorption import data as ad
from saebench_scaffold.evals.absorption.task import (
    AbsorptionConfig,
    aggregate_letters,
    encode_rows,
    k_sparse_probes,
    score_letters,
    word_absorption,
)
from saebench_scaffold.evals.probes import small_ops

TEMPLATE = sb_config.AbsorptionEvalConfig().prompt_template
SEED = 5


def saebench_prompts(words: list[str], seed: int):
    """SAEBench's train/test prompt sets from the global `random` state `seed`, as its eval builds them."""
    random.seed(seed)
    return sb_probing.create_dataset_probe_training(words, sb_prompting.first_letter_formatter(), 1, TEMPLATE)


# ---- words, prompts, token position -----------------------------------------------------------------

def test_vocab_equals_get_alpha_tokens_on_the_embedded_tokenizer(lm):
    ours = ad.alpha_words(lm.tokenizer)
    theirs = sb_vocab.get_alpha_tokens(lm.tokenizer)
    assert len(ours) == len(theirs) == len(set(ours)) > 40_000 and set(ours) == set(theirs)


def test_vocab_keeps_saebench_sentencepiece_case():
    class Piece:  # converts "▁cat" without its space, as SAEBench's Mistral fix expects
        def get_vocab(self):
            return {"▁cat": 0, "dog": 1, "▁": 2, "x1": 3, "<s>": 4, "▁Über": 5}

        @property
        def vocab(self):
            return self.get_vocab()

        def convert_tokens_to_string(self, tokens):
            return "".join(tokens).replace("▁", "")

    assert ad.alpha_words(Piece()) == sb_vocab.get_alpha_tokens(Piece()) == [" cat", "dog"]


def test_prompts_split_and_answers_equal_saebench(lm):
    vocab = ad.alpha_words(lm.tokenizer)
    words = random.Random(0).sample(vocab, 400)
    train_sb, test_sb = saebench_prompts(words, SEED)
    rng = random.Random(SEED)
    train, test = ad.split_words(words, rng, ad.PromptStyle(TEMPLATE))
    for ours, theirs in ((train, train_sb), (test, test_sb)):
        assert [(w, p) for w, p in ours] == [(sp.word, sp.base) for sp, _ in theirs]
        assert [ad.letter_of(w) for w, _ in ours] == [cls for _, cls in theirs]
    # the absorption prompts continue the same random stream, with the whole vocabulary as examples
    calc = sb_calc.FeatureAbsorptionCalculator(model=None, icl_word_list=vocab, max_icl_examples=10,
                                               base_template=TEMPLATE)
    probe_words = [w for w, _ in test[:30]]
    assert [ad.icl_prompt(w, vocab, rng, ad.PromptStyle(TEMPLATE)) for w in probe_words] == \
        [p.base for p in calc._build_prompts(probe_words)]
    assert all(ad.first_letter_answer(w) == sb_prompting.first_letter(w) for w in vocab)


def test_derived_token_position_is_saebench_default_and_reads_the_word(lm):
    vocab = ad.alpha_words(lm.tokenizer)
    style = ad.PromptStyle(TEMPLATE)
    tail = ad.template_tail_tokens(lm.tokenizer, style, vocab[0])
    assert -1 - len(tail) == sb_config.AbsorptionEvalConfig().prompt_token_pos == -6
    train, _ = ad.split_words(random.Random(1).sample(vocab, 300), random.Random(2), style)
    prompts = [p for _, p in train]
    assert all(ad.ends_with_tail(lm.tokenizer, prompts, tail))
    for word, prompt in train:  # the token at -6 (after BOS) is the word's last token
        ids = [lm.bos_token_id] + lm.tokenizer(prompt, add_special_tokens=False).input_ids
        assert lm.tokenizer.decode(ids[1:len(ids) - 5]).endswith(word)


# ---- probes and absorption on the planted world ---------------------------------------------------------

class SaeBenchView:
    """What SAEBench's functions read of a SAELens SAE, backed by one of ours."""

    def __init__(self, sae):
        self.sae, self.device, self.dtype = sae, torch.device("cpu"), torch.float32
        self.cfg = SimpleNamespace(d_sae=sae.d_sae)
        self.W_enc, self.W_dec = sae.W_enc.detach(), sae.W_dec.detach()

    def encode(self, x):
        return self.sae.encode(x)


class HookedView:
    """What FakeAbsorptionCalculator reads of a HookedTransformer: each prompt's activation at the
    word position is the one our absorption words carry (looked up by the prompt's word)."""

    def __init__(self, acts_by_word: dict[str, torch.Tensor], hook: str):
        self.acts, self.hook, self.tokenizer = acts_by_word, hook, object()
        self.suffix = TEMPLATE.split("{word}")[1]

    def to_tokens(self, prompt):
        return torch.zeros(1, 6, dtype=torch.long)

    def run_with_cache(self, prompts, names_filter):
        out = torch.zeros(len(prompts), 6, next(iter(self.acts.values())).shape[0])
        for i, p in enumerate(prompts):
            out[i, -6] = self.acts[p.rsplit("\n", 1)[1][: -len(self.suffix)]]
        return None, {self.hook: out}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """The fake spelling model's words through our data pipeline: activations, probes, absorption words."""
    from test_absorption import spelling_context

    words = fake_words(per_letter=50)
    ctx = spelling_context(tmp_path_factory.mktemp("absorption_sb"), SpellingLM(words))
    cfg = AbsorptionConfig(k_sparse_probe_batch_size=64)  # ~1,000 train words: SAEBench's ~10 steps per epoch
    return SimpleNamespace(data=ad.letter_data(ctx, cfg), cfg=cfg, sae=planted_sae(words, d_sae=160), words=words,
                           tmp=tmp_path_factory.mktemp("sb"))


def _labels(ws: ad.WordSet) -> list[tuple[str, int]]:
    return list(zip(ws.words, ws.labels.tolist()))


def test_ground_truth_probe_equals_saebench_training(world):
    data = world.data
    assert data.probes.letters == list(range(26))
    frames = [pd.DataFrame({"answer_class": ws.labels.numpy()}) for ws in (data.train, data.test)]
    torch.manual_seed(world.cfg.random_seed)
    with small_ops():  # one thread, as ours trains: thousands of tiny steps
        probe, _ = sb_probing.train_linear_probe_for_task(frames[0], frames[1], torch.device("cpu"),
                                                          data.train.acts.numpy(), data.test.acts.numpy(), 26, 64, 50, 1e-2)
    assert torch.equal(probe.weights.detach(), data.probes.weight) and torch.equal(probe.biases.detach(), data.probes.bias)


@pytest.fixture(scope="module")
def both(world):
    """SAEBench's k-sparse probing and absorption on the same inputs and SAE, and ours."""
    data, cfg, sae = world.data, world.cfg, world.sae
    view = SaeBenchView(sae)
    sb_probe = sb_probing.LinearProbe(data.train.acts.shape[1], 26)
    with torch.no_grad():
        sb_probe.fc.weight.copy_(data.probes.weight)
        sb_probe.fc.bias.copy_(data.probes.bias)
    torch.manual_seed(cfg.random_seed)
    with small_ops():
        sb_k = sb_ksp.train_k_sparse_probes(view, _labels(data.train), data.train.acts, ks=list(range(1, 11)),
                                            l1_decay=cfg.k_sparse_probe_l1_decay, batch_size=cfg.k_sparse_probe_batch_size,
                                            num_epochs=cfg.k_sparse_probe_num_epochs, precalc_sae_acts=True)
        raw = sb_ksp.eval_probe_and_sae_k_sparse_raw_scores(view, sb_probe, sb_k, _labels(data.test), data.test.acts)
    meta = sb_ksp.sae_k_sparse_metadata(view, sb_probe, sb_k, sae_name="planted", layer=0)
    metrics = sb_ksp.build_metrics_df(raw, meta, max_k_value=10)
    sb_ksp.add_feature_splits_to_metrics_df(metrics, max_k_value=10, f1_jump_threshold=cfg.f1_jump_threshold)
    raw.to_parquet(world.tmp / sb_ksp.get_sparse_probing_raw_results_filename("planted", 0), index=False)
    likely = sb_fa.get_stats_and_likely_false_negative_tokens(metrics, "planted", 0, world.tmp)
    acts_by_word = {w: a for ws in data.absorption_words.values() for w, a in zip(ws.words, ws.acts)}
    calc = sb_calc.FeatureAbsorptionCalculator(
        model=HookedView(acts_by_word, "blocks.0.hook_resid_post"), icl_word_list=ad.alpha_words(WordTokenizer(world.words)),
        max_icl_examples=10, base_template=TEMPLATE, word_token_pos=-6,
        full_absorption_probe_cos_sim_threshold=sb_fa.FULL_ABSORPTION_PROBE_COS_THRESHOLD,
        absorption_fraction_probe_cos_sim_threshold=sb_fa.ABSORPTION_FRACTION_PROBE_COS_THRESHOLD,
        probe_projection_proportion_threshold=sb_fa.ABSORPTION_PROBE_PROJECTION_PROPORTION_THRESHOLD,
        absorption_fraction_max_absorbing_latents=sb_fa.ABSORPTION_FRACTION_MAX_ABSORBING_LATENTS)
    words_df = sb_fa.calculate_projection_and_cos_sims(calc, view, sb_probe, layer=0, likely_negs=likely)
    letters_df = sb_main._aggregate_results_df(words_df)
    ours_k = k_sparse_probes(encode_rows(sae, data.train.acts), data.train.labels, data.probes.letters, 10,
                             cfg.k_sparse_probe_l1_decay, cfg.k_sparse_probe_batch_size, cfg.k_sparse_probe_num_epochs,
                             cfg.random_seed)
    rows, per_letter, skipped = score_letters(sae, data, cfg)
    return SimpleNamespace(sb_k=sb_k, metrics=metrics, likely=likely, words_df=words_df, letters_df=letters_df,
                           ours_k=ours_k, rows=rows, per_letter=per_letter, skipped=skipped)


def test_k_sparse_probes_equal_saebench(both):
    for letter in range(26):
        for k in range(1, 11):
            ids, w, b = both.ours_k[letter][k - 1]
            theirs = both.sb_k[k][letter]
            assert torch.equal(ids, theirs.feature_ids), (letter, k)
            assert torch.equal(w, theirs.weight) and b == pytest.approx(theirs.bias.item(), abs=1e-6)


def test_probe_f1_k_sparse_f1_and_split_latents_equal_saebench(both):
    saw_split = False
    for _, row in both.metrics.iterrows():
        ours = both.per_letter[row["letter"]]
        assert ours["probe_f1"] == row["f1_probe"]
        assert ours["f1_sparse_sae"] == [row[f"f1_sparse_sae_{k}"] for k in range(1, 11)]
        assert ours["split_feats"] == list(row["split_feats"])
        saw_split |= len(ours["split_feats"]) > 1
    assert saw_split  # the F1-jump rule accepted a k > 1 somewhere


def test_probe_positive_words_equal_saebench(both, world):
    for letter, stats in both.likely.items():
        words = world.data.absorption_words[string.ascii_lowercase.index(letter)].words
        assert words == stats.potential_false_negatives and len(words) == stats.probe_true_positives


def test_every_word_scores_equal_saebench(both, world):
    """Each probe-positive word's absorption fraction and full absorption, in SAEBench's row order."""
    data, sae = world.data, world.sae
    compared = 0
    for letter, group in both.words_df.groupby("letter", sort=False):
        li = string.ascii_lowercase.index(letter)
        words = data.absorption_words[li]
        direction = data.probes.weight[li] / data.probes.weight[li].norm()
        cos = torch.nn.functional.cosine_similarity(direction, sae.W_dec.detach(), dim=-1)
        fractions, full = word_absorption(encode_rows(sae, words.acts), words.acts @ direction, cos,
                                          both.per_letter[letter]["split_feats"])
        assert list(group["token"]) == words.words
        assert fractions == pytest.approx(list(group["absorption_fraction"]), abs=1e-6)
        assert full == list(group["is_full_absorption"])
        compared += len(words.words)
    assert compared == len(both.words_df) > 100


def test_every_letter_scores_equal_saebench(both):
    ours = {r["first_letter"]: r for r in both.rows}
    compared = 0
    for _, row in both.letters_df.iterrows():
        letter = row["letter"]
        f1 = both.metrics.loc[both.metrics["letter"] == letter, "f1_probe"].item()
        if f1 <= 0.6:  # SAEBench leaves the letter out of its result; so do we
            assert letter not in ours and "<= 0.6" in both.skipped[letter]
            continue
        r = ours[letter]
        assert r["num_probe_true_positives"] == row["num_probe_true_positives"]
        assert r["num_full_absorption"] == row["num_full_absorption"]
        assert r["full_absorption_rate"] == pytest.approx(row["full_absorption_rate"], abs=1e-12)
        assert r["mean_absorption_fraction"] == pytest.approx(row["mean_absorption_fraction"], abs=1e-6)
        assert r["num_split_features"] == row["num_split_feats"]
        compared += 1
    assert compared >= 20
    fractions = both.words_df["absorption_fraction"]
    assert ((fractions > 0) & (fractions < 1)).any() and (fractions == 1).any() and both.words_df["is_full_absorption"].any()


def test_headline_equals_saebench_main_aggregation(both):
    """SAEBench's headline has no function of its own to call: it is the loop inside `main.run_eval`
    (letters whose probe F1 > min_GT_probe_f1, then statistics.mean / stdev), after its
    `_aggregate_results_df` (words -> letters, SAEBench's own function, used above); the loop is
    mirrored here, ours computed from the same rows."""
    good = set(both.metrics.loc[both.metrics["f1_probe"] > 0.6, "letter"])
    kept = both.letters_df[both.letters_df["letter"].isin(good)]
    theirs = {"mean_absorption_fraction_score": statistics.mean(kept["mean_absorption_fraction"]),
              "mean_full_absorption_score": statistics.mean(kept["full_absorption_rate"]),
              "mean_num_split_features": statistics.mean(kept["num_split_feats"]),
              "std_dev_absorption_fraction_score": statistics.stdev(kept["mean_absorption_fraction"]),
              "std_dev_full_absorption_score": statistics.stdev(kept["full_absorption_rate"]),
              "std_dev_num_split_features": statistics.stdev(kept["num_split_feats"])}
    ours = aggregate_letters(both.rows)
    assert set(ours) == set(theirs)
    for key, value in theirs.items():
        assert ours[key] == pytest.approx(value, abs=1e-6), key
    assert 0.02 < ours["mean_absorption_fraction_score"] < 0.9 and np.isfinite(list(ours.values())).all()
