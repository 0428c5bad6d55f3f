"""What a task is, and what it gets to work with.

A task is a class with a name, a version, a pydantic `Config` (its `eval_config`, defaults filled
in) and `run(ctx, sae, config) -> TaskOutput`. `EvalContext` gives every task the same shared,
cached resources — the model, activation caches, labeled datasets — so that running five tasks on
ten checkpoints runs the language model once per token set, not fifty times.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, ClassVar

import torch
from pydantic import BaseModel, ConfigDict

from ..sources import data
from ..activations.cache import SHARD_CONTEXTS, ActivationCache, cache_spec, get_cache
from ..sources.hooks import HookPoint, as_hook_point
from ..sources.model import LanguageModel, ModelSpec, load_model
from ..sources.processing import Processing, processed
from ..saes import SAE
from ..saes.pca import ActivationPCA, fit_pca
from ..settings import UserError
from .declarations import Column, SAEBenchExport

# Token sets drawn from the text corpus (context indices; the local Wikipedia sample has ~58,900).
# Bundled baselines train on [0, 16384) and PCA is fitted there too; density/FVU read from 20,000 on
# and CE from 50,000 on, so evaluation never overlaps training data. These offsets are in the full
# corpora's layout; `text_cache` maps them onto the corpus read (the small embedded sample has its own
# starts, data.EMBEDDED_LAYOUT) and refuses a set that would run into the next one.
TRAIN_OFFSET_CONTEXTS = data.FULL_LAYOUT.train
TRAIN_CACHE_DTYPE = "float16"
EVAL_SHARD_CONTEXTS = 64  # small shards: a --limit smoke run computes little more than it asks for
EVAL_OFFSET_CONTEXTS = data.FULL_LAYOUT.eval
CE_OFFSET_CONTEXTS = data.FULL_LAYOUT.ce


class TaskConfig(BaseModel):
    """Base of every task's `eval_config`. Unknown keys are errors (a typo must not pass silently)."""

    model_config = ConfigDict(extra="forbid")


def sorted_positive_ints(values: list[int], name: str) -> list[int]:
    """Validator body for list-of-sizes settings (k values, ablation counts): sorted, unique, >= 1."""
    if not values or any(v < 1 for v in values):
        raise ValueError(f"{name} must be a non-empty list of positive integers")
    return sorted(set(values))


@dataclass
class TaskOutput:
    metrics: dict[str, dict[str, Any]]
    """`eval_result_metrics`: metric name -> value, nested by category (SAEBench layout)."""
    details: list[dict[str, Any]] = field(default_factory=list)
    """`eval_result_details`: per-latent or per-dataset rows."""
    unstructured: Any = None
    datasets: list[dict] = field(default_factory=list)
    """Identity (name, source, sha256) of every dataset read, for provenance."""
    token_counts: dict[str, int] = field(default_factory=dict)


class Task:
    """A task: how to run it, and every fact the rest of the package needs about it (declarations.py)."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    version: ClassVar[int] = 1
    Config: ClassVar[type[TaskConfig]] = TaskConfig
    summary_metrics: ClassVar[tuple[tuple[str, str], ...]] = ()
    """(category, key) headline metrics: printed by `eval`, compared by `leaderboard verify`, must be finite."""
    presets: ClassVar[dict[str, dict]] = {}
    """Config overrides per named budget (`execution.request.PRESETS`, e.g. {"saebench": {...}}); `quick`
    is the Config defaults. Applied after the task file's `config:`, before `--set`."""
    metric_ranges: ClassVar[tuple[tuple[str, float | str, float | str], ...]] = ()
    """(pattern, low, high) rules the leaderboard range-checks this task's metrics with, in the format of
    `leaderboard/ranges.py` ("category.key" or "details.key" fnmatch patterns, first match wins; "d_sae" /
    "d_in" for the checkpoint's sizes). Metrics no rule matches are not range-checked."""
    aggregate_check: ClassVar[Callable[[Any], list[tuple[str, str]]] | None] = None
    """result -> [(field, problem)]: headline metrics recomputed from the file's own details (wrap the
    function in `staticmethod`). None: the leaderboard has nothing to recompute."""
    leaderboard_columns: ClassVar[tuple[Column, ...]] = ()
    """The columns this task adds to the leaderboard table and page (`declarations.table_column`)."""
    leaderboard_order: ClassVar[int] = 1000
    """Where its columns go: tasks sort by (order, name); the built-in tasks use 10-80, plugins default after them."""
    saebench_export: ClassVar[SAEBenchExport | None] = None
    """How `export-saebench` writes its results in SAEBench's layout; None: SAEBench has no such eval."""

    def make_config(self, overrides: dict | None = None, limit: int | None = None) -> TaskConfig:
        """Defaults, then task-file overrides, then `--limit` (each task says what it caps)."""
        if limit is not None and limit < 1:
            raise UserError(f"--limit must be a positive number of tokens or examples (got {limit})")
        cfg = self.Config(**(overrides or {}))
        return self.apply_limit(cfg, limit) if limit else cfg

    def apply_limit(self, cfg: TaskConfig, limit: int) -> TaskConfig:
        return cfg

    def run(self, ctx: EvalContext, sae: SAE, cfg: TaskConfig) -> TaskOutput:  # pragma: no cover
        raise NotImplementedError


def check_headline_finite(task: Task, out: TaskOutput) -> None:
    """A headline metric (the task's `summary_metrics`) that is NaN or infinite means broken inputs —
    a diverged or damaged checkpoint, bad activations — so the task fails instead of reporting `ok`."""
    bad = []
    for category, key in task.summary_metrics:
        value = out.metrics.get(category, {}).get(key)
        if isinstance(value, numbers.Real) and not math.isfinite(value):
            bad.append(f"{category}.{key} = {value}")
    if bad:
        raise UserError(f"task {task.name}: headline metric {', '.join(bad)} is not finite; no result written "
                        "(check the checkpoint's weights for NaN/inf)")


@dataclass
class EvalContext:
    """Shared resources for one `eval` invocation (many checkpoints × many tasks)."""

    model: ModelSpec
    hook: HookPoint
    """Where the checkpoints read (a name is parsed on construction); `str(hook)` is its key."""
    data_dir: str | None = None
    cache_dir: str | None = None
    seed: int = 0
    progress: bool = True
    processing: Processing | None = None
    """TransformerLens weight processing the checkpoints were trained under (SAELens configs)."""
    given: LanguageModel | None = None
    """A model the caller already holds (a HookedTransformer, through `TransformerLensModel`)."""
    memo: dict = field(default_factory=dict, repr=False)
    """Checkpoint-independent results computed once per invocation (PCA fits, loaded token sets)."""

    def __post_init__(self):
        self.hook = as_hook_point(self.hook)

    @cached_property
    def lm(self) -> LanguageModel:
        """The model as the checkpoints see it: with `processing`, a view whose activations (and
        activation caches) are the processed model's."""
        base = self.given if self.given is not None else load_model(self.model, self.cache_dir)
        return processed(base, self.processing, self.hook)

    def text_cache(self, n_contexts: int, offset: int = EVAL_OFFSET_CONTEXTS, dataset: str = "wikipedia",
                   ctx_len: int = data.DEFAULT_CONTEXT, dtype: str = "float32",
                   shard_contexts: int = EVAL_SHARD_CONTEXTS) -> ActivationCache:
        """Hook activations of `n_contexts` corpus contexts starting at `offset` (built once, then reused)."""
        offset = data.place_token_set(dataset, offset, -(-n_contexts // shard_contexts) * shard_contexts, self.data_dir)
        spec = cache_spec(self.lm, self.hook, dataset, n_contexts, ctx_len, offset, dtype, self.data_dir, shard_contexts)
        return get_cache(self.lm, spec, self.cache_dir, self.data_dir, progress=self.progress)

    def train_cache(self, n_contexts: int, dataset: str = "wikipedia") -> ActivationCache:
        """The training split (where the bundled baselines were trained): for fitting PCA and other
        reference statistics without touching evaluation tokens."""
        return self.text_cache(n_contexts, TRAIN_OFFSET_CONTEXTS, dataset, dtype=TRAIN_CACHE_DTYPE,
                               shard_contexts=SHARD_CONTEXTS)

    def train_pca(self, n_tokens: int, dataset: str = "wikipedia") -> ActivationPCA:
        """PCA of the first `n_tokens` training-split tokens (never evaluation tokens), fitted once."""
        key = ("pca", n_tokens, dataset)
        if key not in self.memo:
            cache = self.train_cache(math.ceil(n_tokens / (data.DEFAULT_CONTEXT - 1)), dataset)
            self.memo[key] = fit_pca(cache.iter_token_batches(), limit=n_tokens)
        return self.memo[key]

    def dataset_id(self, name: str) -> dict:
        return data.dataset_id(name, self.data_dir)

    def generator(self, salt: int = 0) -> torch.Generator:
        return torch.Generator().manual_seed(self.seed * 1_000_003 + salt)
