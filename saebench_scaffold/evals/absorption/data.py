"""The checkpoint-independent half of `absorption` (SAEBench's first-letter feature absorption):
the words, the prompts, the LLM's activations at each word, and the ground-truth letter probes.

Everything here depends on the model, the hook and the config, never on a checkpoint, so one eval
call builds it once (`letter_data`, memoised in `ctx.memo`) and every checkpoint reuses it; the
activations are also cached on disk (`<cache_dir>/absorption/<key>/`, one builder per cache, shards
checksummed like the other activation caches), so the LM runs once per prompt set, ever.

SAEBench 0.6.0's procedure (`sae_bench/evals/absorption/`), reproduced step by step:
  - words (`vocab.get_alpha_tokens`): every vocabulary token whose text is ASCII letters, after at
    most one leading space (" cat", "cat"); ours in token-id order, SAEBench's in the tokenizer's
    hash order, which changes between processes;
  - budget: `max_words` of them drawn at random first (SAEBench uses all; `--preset saebench` too);
  - prompts (`prompting.create_icl_prompt`): 10 in-context examples drawn at random from the same
    split's words, never the word itself, each `{word} has the first letter: C`, joined by "\\n",
    a leading "\\n", then the word's own `{word} has the first letter:`;
  - split (`probing.create_dataset_probe_training`): the words shuffled, the first 80 % train;
  - activations at the word's last token: SAEBench's `prompt_token_pos` (-6 for Gemma's tokenizer)
    is derived here from the tokenizer: minus one minus the number of tokens the template adds after
    the word (SmolLM2's tokenizer: " has", " the", " first", " letter", ":" -> -6 too);
  - ground-truth probe (`probing.train_linear_probe_for_task`): a 26-way one-vs-rest logistic
    regression in torch (BCE with positive weights, Adam, lr 1e-2 decaying to 1e-5, weight decay
    1e-4, batch 64, 50 epochs) on the train split's activations;
  - absorption prompts (`FeatureAbsorptionCalculator`): for each letter, the test words of that
    letter the probe calls positive, in fresh prompts whose examples come from the whole vocabulary.
SAEBench records a `random_seed` but never applies it (its randomness is the global `random` and
torch state); we draw everything from `random.Random(random_seed)` and a torch seed, in SAEBench's
order of draws, so a seed reproduces the prompts exactly.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from dataclasses import dataclass, field

import torch
from safetensors.torch import load_file
from sklearn.metrics import f1_score, precision_score, recall_score
from torch import nn
from tqdm.auto import tqdm

from ...activations.cache import build_missing, texts_sha256
from ...activations.shards import record_build, save_shard, shard_intact
from ...settings import UserError, cache_dir
from ..probes import small_ops

LETTERS = "abcdefghijklmnopqrstuvwxyz"
ASCII_LETTERS = set(LETTERS + LETTERS.upper())
ACTIVATION_CACHE_VERSION = 1
SHARD_PROMPTS = 1024


# ---- words and prompts ---------------------------------------------------------------------------

def alpha_words(tokenizer) -> list[str]:
    """SAEBench's `get_alpha_tokens`: the text of every vocabulary token that is ASCII letters after at
    most one leading space, in token-id order. (Its special case for SentencePiece's "▁" prefix, which
    some tokenizers drop when converting one token, is kept.)"""
    words = []
    for token, _ in sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1]):
        text = tokenizer.convert_tokens_to_string([token])
        if token.startswith("▁") and not text.startswith(" "):
            text = " " + text
        core = text.removeprefix(" ")
        if core and all(c in ASCII_LETTERS for c in core):
            words.append(text)
    return words


def first_letter_answer(word: str) -> str:
    """SAEBench's `first_letter` formatter: " C" for " cat" (first alphabetic character, upper case)."""
    return " " + next(c for c in word.strip() if c.isalpha()).upper()


def letter_of(word: str) -> int:
    return LETTERS.index(first_letter_answer(word).strip().lower())


@dataclass(frozen=True)
class PromptStyle:
    template: str = "{word} has the first letter:"
    max_icl_examples: int = 10
    separator: str = "\n"
    prepend_separator: bool = True  # SAEBench does, for Mistral's tokenizer; kept for every tokenizer


def icl_prompt(word: str, examples: list[str], rng: random.Random, style: PromptStyle, max_attempts: int = 1000) -> str:
    """SAEBench's `create_icl_prompt` (shuffled examples, contamination check), returning the prompt's
    base: the in-context examples with their answers, then the word's own question."""
    for _ in range(max_attempts):
        chosen = rng.sample(examples, style.max_icl_examples)
        if word not in chosen:
            break
    else:
        raise UserError(f"absorption: no {style.max_icl_examples} in-context examples without {word!r} among "
                        f"{len(examples)} words; use a larger word budget")
    shots = [style.template.format(word=ex) + first_letter_answer(ex) for ex in chosen]
    base = style.separator.join(shots) + style.separator + style.template.format(word=word)
    return style.separator + base if style.prepend_separator else base


def split_words(words: list[str], rng: random.Random, style: PromptStyle, train_fraction: float = 0.8
                ) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """SAEBench's `create_dataset_probe_training` (one prompt per word): shuffle, split, and give each
    word a prompt whose examples come from its own split. Returns ([(word, prompt)] train, test)."""
    shuffled = rng.sample(words, len(words))
    cut = int(len(shuffled) * train_fraction)
    parts = shuffled[:cut], shuffled[cut:]
    for part in parts:
        if len(part) <= style.max_icl_examples:
            raise UserError(f"absorption: a split of {len(part)} words cannot give {style.max_icl_examples} "
                            f"in-context examples besides the word; use a larger word budget")
    return tuple([(w, icl_prompt(w, part, rng, style)) for w in part] for part in parts)  # type: ignore[return-value]


def template_tail_tokens(tokenizer, style: PromptStyle, word: str) -> list[int]:
    """The tokens the template adds after the word (SmolLM2: " has", " the", " first", " letter", ":"),
    so the word's last token is at position -1 - len(tail): SAEBench's `prompt_token_pos`."""
    suffix = style.template.split("{word}", 1)[1]
    prompt = style.separator + style.template.format(word=word)
    full = tokenizer(prompt, add_special_tokens=False).input_ids
    head = tokenizer(prompt[: len(prompt) - len(suffix)], add_special_tokens=False).input_ids
    if full[: len(head)] != head:
        raise UserError(f"absorption: this tokenizer merges the template's text after {{word}} with the word "
                        f"({style.template!r}); set absorption.prompt_token_pos")
    return full[len(head):]


def ends_with_tail(tokenizer, prompts: list[str], tail: list[int]) -> list[bool]:
    """Whether each prompt's last tokens are `tail`, i.e. its word really ends at -1 - len(tail)."""
    return [ids[len(ids) - len(tail):] == tail and len(ids) > len(tail)
            for ids in (tokenizer(p, add_special_tokens=False).input_ids for p in prompts)]


# ---- LLM activations at the word -----------------------------------------------------------------

def prompt_activations(lm, hook, name: str, prompts: list[str], position: int, cache_root=None,
                       batch_prompts: int = 64, progress: bool = True) -> torch.Tensor:
    """[n, d] float32 activations at `hook` at token `position` (negative: from the end) of BOS +
    each prompt; cached on disk by (model, hook, prompts, position)."""
    blob = json.dumps({"model": lm.source_id, "hook": str(hook), "prompts": texts_sha256(prompts), "n": len(prompts),
                       "position": position, "v": ACTIVATION_CACHE_VERSION}, sort_keys=True)
    root = cache_dir(cache_root) / "absorption" / hashlib.sha256(blob.encode()).hexdigest()[:20]
    paths = [root / f"shard_{i:05d}.safetensors" for i in range(math.ceil(len(prompts) / SHARD_PROMPTS))]
    def build(missing: list[int]) -> None:
        root.mkdir(parents=True, exist_ok=True)
        for i in missing:
            chunk = prompts[i * SHARD_PROMPTS:(i + 1) * SHARD_PROMPTS]
            save_shard({"acts": _activations_at(lm, hook, chunk, position, batch_prompts, progress, name)}, paths[i])
            record_build(root, paths[i].name)

    if not all(shard_intact(p) for p in paths):
        build_missing(root, paths, build)  # one builder per cache; damaged shards dropped first
    return torch.cat([load_file(p)["acts"] for p in paths]) if paths else torch.zeros(0, lm.hook_width(hook))


def _activations_at(lm, hook, prompts, position, batch_prompts, progress, name) -> torch.Tensor:
    ids = [[lm.bos_token_id] + lm.tokenizer(p, add_special_tokens=False).input_ids for p in prompts]
    if any(len(x) + position < 1 for x in ids):
        raise UserError(f"absorption: token position {position} falls on or before BOS in a prompt of {name}")
    pad = lm.tokenizer.pad_token_id if lm.tokenizer.pad_token_id is not None else lm.bos_token_id
    out = torch.zeros(len(ids), lm.hook_width(hook))
    # Sorted by length, right-padded: causal attention leaves real tokens' activations unchanged.
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    bar = tqdm(total=len(ids), unit="prompt", desc=f"caching {hook} on {name}", disable=not progress)
    for s in range(0, len(order), batch_prompts):
        idx = order[s:s + batch_prompts]
        width = max(len(ids[i]) for i in idx)
        tokens = torch.tensor([ids[i] + [pad] * (width - len(ids[i])) for i in idx])
        acts = lm.hook_activations(tokens, hook)
        rows = torch.tensor([len(ids[i]) + position for i in idx])
        out[idx] = acts[torch.arange(len(idx)), rows].float().cpu()
        bar.update(len(idx))
    bar.close()
    if not torch.isfinite(out).all():
        raise UserError(f"model produced non-finite activations at {hook} on {name}")
    return out


# ---- the ground-truth letter probe ---------------------------------------------------------------

def train_multi_probe(x: torch.Tensor, y: torch.Tensor, seed: int, batch_size: int, num_epochs: int, lr: float,
                      weight_decay: float, end_lr: float = 1e-5, l1_decay: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """SAEBench's `probing.train_multi_probe` (and, with `l1_decay`, `train_sparse_multi_probe`): one
    logistic-regression probe per column of the 0/1 targets `y` [n, m] on features `x` [n, d],
    BCE weighted by negatives/positives per column, Adam, learning rate decayed exponentially to
    `end_lr` over the epochs. Same operations and random draws in the same order as SAEBench's under
    `torch.manual_seed(seed)` (nn.Linear's init, then one DataLoader shuffle per epoch); the global
    torch RNG is restored afterwards. Returns (weight [m, d], bias [m])."""
    with torch.random.fork_rng(devices=[]), torch.enable_grad():
        torch.manual_seed(seed)
        y = y.to(x.dtype)
        loader = torch.utils.data.DataLoader(torch.arange(len(x)), batch_size=batch_size, shuffle=True)
        probe = nn.Linear(x.shape[1], y.shape[1]).to(x.dtype)
        positives = y.sum(0)
        loss_fn = nn.BCEWithLogitsLoss(pos_weight=(len(y) - positives) / positives)
        opt = torch.optim.Adam(probe.parameters(), lr=lr, weight_decay=weight_decay)
        schedule = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=math.exp(math.log(end_lr / lr) / num_epochs))
        for _ in range(num_epochs):
            for idx in loader:
                opt.zero_grad()
                loss = loss_fn(probe(x[idx]), y[idx])
                if l1_decay:
                    loss = loss + l1_decay * probe.weight.abs().sum(dim=-1).mean()
                loss.backward()
                opt.step()
            schedule.step()
    return probe.weight.detach().clone(), probe.bias.detach().clone()


def probe_stats(scores: torch.Tensor, labels: torch.Tensor, letter: int) -> dict[str, float]:
    """SAEBench's `build_metrics_df` figures for the ground-truth probe: positive where the logit > 0."""
    y, pred = (labels == letter).numpy(), (scores > 0).numpy()
    return {"probe_f1": float(f1_score(y, pred)), "probe_precision": float(precision_score(y, pred, zero_division=0)),
            "probe_recall": float(recall_score(y, pred))}


# ---- everything a checkpoint is scored against ----------------------------------------------------

@dataclass
class WordSet:
    words: list[str]
    labels: torch.Tensor  # [n] letter index (0 = a)
    acts: torch.Tensor  # [n, d_in] activations at the word's last token


@dataclass
class LetterProbes:
    letters: list[int]  # letters with train and test words: the probe's columns, in this order
    weight: torch.Tensor  # [len(letters), d_in]
    bias: torch.Tensor  # [len(letters)]
    stats: dict[int, dict]  # per letter: probe F1 / precision / recall on the test words, word counts
    positives: dict[int, list[str]]  # per letter: its test words the probe calls positive (logit > 0)
    skipped: dict[str, str] = field(default_factory=dict)  # letter -> why it has no probe


def fit_letter_probes(train: WordSet, test: WordSet, seed: int, batch_size: int = 64, num_epochs: int = 50,
                      lr: float = 1e-2, weight_decay: float = 1e-4) -> LetterProbes:
    """The ground-truth probes (SAEBench's `train_linear_probe_for_task`) and their test figures
    (`build_metrics_df`, `get_stats_and_likely_false_negative_tokens`). A letter without train or
    test words gets no probe (SAEBench fails on one) and is recorded as skipped."""
    have = {"train": set(train.labels.tolist()), "test": set(test.labels.tolist())}
    letters = [i for i in range(len(LETTERS)) if all(i in h for h in have.values())]
    skipped = {LETTERS[i]: "no " + " or ".join(s for s, h in have.items() if i not in h) + " words"
               for i in range(len(LETTERS)) if i not in letters}
    if not letters:
        raise UserError("absorption: no letter has both train and test words; use a larger word budget")
    targets = (train.labels.unsqueeze(1) == torch.tensor(letters)).long()
    with small_ops():  # thousands of tiny steps: thread pools only add overhead
        weight, bias = train_multi_probe(train.acts, targets, seed, batch_size, num_epochs, lr, weight_decay)
    scores = test.acts @ weight.T + bias
    stats, positives = {}, {}
    for col, letter in enumerate(letters):
        stats[letter] = {**probe_stats(scores[:, col], test.labels, letter),
                         "n_train_words": int((train.labels == letter).sum()),
                         "n_test_words": int((test.labels == letter).sum())}
        positives[letter] = [w for w, y, s in zip(test.words, test.labels.tolist(), scores[:, col].tolist())
                             if y == letter and s > 0]
    return LetterProbes(letters, weight, bias, stats, positives, skipped)


@dataclass
class LetterData:
    train: WordSet
    test: WordSet
    probes: LetterProbes
    absorption_words: dict[int, WordSet]  # per probed letter: its probe-positive test words, in fresh prompts
    token_position: int
    position_derived: bool
    n_vocab_words: int
    n_prompts: int = 0
    off_position: list[str] = field(default_factory=list)  # words left out: not at the token position


def letter_data(ctx, cfg) -> LetterData:
    """Build (or reuse within this eval call) the words, activations and probes `cfg` asks for."""
    keys = ("random_seed", "prompt_template", "prompt_token_pos", "max_words", "train_test_fraction",
            "max_icl_examples", "probe_batch_size", "probe_num_epochs", "probe_lr", "probe_weight_decay")
    memo_key = ("absorption", ctx.hook, tuple(getattr(cfg, k) for k in keys))
    if memo_key not in ctx.memo:
        ctx.memo[memo_key] = _build_letter_data(ctx, cfg)
    return ctx.memo[memo_key]


def _build_letter_data(ctx, cfg) -> LetterData:
    lm, style = ctx.lm, PromptStyle(cfg.prompt_template, cfg.max_icl_examples)
    vocab = alpha_words(lm.tokenizer)
    if len(vocab) <= style.max_icl_examples:
        raise UserError(f"absorption: the tokenizer has only {len(vocab)} single-token alphabetic words")
    rng = random.Random(cfg.random_seed)
    words = vocab if cfg.max_words is None or cfg.max_words >= len(vocab) else rng.sample(vocab, cfg.max_words)
    train, test = split_words(words, rng, style, cfg.train_test_fraction)
    derived = cfg.prompt_token_pos is None
    tail = template_tail_tokens(lm.tokenizer, style, vocab[0]) if derived else None
    position = -1 - len(tail) if derived else cfg.prompt_token_pos
    off_position = []

    def word_set(name, pairs):
        # A prompt whose word merged with the template's next tokens has no token at `position` to
        # read; SAEBench would read the wrong one, we leave the prompt out and count it.
        if derived:
            kept = ends_with_tail(lm.tokenizer, [p for _, p in pairs], tail)
            off_position.extend(w for (w, _), ok in zip(pairs, kept) if not ok)
            pairs = [pair for pair, ok in zip(pairs, kept) if ok]
        acts = prompt_activations(lm, ctx.hook, name, [p for _, p in pairs], position, ctx.cache_dir,
                                  cfg.llm_batch_size, ctx.progress)
        return WordSet([w for w, _ in pairs], torch.tensor([letter_of(w) for w, _ in pairs], dtype=torch.long), acts)

    train_set, test_set = word_set("absorption_train", train), word_set("absorption_test", test)
    probes = fit_letter_probes(train_set, test_set, cfg.random_seed, cfg.probe_batch_size, cfg.probe_num_epochs,
                               cfg.probe_lr, cfg.probe_weight_decay)
    # The absorption prompts continue the same random stream, letter by letter (SAEBench's order).
    fresh = [(w, icl_prompt(w, vocab, rng, style)) for letter in probes.letters for w in probes.positives[letter]]
    fresh_set = word_set("absorption_words", fresh)
    absorption_words = {}
    for letter in probes.letters:
        rows = torch.nonzero(fresh_set.labels == letter).flatten()
        absorption_words[letter] = WordSet([fresh_set.words[i] for i in rows.tolist()], fresh_set.labels[rows],
                                           fresh_set.acts[rows])
    return LetterData(train_set, test_set, probes, absorption_words, position, derived, len(vocab),
                      len(train) + len(test) + len(fresh), off_position)
