"""Shared machinery of the `sparse_probing`, `tpp` and `scr` tasks: class-balanced example samples,
their cached LLM activations, resplits, one-vs-rest probe data, SAE feature pooling, probes, and
latent ablation with the SAE error kept.

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

import hashlib
import json
import math
import warnings
import zlib
from collections.abc import Iterable
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from pydantic import Field, field_validator

from ..sources import data
from ..activations.cache import ExampleCache, get_example_cache, masked_mean
from ..settings import UserError, atomic_write, cache_dir
from .base import TaskConfig

PROBING_CACHE_VERSION = 1
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


def mean_diff_order(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Features by decreasing |mean over positives − mean over negatives| (ties: lower index first)."""
    xn, yn = x.numpy(), y.numpy()
    diff = np.abs(xn[yn == 1].mean(0, dtype=np.float64) - xn[yn == 0].mean(0, dtype=np.float64))
    return torch.from_numpy(np.argsort(-diff, kind="stable"))


def top_k_mean_diff(x: torch.Tensor, y: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the k features with the largest |mean over positives − mean over negatives|."""
    return mean_diff_order(x, y)[:k]


# ---- probes -------------------------------------------------------------------------------------

_CONTROLLER = None


def _blas_controller():
    """One threadpoolctl controller (discovering the BLAS libraries costs milliseconds per call)."""
    global _CONTROLLER
    if _CONTROLLER is None:
        import sklearn.linear_model  # noqa: F401 - load scipy's and sklearn's BLAS before discovery
        from threadpoolctl import ThreadpoolController

        _CONTROLLER = ThreadpoolController()
    return _CONTROLLER


@contextmanager
def small_ops():
    """Single-threaded torch and BLAS for the many small probe and ablation operations: on a
    shared 2-core machine the thread pools made them 20-50x slower. The SAE encoder pass (large
    matrix products) stays outside and keeps every thread."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with _blas_controller().limit(limits=1, user_api="blas"):
            yield
    finally:
        torch.set_num_threads(n)


@dataclass
class LinearProbe:
    """A logistic-regression probe in the raw feature space: logit = x · w + b."""

    w: torch.Tensor  # [d] float64
    b: float

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return x.double() @ self.w + self.b

    def accuracy(self, x: torch.Tensor, y: torch.Tensor) -> float:
        return ((self.logits(x) > 0).long() == y).double().mean().item()


def fit_probe(x: torch.Tensor, y: torch.Tensor, C: float = 1.0, max_iter: int = 1000, standardize: bool = False) -> LinearProbe:
    """sklearn LogisticRegression (L2, lbfgs) as SAEBench trains its probes (raw features, no
    scaling, max_iter 1000). With `standardize`, features are z-scored on the training data and the
    weights folded back into the raw space. BLAS runs single-threaded: these problems are small, and
    OpenBLAS' thread pool on a shared 2-core machine made them ~50x slower."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    xn = x.double().numpy()
    yn = y.numpy()
    if len(np.unique(yn)) < 2:
        raise ValueError("a probe needs both labels in its training data")
    mean = np.zeros(xn.shape[1])
    scale = np.ones(xn.shape[1])
    if standardize:
        mean = xn.mean(0)
        scale = xn.std(0)
        scale[scale == 0] = 1.0
        xn = (xn - mean) / scale
    with warnings.catch_warnings(), _blas_controller().limit(limits=1, user_api="blas"):
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf = LogisticRegression(C=C, max_iter=max_iter)
        clf.fit(xn, yn)
    w = clf.coef_[0] / scale
    b = float(clf.intercept_[0] - (w * mean).sum())
    return LinearProbe(torch.from_numpy(w), b)


# ---- pooled SAE features ------------------------------------------------------------------------

@dataclass
class PooledFeatures:
    latents: torch.Tensor  # [n, d_sae] float32: latents mean-pooled over each example's mask
    nonzero: int  # Σ over tokens of the number of non-zero latents
    n_tokens: int

    @property
    def l0(self) -> float:
        return self.nonzero / max(self.n_tokens, 1)


@torch.no_grad()
def pool_sae_latents(sae, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], token_chunk: int = 4096) -> PooledFeatures:
    """Per-token SAE latents of masked tokens, mean-pooled per example with the same mask as the
    LLM activations. `batches` yields (acts [b, ctx, d], mask [b, ctx])."""
    param = sae.W_enc
    out, nonzero, n_tok = [], 0, 0
    for acts, mask in batches:
        b = acts.shape[0]
        owner = torch.arange(b).unsqueeze(1).expand_as(mask)[mask]
        x = acts[mask]
        pooled = torch.zeros(b, sae.d_sae, dtype=torch.float64)
        for s in range(0, x.shape[0], token_chunk):
            f = sae.encode(x[s:s + token_chunk].to(param.device, param.dtype)).float()
            nonzero += int(torch.count_nonzero(f))
            # per-example sums as one matrix product with a 0/1 token -> example matrix (index_add
            # over [tokens, d_sae] was several times slower on CPU)
            rows = owner[s:s + token_chunk].to(f.device)
            onehot = torch.zeros(b, f.shape[0], dtype=f.dtype, device=f.device)
            onehot[rows, torch.arange(f.shape[0], device=f.device)] = 1.0
            pooled += (onehot @ f).double().cpu()
        counts = mask.sum(1, keepdim=True).clamp_min(1)
        out.append((pooled / counts).float())
        n_tok += x.shape[0]
    return PooledFeatures(torch.cat(out), nonzero, n_tok)


@torch.no_grad()
def pooled_scaffold(sae, pooled_llm: torch.Tensor) -> torch.Tensor:
    """Mean-pooled scaffold output. The scaffold is affine (U Vᵀ (x − b_dec)), so pooling its
    per-token output equals applying it to the pooled activations."""
    p = sae.W_enc
    return sae.scaffold(pooled_llm.to(p.device, p.dtype)).float().cpu()


def _weights_version(sae) -> tuple:
    return tuple((id(t), t._version) for t in sae.state_dict(keep_vars=True).values())


_POOL_MEMO: dict[str, Any] = {"sae": None, "version": None, "entries": {}}


def sae_pooled_cached(sae, cache: ExampleCache, batch_examples: int = 32) -> PooledFeatures:
    """`pool_sae_latents` over an example cache, memoised for the checkpoint most recently scored
    (both tasks share the encoder pass; a changed weight invalidates it)."""
    import weakref

    ref = _POOL_MEMO["sae"]
    version = _weights_version(sae)
    if ref is None or ref() is not sae or _POOL_MEMO["version"] != version:
        _POOL_MEMO.update(sae=weakref.ref(sae), version=version, entries={})
    key = cache.spec.key
    if key not in _POOL_MEMO["entries"]:
        _POOL_MEMO["entries"][key] = pool_sae_latents(sae, cache.iter_batches(batch_examples))
    return _POOL_MEMO["entries"][key]


def clear_memo(pooled: bool = True, probes: bool = True) -> None:
    """Forget memoised pooled latents and/or in-memory probe results (the on-disk memo stays)."""
    if pooled:
        _POOL_MEMO.update(sae=None, version=None, entries={})
    if probes:
        _PROBE_MEMO.clear()


# ---- latent ablation with the SAE error kept (tpp, scr) ------------------------------------------

def decoder_matrix(sae, task: str = "tpp") -> torch.Tensor:
    """The decoder rows [d_sae, d_in] `task` scores and ablates latents along, or a UserError."""
    what = f"{type(sae).__name__} ({getattr(getattr(sae, 'cfg', None), 'architecture', '?')})"
    try:
        w = sae.W_dec
        sae.decoder_directions  # noqa: B018 - must exist
    except (AttributeError, NotImplementedError) as err:
        raise UserError(f"{task} needs the checkpoint's decoder directions (W_dec) to score and ablate latents; "
                        f"{what} has none ({err})") from err
    if w is None or w.ndim != 2 or tuple(w.shape) != (sae.d_sae, sae.d_in):
        raise UserError(f"{task} needs decoder directions of shape (d_sae, d_in); {what} has "
                        f"{None if w is None else tuple(w.shape)}")
    w = w.detach().double().cpu()
    if not torch.isfinite(w).all() or not w.abs().sum():
        raise UserError(f"{task}: the decoder directions of {what} are all zero or not finite")
    return w


def select_top_n(scores: torch.Tensor, n: int) -> torch.Tensor:
    """Indices of the top-n scores among latents with a non-zero score (SAEBench's selection)."""
    nonzero = torch.nonzero(scores).flatten()
    if nonzero.numel() == 0:
        return nonzero
    return nonzero[torch.topk(scores[nonzero], min(n, nonzero.numel())).indices]


def ablate_pooled(pooled_llm: torch.Tensor, pooled_f: torch.Tensor, W_dec: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
    """Mean-pooled x − (f − f_abl) W_dec, from pooled x and pooled f (exact: the edit is linear)."""
    if latents.numel() == 0:
        return pooled_llm.double()
    return pooled_llm.double() - pooled_f[:, latents].double() @ W_dec[latents].double()


@torch.no_grad()
def ablate_tokens(sae, acts: torch.Tensor, mask: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
    """Literal per-token version: x' = decode(f_abl) + scaffold(x) + (x − sae(x)) at every token,
    then mean-pooled over `mask`. [b, ctx, d] -> [b, d]."""
    f = sae.encode(acts)
    error = acts - sae(acts)
    f_abl = f.clone()
    f_abl[..., latents] = 0
    edited = sae.decode(f_abl) + sae.scaffold(acts) + error
    return masked_mean(edited, mask)


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


# ---- memo of checkpoint-independent results -----------------------------------------------------

_PROBE_MEMO: dict[str, Any] = {}


def memo_key(*parts) -> str:
    blob = json.dumps([PROBING_CACHE_VERSION, *parts], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def memoised_json(cache_root, key: str, compute):
    """In-memory then on-disk (`<cache_dir>/probing/<key>.json`) memo of a JSON-able result."""
    if key in _PROBE_MEMO:
        return _PROBE_MEMO[key]
    path = cache_dir(cache_root) / "probing" / f"{key}.json"
    value = None
    if path.exists():
        try:
            value = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            value = None  # unreadable: recompute and overwrite
    if value is None:
        value = compute()
        atomic_write(path, json.dumps(value))
    _PROBE_MEMO[key] = value
    return value


# ---- statistics and comparisons -----------------------------------------------------------------

def mean_std(values: Iterable[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof = 1) over resplits."""
    v = np.asarray(list(values), dtype=np.float64)
    if v.size == 0:
        return float("nan"), float("nan")
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0


def with_std(per_resplit: dict[str, list[float]]) -> dict[str, float]:
    """{metric: [value per resplit]} -> {metric: mean, metric_std: std}."""
    out = {}
    for k, vals in per_resplit.items():
        out[k], out[f"{k}_std"] = mean_std(vals)
    return out


def average_datasets(per_dataset: dict[str, dict[str, list[float]]]) -> dict[str, list[float]]:
    """Per resplit, the mean over datasets: the averaged metric's std is its resplit noise."""
    metrics = next(iter(per_dataset.values())).keys()
    out = {}
    for m in metrics:
        series = [per_dataset[d][m] for d in per_dataset]
        out[m] = [sum(vals) / len(vals) for vals in zip(*series)]
    return out


def resplit_seeds(base_seed: int, n: int) -> list[int]:
    return [base_seed * 1000 + r for r in range(n)]


def _metrics_of(result) -> dict:
    if hasattr(result, "metrics"):
        result = result.metrics
    elif hasattr(result, "eval_result_metrics"):
        result = result.eval_result_metrics
    if isinstance(result, dict) and "eval_result_metrics" in result:
        result = result["eval_result_metrics"]
    flat = {}
    for k, v in result.items():
        if isinstance(v, dict):
            flat.update({f"{k}/{m}": x for m, x in v.items() if isinstance(x, (int, float))})
        elif isinstance(v, (int, float)):
            flat[k] = v
    return flat


def compare_noise(result_a, result_b, n_sigma: float = 1.0) -> dict[str, dict]:
    """Compare two checkpoints' results metric by metric (every metric with a `_std` companion in
    both). The spread of the difference is √(std_a² + std_b²) (independent resplit noise); a metric
    is `noise_dominated` when n_sigma × spread ≥ |difference|: the ranking it implies is not
    supported by the data. Accepts result-file dicts, EvalResult / TaskOutput objects or metric dicts."""
    a, b = _metrics_of(result_a), _metrics_of(result_b)
    out = {}
    for key, va in a.items():
        if key.endswith("_std") or key + "_std" not in a or key not in b or key + "_std" not in b:
            continue
        diff = va - b[key]
        spread = math.sqrt(a[key + "_std"] ** 2 + b[key + "_std"] ** 2)
        out[key] = {"a": va, "b": b[key], "diff": diff, "spread": spread,
                    "noise_dominated": bool(n_sigma * spread >= abs(diff))}
    return out


__all__ = [
    "ProbingSample", "ProbingSet", "LinearProbe", "PooledFeatures", "plan_counts", "sample_balanced", "resplit",
    "probed_classes", "one_vs_rest", "mean_diff_order", "top_k_mean_diff", "fit_probe", "pool_sae_latents", "pooled_scaffold",
    "sae_pooled_cached", "load_probing_set", "memoised_json", "memo_key", "mean_std", "with_std", "resplit_seeds",
    "compare_noise", "ProbingConfigBase", "average_datasets", "clear_memo", "small_ops", "decoder_matrix", "select_top_n",
    "ablate_pooled", "ablate_tokens",
]
