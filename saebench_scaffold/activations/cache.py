"""Activation cache: the LM's residual stream at one hook point for one token set, computed once and
reused by every task and every checkpoint (SAEBench reruns the LM per eval; we do not).

A cache is a folder named by the content key of what determines its data (model weights, hook,
dataset and its content hash, context length, start offset, storage dtype, shard size) holding
shards of contexts (`shard_00000.safetensors`: `acts` [n, ctx, d], `tokens` [n, ctx], `special`
[n, ctx]) and `spec.json`. The number of contexts is not part of the key: a request for N contexts
uses (and if needed extends) the first ceil(N / shard) shards, so every budget reuses the shards
smaller budgets built. The last shard holds only the contexts its budget needs; a larger budget
rebuilds it longer. Shards are written to a temporary name and renamed: an interrupted build
leaves only whole shards, and building again skips them and produces identical data.

Caches are shared by concurrent processes (see `shards.py`): one process builds a cache while the
others wait for its lock, and every shard carries a checksum that readers check once per process;
a damaged or truncated shard is rebuilt with a one-line notice.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file
from tqdm.auto import tqdm

from ..sources import data
from ..sources.hooks import HookPoint, as_hook_point
from ..settings import UserError, atomic_write, cache_dir
from .shards import build_lock, discard_damaged, record_build, save_shard, shard_intact

SHARD_CONTEXTS = 256
CACHE_FORMAT_VERSION = 1


@dataclass(frozen=True)
class CacheSpec:
    model_source: str
    hook: str
    dataset: str
    dataset_sha256: str | None
    ctx_len: int
    n_contexts: int
    skip_contexts: int = 0
    """Contexts skipped at the start of the corpus (disjoint held-out sets use different offsets)."""
    dtype: str = "float32"
    """Storage dtype: float32, or float16 to halve disk use (activations are read back as float32)."""
    shard_contexts: int = SHARD_CONTEXTS

    @property
    def key(self) -> str:
        identity = {k: v for k, v in dataclasses.asdict(self).items() if k != "n_contexts"}
        blob = json.dumps({**identity, "v": CACHE_FORMAT_VERSION}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:20]

    @property
    def n_shards(self) -> int:
        return -(-self.n_contexts // self.shard_contexts)


class ActivationCache:
    def __init__(self, root: Path, spec: CacheSpec):
        self.root, self.spec = root, spec

    @property
    def complete(self) -> bool:
        """Every shard the spec needs is on disk, matches its checksum and holds enough contexts."""
        return all(shard_intact(self.shard_path(i)) and not self.too_short(i) for i in range(self.spec.n_shards))

    def too_short(self, i: int) -> bool:
        """Shard i exists but holds fewer contexts than this spec needs from it: the last shard of a
        smaller budget (built only as far as that budget went), to be rebuilt whole or longer."""
        path = self.shard_path(i)
        if not path.exists():
            return False
        with safe_open(str(path), framework="pt") as f:
            return f.get_slice("tokens").get_shape()[0] < self.contexts_in_shard(i)

    def shard_path(self, i: int) -> Path:
        return self.root / f"shard_{i:05d}.safetensors"

    def load_shard(self, i: int) -> dict[str, torch.Tensor]:
        path = self.shard_path(i)
        try:
            t = load_file(path)
        except Exception as err:
            raise UserError(f"activation cache shard {path} is unreadable ({err}); delete {self.root} to rebuild it") from err
        n = self.contexts_in_shard(i)
        return {"acts": t["acts"][:n].float(), "tokens": t["tokens"][:n].long(), "special": t["special"][:n].bool()}

    def contexts_in_shard(self, i: int) -> int:
        return min(self.spec.shard_contexts, self.spec.n_contexts - i * self.spec.shard_contexts)

    def iter_shards(self) -> Iterator[dict[str, torch.Tensor]]:
        for i in range(self.spec.n_shards):
            yield self.load_shard(i)

    @property
    def d_in(self) -> int:
        return int(json.loads((self.root / "spec.json").read_text())["d_in"])

    def token_count(self, include_special: bool = False) -> int:
        """Tokens in the first n_contexts contexts (reads only the small `special` tensors)."""
        total = 0
        for i in range(self.spec.n_shards):
            with safe_open(str(self.shard_path(i)), framework="pt") as f:
                special = f.get_tensor("special")[: self.contexts_in_shard(i)]
            total += special.numel() if include_special else int((special == 0).sum())
        return total

    def iter_token_batches(self, batch_tokens: int = 8192, limit: int | None = None,
                           include_special: bool = False) -> Iterator[torch.Tensor]:
        """Flattened [b, d] activations in cache order, special positions dropped unless asked."""
        for batch, _ in self.iter_token_batches_with_contexts(batch_tokens, limit, include_special):
            yield batch

    def iter_token_batches_with_contexts(self, batch_tokens: int = 8192, limit: int | None = None,
                                         include_special: bool = False) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """`iter_token_batches`' batches, each with the [b] index of the context every token comes from
        (0-based over the cache): the unit evaluation replicates resample."""
        seen, base = 0, 0
        for shard in self.iter_shards():
            n_ctx, length = shard["acts"].shape[:2]
            acts = shard["acts"].reshape(-1, shard["acts"].shape[-1])
            context = torch.arange(base, base + n_ctx).repeat_interleave(length)
            base += n_ctx
            if not include_special:
                keep = ~shard["special"].reshape(-1)
                acts, context = acts[keep], context[keep]
            for start in range(0, acts.shape[0], batch_tokens):
                batch, ctx = acts[start:start + batch_tokens], context[start:start + batch_tokens]
                if limit is not None:
                    batch, ctx = batch[: limit - seen], ctx[: limit - seen]
                if batch.shape[0] == 0:
                    return
                seen += batch.shape[0]
                yield batch, ctx

    def contexts(self, limit_contexts: int | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(acts, tokens, special) for the first `limit_contexts` contexts, as whole tensors."""
        acts, toks, special, n = [], [], [], 0
        for shard in self.iter_shards():
            take = shard["tokens"].shape[0] if limit_contexts is None else min(limit_contexts - n, shard["tokens"].shape[0])
            acts.append(shard["acts"][:take]); toks.append(shard["tokens"][:take]); special.append(shard["special"][:take])
            n += take
            if limit_contexts is not None and n >= limit_contexts:
                break
        return torch.cat(acts), torch.cat(toks), torch.cat(special)

    def content_id(self) -> dict:
        return {"cache_key": self.spec.key, **dataclasses.asdict(self.spec)}


def cache_spec(lm, hook: HookPoint | str, dataset: str, n_contexts: int, ctx_len: int = data.DEFAULT_CONTEXT,
               skip_contexts: int = 0, dtype: str = "float32", data_dir_override=None,
               shard_contexts: int = SHARD_CONTEXTS) -> CacheSpec:
    ds = data.dataset_id(dataset, data_dir_override)
    return CacheSpec(lm.source_id, str(hook), dataset, ds["sha256"] or ds["source"], ctx_len, n_contexts, skip_contexts,
                     dtype, shard_contexts)


def get_cache(lm, spec: CacheSpec, cache_root=None, data_dir_override=None, batch_contexts: int = 16,
              progress: bool = True) -> ActivationCache:
    """Open the cache for `spec`, building (or finishing, or extending) its shards first if needed."""
    root = cache_dir(cache_root) / "activations" / spec.key
    cache = ActivationCache(root, spec)
    if cache.complete:
        return cache
    build_missing(root, [cache.shard_path(i) for i in range(spec.n_shards)],
                  lambda missing: _build_shards(lm, cache, missing, data_dir_override, batch_contexts, progress),
                  too_short=cache.too_short)
    return cache


def build_missing(root: Path, shard_paths: list[Path], build, too_short=None) -> None:
    """Under the cache's build lock (one builder per cache; others wait here, then find the shards
    built): drop damaged shards, then `build(indices)` for the absent ones and those `too_short(i)`
    says a larger budget outgrew. A short shard stays in place until its longer version is renamed
    over it, so a process still reading the smaller budget never finds it missing."""
    with build_lock(root):
        for path in shard_paths:
            discard_damaged(path)
        missing = [i for i, path in enumerate(shard_paths)
                   if not path.exists() or (too_short is not None and too_short(i))]
        if missing:
            build(missing)


def _build_shards(lm, cache: ActivationCache, missing: list[int], data_dir_override, batch_contexts: int,
                  progress: bool) -> None:
    spec, root = cache.spec, cache.root
    root.mkdir(parents=True, exist_ok=True)
    meta = {k: v for k, v in dataclasses.asdict(spec).items() if k != "n_contexts"}
    atomic_write(root / "spec.json", json.dumps({**meta, "key": spec.key, "d_in": lm.hook_width(spec.hook),
                                                 "excluded_positions": "position 0 (BOS) and tokenizer special tokens"}, indent=2))
    per = spec.shard_contexts
    # Contexts are a deterministic stream: start at the first missing shard and skip the ones on disk.
    contexts = data.token_contexts(lm, spec.dataset, (spec.n_shards - missing[0]) * per, spec.ctx_len,
                                   data_dir_override, skip_contexts=spec.skip_contexts + missing[0] * per)
    store_dtype = getattr(torch, spec.dtype)
    hook = as_hook_point(spec.hook)  # parsed once for every batch
    bar = tqdm(total=sum(cache.contexts_in_shard(i) for i in missing) * spec.ctx_len, unit="tok", unit_scale=True,
               desc=f"caching {spec.hook} on {spec.dataset}", disable=not progress)
    for shard_idx in range(missing[0], spec.n_shards):
        # A shard holds only the contexts this budget needs (the last one may be short: a 16-context
        # CE set must not pay for a 64-context shard); a larger budget rebuilds a short last shard.
        n = per if shard_idx not in missing else cache.contexts_in_shard(shard_idx)
        toks = torch.stack([next(contexts) for _ in range(n)])
        if shard_idx not in missing:
            continue
        acts = []
        for start in range(0, n, batch_contexts):
            batch = toks[start:start + batch_contexts]
            a = lm.hook_activations(batch, hook)
            if not torch.isfinite(a).all():
                raise UserError(f"model produced non-finite activations at {spec.hook} (shard {shard_idx})")
            acts.append(a.to(store_dtype).cpu())
            bar.update(batch.numel())
        tensors = {"acts": torch.cat(acts).contiguous(), "tokens": toks.to(torch.int32),
                   "special": lm.special_mask(toks).to(torch.uint8)}
        save_shard(tensors, cache.shard_path(shard_idx), shards_left=sum(i >= shard_idx for i in missing))
        record_build(root, cache.shard_path(shard_idx).name)
    bar.close()


# ---- per-example activations (labeled sets: probing, TPP, MMLU topic) ----------------------------

@dataclass(frozen=True)
class ExampleSetSpec:
    model_source: str
    hook: str
    name: str
    """Human-readable id of the example set (e.g. `ag_news`)."""
    content_sha256: str
    """Hash of the exact texts, in order: two example sets with the same texts share a cache."""
    n_examples: int
    ctx_len: int = data.DEFAULT_CONTEXT
    dtype: str = "float16"
    shard_examples: int = 256

    @property
    def key(self) -> str:
        blob = json.dumps({**dataclasses.asdict(self), "v": CACHE_FORMAT_VERSION}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:20]

    @property
    def n_shards(self) -> int:
        return -(-self.n_examples // self.shard_examples)


class ExampleCache:
    """Token-level hook activations of a list of texts: each text is BOS + up to ctx_len − 1 tokens,
    right-padded. `mask` is True at real, non-special tokens (what tasks pool over)."""

    def __init__(self, root: Path, spec: ExampleSetSpec):
        self.root, self.spec = root, spec

    def shard_path(self, i: int) -> Path:
        return self.root / f"shard_{i:05d}.safetensors"

    def iter_batches(self, batch_examples: int = 64) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(acts float32 [b, ctx, d], mask bool [b, ctx]) in example order."""
        for i in range(self.spec.n_shards):
            t = load_file(self.shard_path(i))
            for s in range(0, t["acts"].shape[0], batch_examples):
                yield t["acts"][s:s + batch_examples].float(), t["mask"][s:s + batch_examples].bool()

    def mean_pooled(self) -> torch.Tensor:
        """[n, d] LLM activations mean-pooled over each example's mask (SAEBench's probing input)."""
        path = self.root / "mean_pooled.safetensors"
        if shard_intact(path):
            return load_file(path)["pooled"]
        discard_damaged(path)
        pooled = torch.cat([masked_mean(a, m) for a, m in self.iter_batches()])
        save_shard({"pooled": pooled}, path)
        return pooled

    def token_count(self) -> int:
        return sum(int(m.sum()) for _, m in self.iter_batches(1024))


def masked_mean(acts: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over positions where mask is True: [b, ctx, d] x [b, ctx] -> [b, d]."""
    m = mask.unsqueeze(-1).to(acts.dtype)
    return (acts * m).sum(1) / m.sum(1).clamp_min(1)


def texts_sha256(texts: list[str]) -> str:
    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode("utf-8"))
        h.update(b"\0")
    return h.hexdigest()


def get_example_cache(lm, hook: HookPoint | str, name: str, texts: list[str], ctx_len: int = data.DEFAULT_CONTEXT,
                      dtype: str = "float16", cache_root=None, batch_examples: int = 16,
                      progress: bool = True) -> ExampleCache:
    """Build (or resume, or reuse) the per-example activation cache of `texts`."""
    if not texts:
        raise UserError(f"example set {name}: no texts")
    spec = ExampleSetSpec(lm.source_id, str(hook), name, texts_sha256(texts), len(texts), ctx_len, dtype)
    root = cache_dir(cache_root) / "examples" / spec.key
    cache = ExampleCache(root, spec)
    if all(shard_intact(cache.shard_path(i)) for i in range(spec.n_shards)):
        return cache
    build_missing(root, [cache.shard_path(i) for i in range(spec.n_shards)],
                   lambda missing: _build_example_shards(lm, cache, texts, missing, batch_examples, progress))
    return cache


def _build_example_shards(lm, cache: ExampleCache, texts: list[str], missing: list[int], batch_examples: int,
                          progress: bool) -> None:
    spec, root = cache.spec, cache.root
    hook, name, ctx_len, dtype = as_hook_point(spec.hook), spec.name, spec.ctx_len, spec.dtype
    root.mkdir(parents=True, exist_ok=True)
    atomic_write(root / "spec.json", json.dumps({**dataclasses.asdict(spec), "d_in": lm.hook_width(hook)}, indent=2))
    pad = lm.tokenizer.pad_token_id if lm.tokenizer.pad_token_id is not None else lm.bos_token_id
    store_dtype = getattr(torch, dtype)
    bar = tqdm(total=sum(min(spec.shard_examples, spec.n_examples - i * spec.shard_examples) for i in missing),
               unit="ex", desc=f"caching {hook} on {name}", disable=not progress)
    for shard_idx in missing:
        chunk = texts[shard_idx * spec.shard_examples:(shard_idx + 1) * spec.shard_examples]
        ids = [[lm.bos_token_id] + x[: ctx_len - 1] for x in data.document_ids(lm, chunk)]
        if any(len(x) < 2 for x in ids):
            empty = next(i for i, x in enumerate(ids) if len(x) < 2) + shard_idx * spec.shard_examples
            raise UserError(f"example set {name}: text #{empty} tokenizes to nothing")
        tokens = torch.full((len(ids), ctx_len), pad, dtype=torch.long)
        valid = torch.zeros(len(ids), ctx_len, dtype=torch.bool)
        for i, x in enumerate(ids):
            tokens[i, :len(x)] = torch.tensor(x)
            valid[i, :len(x)] = True
        acts = torch.zeros(len(ids), ctx_len, lm.hook_width(hook), dtype=store_dtype)
        # Sort by length so each forward pass pads as little as possible; causal attention means
        # right-padding never changes the activations of real tokens.
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        for s in range(0, len(order), batch_examples):
            idx = order[s:s + batch_examples]
            width = max(len(ids[i]) for i in idx)
            a = lm.hook_activations(tokens[idx, :width], hook)
            acts[idx, :width] = a.to(store_dtype).cpu()
            bar.update(len(idx))
        mask = valid & ~lm.special_mask(tokens)
        save_shard({"acts": acts, "tokens": tokens.to(torch.int32), "mask": mask.to(torch.uint8)}, cache.shard_path(shard_idx),
                   shards_left=sum(i >= shard_idx for i in missing))
        record_build(root, cache.shard_path(shard_idx).name)
    bar.close()
