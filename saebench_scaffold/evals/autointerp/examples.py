"""What the judge is shown for one latent: SAEBench 0.6.0's example selection (`AutoInterp.gather_data`
in `sae_bench/evals/autointerp/main.py`, `sae_bench_utils/indexing_utils.py`), step by step.

Inputs are plain tensors: a latent's activations over the token set [n_contexts, ctx] (bfloat16, as
SAEBench collects them, zero at BOS and special tokens), the tokens, and the random sources. Per latent,
in SAEBench's order of random draws (torch: two `randint`, `multinomial`, two `randperm`; Python:
one `shuffle`):
  1. random contexts: `n_random_ex_for_scoring` (context, position) pairs, the position at least
     `buffer` from either end;
  2. top contexts: the `n_top_ex` largest activations at least `buffer` from either end, with
     `no_overlap` no two in one context within `buffer` of each other; each example is the window
     of 2·buffer + 1 tokens around its position;
  3. the activation threshold a token must exceed to count as active (and be highlighted):
     `act_threshold_frac` × the largest activation in the top windows;
  4. importance-sampled contexts: positions drawn without replacement with probability ∝ activation²
     among activations below the smallest top activation (so disjoint from the top ones). A latent
     with nothing there has no examples ("dead" in SAEBench); with fewer such positions than asked,
     torch's sampler goes on to zero-probability positions, as in SAEBench (counted in
     `n_iw_candidates`);
  5. top and importance-sampled examples split at random between generation and scoring; the
     generation examples sorted by their largest activation (descending, stable), the scoring ones
     (plus the random ones, whose activations SAEBench sets to zero: never "active") shuffled.
SAEBench counts a random context as inactive even where the latent fires in it; `n_random_active`
records how often that happened (it lowers the score of a frequent latent's honest explanation).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch


def top_indices(x: torch.Tensor, k: int, buffer: int, no_overlap: bool) -> torch.Tensor:
    """[k, 2] (context, position) of the k largest values of x [n, ctx], positions in
    [buffer, ctx - buffer); with `no_overlap`, a value within `buffer` of a chosen one in the same
    context is passed over (SAEBench's `get_k_largest_indices`, ties in the order argsort gives)."""
    inner = x[:, buffer:x.shape[1] - buffer]
    order = inner.flatten().argsort(-1, descending=True)
    rows, cols = order // inner.shape[1], order % inner.shape[1] + buffer
    if not no_overlap:
        return torch.stack((rows, cols), dim=1)[:k]
    chosen: list[tuple[int, int]] = []
    taken: dict[int, list[int]] = {}
    for row, col in zip(rows.tolist(), cols.tolist()):
        if all(abs(col - c) > buffer for c in taken.get(row, ())):
            chosen.append((row, col))
            taken.setdefault(row, []).append(col)
            if len(chosen) == k:
                break
    return torch.tensor(chosen, dtype=torch.int64).reshape(-1, 2)


def importance_sampled_indices(x: torch.Tensor, k: int, buffer: int, generator: torch.Generator) -> torch.Tensor:
    """[k, 2] positions drawn without replacement with probability ∝ x² (SAEBench's
    `get_iw_sample_indices`, computed in x's dtype as there)."""
    inner = x[:, buffer:x.shape[1] - buffer].pow(2)
    drawn = torch.multinomial(inner.flatten() / inner.sum(), k, replacement=False, generator=generator)
    return torch.stack((drawn // inner.shape[1], drawn % inner.shape[1] + buffer), dim=1)


def windows(x: torch.Tensor, indices: torch.Tensor, buffer: int) -> torch.Tensor:
    """[k, 2·buffer + 1]: x around each (context, position) (SAEBench's `index_with_buffer`)."""
    rows, cols = indices[:, 0:1], indices[:, 1:2] + torch.arange(-buffer, buffer + 1)
    return x[rows.expand_as(cols), cols]


@dataclass
class Example:
    """One window of tokens: its token strings and activations (SAEBench's `Example`)."""

    str_toks: list[str]
    acts: list[float]
    act_threshold: float

    @property
    def active_toks(self) -> list[bool]:
        return [a > self.act_threshold for a in self.acts]

    @property
    def is_active(self) -> bool:
        """What the judge has to predict in the scoring phase."""
        return any(self.active_toks)

    def to_str(self, mark_toks: bool = False) -> str:
        """The window as text, active tokens as <<token>> when `mark_toks`; SAEBench drops the
        replacement character of split multi-byte tokens and shows newlines as ↵."""
        text = "".join(f"<<{tok}>>" if mark_toks and active else tok for tok, active in zip(self.str_toks, self.active_toks))
        return text.replace("\ufffd", "").replace("\n", "↵")


@dataclass
class LatentExamples:
    latent: int
    generation: list[Example]  # for the explanation, strongest first
    scoring: list[Example]  # for the detection test, shuffled
    n_random_active: int  # random scoring contexts where the latent does fire above the threshold
    n_iw_candidates: int  # positions the importance sampling could draw from


def token_strings(tokenizer, tokens: torch.Tensor) -> list[str]:
    """Each token decoded on its own, as TransformerLens's `to_str_tokens` (which SAEBench uses) does."""
    return tokenizer.batch_decode([[t] for t in tokens.tolist()], clean_up_tokenization_spaces=False)


def latent_examples(latent: int, acts: torch.Tensor, tokens: torch.Tensor, cfg, generator: torch.Generator,
                    rng: random.Random, tokenizer) -> LatentExamples | None:
    """Generation and scoring examples of one latent (acts [n, ctx] of this latent, zero at special
    tokens; tokens [n, ctx]); None when it has no examples (SAEBench drops it as dead)."""
    n, ctx_len = tokens.shape
    b = cfg.buffer
    n_top = cfg.n_top_ex_for_generation + cfg.n_top_ex_for_scoring
    n_iw = cfg.n_iw_sampled_ex_for_generation + cfg.n_iw_sampled_ex_for_scoring
    rand_idx = torch.stack([torch.randint(0, n, (cfg.n_random_ex_for_scoring,), generator=generator),
                            torch.randint(b, ctx_len - b, (cfg.n_random_ex_for_scoring,), generator=generator)], dim=-1)
    top_idx = top_indices(acts, n_top, b, cfg.no_overlap)
    if len(top_idx) < n_top:  # a token set too small to hold the windows apart (SAEBench fails there)
        return None
    top_values = windows(acts, top_idx, b)
    act_threshold = cfg.act_threshold_frac * top_values.max().item()
    below = torch.where(acts >= top_values[:, b].min().item(), 0.0, acts)
    inner = below[:, b:ctx_len - b]
    if inner.max() < 1e-6:
        return None
    iw_idx = importance_sampled_indices(below, n_iw, b, generator)
    top_split, iw_split = torch.randperm(n_top, generator=generator), torch.randperm(n_iw, generator=generator)

    def examples(idx: torch.Tensor, values: torch.Tensor | None = None) -> list[Example]:
        toks = windows(tokens, idx, b)
        values = torch.zeros_like(toks, dtype=torch.float32) if values is None else values
        return [Example(token_strings(tokenizer, t), v, act_threshold) for t, v in zip(toks, values.tolist())]

    iw_values = windows(acts, iw_idx, b)
    n_gen_top, n_gen_iw = cfg.n_top_ex_for_generation, cfg.n_iw_sampled_ex_for_generation
    generation = sorted(examples(top_idx[top_split[:n_gen_top]], top_values[top_split[:n_gen_top]])
                        + examples(iw_idx[iw_split[:n_gen_iw]], iw_values[iw_split[:n_gen_iw]]),
                        key=lambda ex: max(ex.acts), reverse=True)
    scoring = (examples(top_idx[top_split[n_gen_top:]], top_values[top_split[n_gen_top:]])
               + examples(iw_idx[iw_split[n_gen_iw:]], iw_values[iw_split[n_gen_iw:]]) + examples(rand_idx))
    rng.shuffle(scoring)
    n_random_active = int((windows(acts, rand_idx, b).float() > act_threshold).any(dim=1).sum())
    return LatentExamples(latent, generation, scoring, n_random_active, int((inner > 0).sum()))
