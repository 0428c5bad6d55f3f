"""Test doubles for the probing tasks (shared by their tests and the speed benchmark):

  - `FakeLM`: a tiny deterministic stand-in for `LanguageModel` (word-hash tokenizer, random
    embeddings mixed causally), enough for `get_example_cache` and the tasks to run end to end in
    a second, with no model weights;
  - `write_labeled_data`: a data directory in the layout of ../shared/data holding small synthetic
    labeled sets whose classes use different words (so probes can separate them);
  - `planted_tokens` / `planted_sae`: per-token activations with one planted direction per class,
    and an SAE with (or without) a latent aligned with each of them.
"""

from __future__ import annotations

import csv
import json
import zlib
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from saebench_scaffold.evals.probing import features
from saebench_scaffold.saes import SAEConfig, make_sae


@pytest.fixture(autouse=True)
def fresh_probing_memo():
    """The probing tasks' process-wide feature memo, emptied around each test of a module that
    imports this fixture (tests must not see each other's cached features)."""
    features.clear_memo()
    yield
    features.clear_memo()


class _HashTokenizer:
    pad_token_id = 0
    bos_token_id = 1

    def __init__(self, vocab: int):
        self.vocab = vocab

    def __call__(self, text: str, add_special_tokens: bool = False):
        return SimpleNamespace(input_ids=[3 + zlib.crc32(w.encode()) % (self.vocab - 3) for w in text.split()])


class FakeLM:
    """Word-hash tokens, random embeddings plus a causal running mean of them (so right padding
    never changes real tokens' activations, as with the real model)."""

    device = "cpu"

    def __init__(self, d_model: int = 32, vocab: int = 1009, seed: int = 0, mix: float = 0.5, name: str = "fake-lm"):
        g = torch.Generator().manual_seed(seed)
        self.d_model = d_model
        self.emb = torch.randn(vocab, d_model, generator=g)
        self.tokenizer = _HashTokenizer(vocab)
        self.bos_token_id = 1
        self.source_id = f"{name}:d{d_model}:v{vocab}:s{seed}"
        self.mix = mix  # weight of the causal running mean in the activations
        self.calls = 0

    def special_mask(self, tokens: torch.Tensor) -> torch.Tensor:
        special = (tokens == 0) | (tokens == 1)
        special[:, 0] = True
        return special

    def hook_width(self, hook: str, head_index: int | None = None) -> int:
        return self.d_model

    def hook_activations(self, tokens: torch.Tensor, hook: str) -> torch.Tensor:
        self.calls += 1
        e = self.emb[tokens]
        return e + self.mix * e.cumsum(1) / torch.arange(1, tokens.shape[1] + 1).view(1, -1, 1)


def _texts(classes: list[str], counts: dict[str, int], seed: int, class_words: int = 12, shared_words: int = 150):
    rng = np.random.default_rng(seed)
    shared = [f"w{i}" for i in range(shared_words)]
    for c in classes:
        own = [f"{c.lower().replace(' ', '_')}_{i}" for i in range(class_words)]
        for _ in range(counts[c]):
            n = int(rng.integers(8, 24))
            words = [own[rng.integers(len(own))] if rng.random() < 0.5 else shared[rng.integers(len(shared))] for _ in range(n)]
            yield c, " ".join(words)


def write_labeled_data(root: str | Path, per_class: int = 30, seed: int = 0, bbc_counts: dict[str, int] | None = None) -> Path:
    """Synthetic `bbc_news`, `ag_news` and `amazon_domain`/`amazon_sentiment` files under `root`."""
    root = Path(root)
    bbc_counts = bbc_counts or {c: per_class for c in ("business", "entertainment", "politics", "sport", "tech")}
    p = root / "classification" / "bbc_news" / "bbc.jsonl"
    p.parent.mkdir(parents=True, exist_ok=True)
    with open(p, "w") as f:
        for i, (c, t) in enumerate(_texts(list(bbc_counts), bbc_counts, seed)):
            f.write(json.dumps({"id": i, "label": 0, "label_name": c, "text": t}) + "\n")
    ag = ["World", "Sports", "Business", "Sci/Tech"]
    p = root / "classification" / "ag_news" / "test.csv"
    p.parent.mkdir(parents=True, exist_ok=True)
    with open(p, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["label", "title", "description"])
        for c, t in _texts(ag, {c: per_class for c in ag}, seed + 1):
            w.writerow([ag.index(c) + 1, t.split()[0], t])
    domains = ["books", "dvd", "electronics", "kitchen"]
    p = root / "classification" / "amazon_multidomain_sentiment" / "reviews.jsonl"
    p.parent.mkdir(parents=True, exist_ok=True)
    with open(p, "w") as f:
        for i, (c, t) in enumerate(_texts(domains, {c: per_class for c in domains}, seed + 2)):
            sentiment = "positive" if i % 2 else "negative"
            f.write(json.dumps({"domain": c, "sentiment": sentiment, "rating": 5 if i % 2 else 1, "title": sentiment,
                                "text": t + (" great good love fine" if i % 2 else " awful bad hate poor")}) + "\n")
    return root


def fake_context(data_dir, cache_dir, d_model: int = 32, seed: int = 0, lm: FakeLM | None = None):
    """An EvalContext whose language model is a FakeLM."""
    from saebench_scaffold.sources.model import DEFAULT_HOOK, ModelSpec
    from saebench_scaffold.evals.base import EvalContext

    ctx = EvalContext(ModelSpec(), DEFAULT_HOOK, str(data_dir), str(cache_dir), seed, progress=False)
    ctx.__dict__["lm"] = lm or FakeLM(d_model)
    return ctx


def random_sae(d_in: int, d_sae: int, architecture: str = "standard", seed: int = 0, **kw):
    torch.manual_seed(seed)
    sae = make_sae(SAEConfig(architecture, d_in, d_sae, **kw))
    with torch.no_grad():
        sae.b_enc.fill_(-0.1)
    return sae.eval()


def planted_tokens(n_per_class: int = 60, n_classes: int = 3, d: int = 16, ctx: int = 12, amplitude: float = 3.0,
                   noise: float = 0.5, seed: int = 0):
    """Per-token activations [n, ctx, d]: noise, plus `amplitude`·e_c on about half the tokens of
    class c examples (e_c = basis vector c). Returns (acts, mask, labels); the mask hides position 0
    and a random-length padded tail, like real examples."""
    g = torch.Generator().manual_seed(seed)
    n = n_per_class * n_classes
    labels = torch.arange(n_classes).repeat_interleave(n_per_class)
    acts = noise * torch.randn(n, ctx, d, generator=g)
    planted = torch.rand(n, ctx, generator=g) < 0.5
    acts[torch.arange(n).unsqueeze(1), torch.arange(ctx).unsqueeze(0), labels.unsqueeze(1).expand(n, ctx)] += amplitude * planted
    lengths = torch.randint(ctx // 2, ctx + 1, (n,), generator=g)
    mask = torch.arange(ctx).unsqueeze(0) < lengths.unsqueeze(1)
    mask[:, 0] = False
    acts[~mask] = 0.0
    return acts, mask, labels


def planted_sae(d: int = 16, d_sae: int = 8, n_classes: int = 3, aligned: bool = True, seed: int = 0):
    """A ReLU SAE whose latents 0..n_classes-1 read and write e_0..e_{n−1} (when `aligned`; else
    latent 0 points in a random direction orthogonal to every class direction); the other latents
    are random directions in the non-class dimensions."""
    g = torch.Generator().manual_seed(seed)
    dirs = torch.zeros(d_sae, d)
    for i in range(d_sae):
        if i < n_classes and (aligned or i > 0):
            dirs[i, i] = 1.0
        else:
            v = torch.randn(d - n_classes, generator=g)
            dirs[i, n_classes:] = v / v.norm()
    return sae_reading_and_writing(dirs)


def sae_reading_and_writing(dirs: torch.Tensor):
    """A bias-free ReLU SAE whose latent i reads and writes the row `dirs[i]` (W_enc = W_decᵀ)."""
    sae = make_sae(SAEConfig("standard", dirs.shape[1], dirs.shape[0]))
    with torch.no_grad():
        sae.W_dec.copy_(dirs)
        sae.W_enc.copy_(dirs.T)
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    return sae.eval()


def signed_pairs_sae(d: int, n_latents: int, n_dirs: int, aligned: bool = True, seed: int = 1):
    """A ReLU SAE for SCR: latents 0..2·n_dirs−1 are ±e_0, ±e_1, …, ±e_{n_dirs−1} (one attribute
    direction each, both signs) when `aligned`, else random directions outside dims 0..n_dirs−1 like
    every later latent."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for i in range(n_latents):
        if aligned and i < 2 * n_dirs:
            rows.append(torch.eye(d)[i // 2] * (1 if i % 2 == 0 else -1))
        else:
            v = torch.zeros(d)
            v[n_dirs:] = torch.randn(d - n_dirs, generator=g)
            rows.append(v / v.norm())
    return sae_reading_and_writing(torch.stack(rows))


# SAEBench's SCR sets in the data directory's layout (sources/data/two_label.py): the professions and
# categories of SAEBench's pairs plus one set aside, stored by id as the hub stores them.
SCR_BIOS_PROFESSIONS = ("professor", "nurse", "architect", "journalist", "surgeon", "psychologist", "attorney", "teacher",
                        "dentist")
SCR_AMAZON_CATEGORIES = ("Books", "CDs_and_Vinyl", "Software", "Electronics", "Pet_Supplies", "Office_Products",
                         "Industrial_and_Scientific", "Toys_and_Games", "Automotive")
SCR_COLUMN2_WORDS = {"male": ["he", "his", "him", "mr"], "female": ["she", "her", "hers", "ms"],
                     "1.0": ["awful", "bad", "hate", "poor"], "5.0": ["great", "good", "love", "fine"]}


def write_saebench_scr_data(root: str | Path, train_per_cell: int = 12, test_per_cell: int = 6, seed: int = 0,
                            bios_format: str = "parquet", amazon_format: str = "jsonl",
                            skip: tuple[str, ...] = ()) -> Path:
    """Fake `LabHC/bias_in_bios` and `canrager/amazon_reviews_mcauley_1and5` saved as the `datasets`
    library saves them (train / test, .parquet or .jsonl): `per_cell` rows of every (profession or
    category, gender or rating) cell, shuffled together; each text mixes its column-1 words, its
    column-2 words and shared words, and ends with a unique row id. `skip`: sets not written."""
    from saebench_scaffold.sources.data.two_label import AMAZON_CATEGORIES, PROFESSIONS

    root = Path(root)
    rng = np.random.default_rng(seed)
    shared = [f"w{i}" for i in range(150)]
    specs = {"bias_in_bios": ("hard_text", "profession", "gender", SCR_BIOS_PROFESSIONS, ("male", "female"),
                              lambda c: PROFESSIONS.index(c), lambda v: ("male", "female").index(v), bios_format),
             "amazon_reviews_mcauley_1and5": ("text", "category", "rating", SCR_AMAZON_CATEGORIES, ("1.0", "5.0"),
                                              lambda c: AMAZON_CATEGORIES.index(c), float, amazon_format)}
    for folder, (text_col, c1_col, c2_col, c1_values, c2_values, c1_id, c2_id, fmt) in specs.items():
        if folder in skip:
            continue
        out = root / "classification" / folder
        out.mkdir(parents=True, exist_ok=True)
        for split, per_cell in (("train", train_per_cell), ("test", test_per_cell)):
            rows = []
            for c1 in c1_values:
                own = [f"{c1.lower()}_{i}" for i in range(8)]
                for c2 in c2_values:
                    for _ in range(per_cell):
                        words = [str(rng.choice(own)) if rng.random() < 0.4 else
                                 str(rng.choice(SCR_COLUMN2_WORDS[c2])) if rng.random() < 0.4 else str(rng.choice(shared))
                                 for _ in range(int(rng.integers(10, 24)))]
                        rows.append({c1_col: c1_id(c1), c2_col: c2_id(c2), text_col: " ".join(words)})
            rows = [rows[i] for i in rng.permutation(len(rows))]
            for i, r in enumerate(rows):
                r[text_col] += f" {split}{i}"
            if fmt == "parquet":
                import pyarrow as pa
                import pyarrow.parquet as pq

                pq.write_table(pa.Table.from_pylist(rows), out / f"{split}.parquet")
            else:
                (out / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root
