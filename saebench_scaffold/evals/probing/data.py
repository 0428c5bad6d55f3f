"""Probing samples shared by `sparse_probing`, `tpp` and `scr`: the shared config, class-balanced
example samples, resplits and one-vs-rest data, and `load_probing_set` (a sample with its cached
token activations and mean-pooled LLM activations). Pooled SAE latents and latent ablation are in
`features.py`, the memo of checkpoint-independent results in `memo.py`, probes in `evals/probes.py`.

Caching contract (why scoring a second checkpoint is cheap):
  - the example sample of a dataset depends only on (dataset, per-class budget, `sample_seed`), never
    on the resplit seeds, so its token activations are cached once per (model, hook, sample) by
    `get_example_cache` and shared by every checkpoint, every resplit and both tasks;
  - the LLM's mean-pooled activations are cached next to them (`ExampleCache.mean_pooled`);
  - checkpoint-independent probe results (LLM baselines, TPP's and SCR's LLM probes) are memoised in memory
    and on disk under `<cache_dir>/probing/`;
  - a checkpoint's pooled latents are computed in one streamed encoder pass and kept for the
    checkpoint most recently scored, so `sparse_probing` and `tpp` on the same checkpoint encode once.

Core computations take plain tensors (pooled activations, labels, per-token activations + masks),
so they are testable without a language model.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass

import numpy as np
import torch
from pydantic import Field, field_validator

from ...sources import data
from ...activations.cache import ExampleCache, get_example_cache
from ...settings import UserError
from ..base import TaskConfig

MIN_SPLIT_PER_CLASS = 4  # smallest per-class sample a --limit can shrink a dataset to (3 train + 1 test)


# ---- configuration shared by both tasks ----

class ProbingConfigBase(TaskConfig):
    """Budget and sampling settings shared by `sparse_probing` and `tpp` (same defaults, so the two
    tasks share example caches)."""

    train_per_class: int = Field(100, ge=2, description="training examples per class in each resplit (SAEBench: 4,000 per task)")
    test_per_class: int = Field(50, ge=1, description="test examples per class in each resplit (SAEBench: 1,000 per task)")
    n_resplits: int = Field(3, ge=2, description="train/test reshuffles of the cached sample; metrics are mean ± std over them")
    sample_seed: int = Field(0, description="seed of the fixed class-balanced sample (not of the resplits, so caches are shared)")
    max_examples_per_dataset: int | None = Field(None, ge=1, description="cap on examples per dataset (set by --limit; "
                                                 f"at least {MIN_SPLIT_PER_CLASS} per class are kept)")
    min_examples_per_class: int = Field(10, ge=2, description="a dataset with a smaller class is an error")
    context_length: int = Field(128, ge=2)
    probe_C: float = Field(1.0, gt=0, description="inverse L2 strength of the logistic-regression probes")
    probe_max_iter: int = Field(1000, ge=1)
    batch_examples: int = Field(32, ge=1, description="examples per SAE encoder batch")

    @field_validator("datasets", check_fields=False)
    @classmethod
    def _datasets_nonempty(cls, v):
        if not v:
            raise ValueError("datasets must not be empty")
        return v


# ---- sampling -----------------------------------------------------------------------------------

@dataclass
class ProbingSample:
    """A fixed, class-balanced sample of one labeled dataset (texts grouped by class)."""

    name: str
    classes: list[str]
    texts: list[str]
    labels: torch.Tensor  # [n] long, index into `classes`
    n_train: int  # per class, in every resplit
    n_test: int  # per class
    available: dict[str, int]  # examples per class in the whole dataset
    capped: bool = False  # budget lowered to what the smallest class holds


def plan_counts(name: str, class_counts: dict[str, int], train_per_class: int, test_per_class: int,
                max_per_dataset: int | None = None, min_per_class: int = 10) -> tuple[int, int, bool]:
    """Per-class train / test counts for a dataset, or a UserError naming the dataset and count.

    The budget is lowered (keeping the train:test ratio) when the smallest class holds fewer
    examples than asked, or when `max_per_dataset` (`--limit`) caps the dataset's total."""
    if len(class_counts) < 2:
        only = ", ".join(f"{c!r}: {n}" for c, n in class_counts.items()) or "no examples"
        raise UserError(f"dataset {name}: probing needs at least 2 classes, found {len(class_counts)} ({only})")
    smallest_cls, smallest = min(class_counts.items(), key=lambda kv: (kv[1], kv[0]))
    if smallest < min_per_class:
        raise UserError(f"dataset {name}: class {smallest_cls!r} has only {smallest} examples "
                        f"(at least {min_per_class} per class are needed)")
    want = train_per_class + test_per_class
    total = min(want, smallest)
    if max_per_dataset is not None:
        total = min(total, max(MIN_SPLIT_PER_CLASS, max_per_dataset // len(class_counts)))
    if total == want:
        return train_per_class, test_per_class, False
    n_test = max(1, round(total * test_per_class / want))
    n_train = total - n_test
    if n_train < 2:
        raise UserError(f"dataset {name}: only {total} examples per class available for a train/test split")
    return n_train, n_test, True


def sample_balanced(name: str, examples: list[data.LabeledExample], train_per_class: int, test_per_class: int,
                    seed: int = 0, max_per_dataset: int | None = None, min_per_class: int = 10) -> ProbingSample:
    """Draw the same number of examples from every class with a fixed seed (independent of the
    resplit seeds, so the activation cache is shared by every resplit and checkpoint)."""
    by_class: dict[str, list[str]] = {}
    for ex in examples:
        by_class.setdefault(ex.label, []).append(ex.text)
    counts = {c: len(v) for c, v in by_class.items()}
    n_train, n_test, capped = plan_counts(name, counts, train_per_class, test_per_class, max_per_dataset, min_per_class)
    classes = sorted(by_class)
    rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
    texts, labels = [], []
    for ci, c in enumerate(classes):
        pick = rng.permutation(len(by_class[c]))[: n_train + n_test]
        texts += [by_class[c][i] for i in sorted(pick)]
        labels += [ci] * len(pick)
    return ProbingSample(name, classes, texts, torch.tensor(labels, dtype=torch.long), n_train, n_test, counts, capped)


# ---- resplits and one-vs-rest data --------------------------------------------------------------

def resplit(labels: torch.Tensor, n_train: int, n_test: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Stratified train/test indices: per class, a seeded shuffle of its examples, first n_train
    train, next n_test test. Different seeds reshuffle within the same cached sample."""
    rng = np.random.default_rng([seed, 0x5EED])
    train, test = [], []
    for c in sorted(set(labels.tolist())):
        idx = torch.nonzero(labels == c).flatten().numpy()
        if len(idx) < n_train + n_test:
            raise UserError(f"class {c} has {len(idx)} examples; a split needs {n_train} + {n_test}")
        idx = idx[rng.permutation(len(idx))]
        train.append(idx[:n_train])
        test.append(idx[n_train:n_train + n_test])
    return torch.from_numpy(np.concatenate(train)), torch.from_numpy(np.concatenate(test))


def probed_classes(n_classes: int) -> list[int]:
    """Classes that get a one-vs-rest probe (a 2-class set needs one: the other is its mirror)."""
    return [0] if n_classes == 2 else list(range(n_classes))


def one_vs_rest(labels: torch.Tensor, idx: torch.Tensor, cls: int, seed: int, salt: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Balanced binary data within `idx` (SAEBench's procedure): every example of `cls` is positive;
    negatives are drawn evenly from the other classes (ceil(n_pos / n_other) each), then trimmed to
    n_pos. Returns (example indices, 0/1 labels); deterministic in (seed, cls, salt)."""
    rng = np.random.default_rng([seed, cls, salt, 0x0F2])
    lab = labels[idx]
    pos = idx[lab == cls].numpy()
    others = sorted(set(lab.tolist()) - {cls})
    if not len(pos) or not others:
        raise ValueError(f"class {cls}: one-vs-rest needs positives and at least one other class")
    per = math.ceil(len(pos) / len(others))
    neg = []
    for o in others:
        cand = idx[lab == o].numpy()
        neg.append(cand[rng.permutation(len(cand))[:per]])
    neg = np.concatenate(neg)
    neg = neg[rng.permutation(len(neg))[: len(pos)]]
    both = np.concatenate([pos, neg])
    y = np.concatenate([np.ones(len(pos), dtype=np.int64), np.zeros(len(neg), dtype=np.int64)])
    order = rng.permutation(len(both))
    return torch.from_numpy(both[order]), torch.from_numpy(y[order])


# ---- datasets with their cached activations -----------------------------------------------------

@dataclass
class ProbingSet:
    sample: ProbingSample
    cache: ExampleCache
    pooled_llm: torch.Tensor  # [n, d_in]
    dataset: dict  # provenance (name, source, sha256)

    @property
    def name(self) -> str:
        return self.sample.name


def load_probing_set(ctx, name: str, cfg: ProbingConfigBase) -> ProbingSet:
    """Sample `name` as `cfg` says, then build (or reuse) the cached token activations and pooled LLM
    activations. Both tasks call this with their config, so equal budgets share one cache."""
    examples = data.labeled_examples(name, ctx.data_dir)
    sample = sample_balanced(name, examples, cfg.train_per_class, cfg.test_per_class, cfg.sample_seed,
                             cfg.max_examples_per_dataset, cfg.min_examples_per_class)
    cache = get_example_cache(ctx.lm, ctx.hook, name, sample.texts, cfg.context_length, cache_root=ctx.cache_dir,
                              progress=ctx.progress)
    return ProbingSet(sample, cache, cache.mean_pooled().float(), ctx.dataset_id(name))
