"""Training batches as a pure function of (seed, step): what makes resume exact and DDP simple.

The token stream is an endless sequence of epochs. In each epoch the shards are put in a seeded
random order and taken `buffer_shards` at a time (a "chunk"); the non-special tokens of a chunk
are permuted with a generator seeded by (seed, epoch, chunk). Batch `step` is simply tokens
[step·B, (step+1)·B) of that stream. So a restarted run needs only the step number to continue
with exactly the batches an uninterrupted run would have seen, and every DDP rank can compute
the same global batch and take its own slice.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file

from ..settings import UserError


def seeded_generator(*parts: int) -> torch.Generator:
    """A torch generator seeded by a stable hash of integers (Python's hash() is salted per process)."""
    digest = hashlib.sha256(json.dumps(list(parts)).encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & (2**63 - 1))


class TokenSource:
    """Shuffled, position-addressable batches over shards of activations [n_i, d] (special tokens
    already removed). `load(i)` returns shard i; `lengths[i]` is its token count."""

    def __init__(self, lengths: list[int], load: Callable[[int], torch.Tensor], d_in: int,
                 seed: int = 0, buffer_shards: int = 16, description: str = "activations",
                 identity: dict | None = None):
        if sum(lengths) == 0:
            raise UserError(f"{description}: no (non-special) tokens to train on")
        self.lengths, self._load, self.d_in, self.seed = list(lengths), load, d_in, seed
        self.buffer_shards = max(1, buffer_shards)
        self.tokens_per_epoch = sum(self.lengths)
        self.description = description
        # What the tokens are (cache key, dataset digest, shards used): recorded in the checkpoint so
        # that a run cannot silently resume on, or be described as trained on, other data.
        self.identity = identity
        self._chunk_key: tuple[int, int] | None = None
        self._chunk: torch.Tensor | None = None

    # ---- epoch layout ----
    def _chunks(self, epoch: int) -> list[list[int]]:
        order = torch.randperm(len(self.lengths), generator=seeded_generator(self.seed, epoch)).tolist()
        return [order[i:i + self.buffer_shards] for i in range(0, len(order), self.buffer_shards)]

    def _chunk_tokens(self, epoch: int, c: int) -> torch.Tensor:
        if self._chunk_key != (epoch, c):
            self._chunk = None  # free the previous chunk before loading the next
            shards = [self._load(i) for i in self._chunks(epoch)[c]]
            for i, s in zip(self._chunks(epoch)[c], shards):
                if s.ndim != 2 or s.shape[1] != self.d_in:
                    raise UserError(f"{self.description}: shard {i} has activations of shape {tuple(s.shape)}, "
                                    f"expected width d_in={self.d_in}")
            data = torch.cat(shards)
            perm = torch.randperm(data.shape[0], generator=seeded_generator(self.seed, epoch, c))
            self._chunk, self._chunk_key = data[perm], (epoch, c)
        return self._chunk

    def tokens(self, start: int, count: int) -> torch.Tensor:
        """Stream tokens [start, start + count) as float32 [count, d_in]."""
        out, pos = [], start
        while count > 0:
            epoch, offset = divmod(pos, self.tokens_per_epoch)
            for c, shards in enumerate(self._chunks(epoch)):
                n = sum(self.lengths[i] for i in shards)
                if offset < n:
                    take = min(count, n - offset)
                    out.append(self._chunk_tokens(epoch, c)[offset:offset + take].float())
                    pos, count = pos + take, count - take
                    break
                offset -= n
        return torch.cat(out)

    def batch(self, step: int, batch_size: int) -> torch.Tensor:
        return self.tokens(step * batch_size, batch_size)


def tensor_source(acts: torch.Tensor, seed: int = 0, shard_tokens: int = 1024, buffer_shards: int = 4) -> TokenSource:
    """An in-memory source (tests, benchmarks): `acts` [N, d] split into shards of `shard_tokens`."""
    acts = acts.reshape(-1, acts.shape[-1])
    starts = list(range(0, acts.shape[0], shard_tokens))
    lengths = [min(shard_tokens, acts.shape[0] - s) for s in starts]
    return TokenSource(lengths, lambda i: acts[starts[i]:starts[i] + lengths[i]], acts.shape[-1], seed,
                       buffer_shards, "in-memory activations")


def cache_source(root: str | Path, seed: int = 0, buffer_shards: int = 16, n_shards: int | None = None) -> TokenSource:
    """A source over an activation cache folder (see activations.py): non-special positions only,
    kept in the cache's storage dtype until batched (halves memory for float16 caches). `n_shards`
    takes the first shards only: a cache folder may have been extended by a larger budget, and a
    recipe must train on what it names. Shards are written atomically, so present means whole."""
    root = Path(root)
    if not (root / "spec.json").exists():
        raise UserError(f"{root} is not an activation cache (no spec.json); build it with the recipe's model/hook/dataset")
    meta = json.loads((root / "spec.json").read_text())
    paths = sorted(root.glob("shard_*.safetensors"))
    if n_shards is not None:
        if len(paths) < n_shards:
            raise UserError(f"activation cache {root} has {len(paths)} shards, the recipe needs {n_shards}")
        paths = paths[:n_shards]
    if not paths:
        raise UserError(f"activation cache {root} has no shards")
    lengths = []
    for p in paths:
        with safe_open(str(p), "pt") as f:
            lengths.append(int((f.get_tensor("special") == 0).sum()))

    def load(i: int) -> torch.Tensor:
        try:
            t = load_file(str(paths[i]))
        except Exception as err:
            raise UserError(f"activation cache shard {paths[i]} is unreadable ({err}); delete {root} to rebuild it") from err
        acts = t["acts"]
        return acts.reshape(-1, acts.shape[-1])[t["special"].reshape(-1) == 0]

    identity = {k: meta.get(k) for k in ("key", "model_source", "hook", "dataset", "dataset_sha256", "ctx_len",
                                         "skip_contexts", "dtype", "excluded_positions")}
    identity.update(n_shards=len(paths), tokens=sum(lengths))
    return TokenSource(lengths, load, int(meta["d_in"]), seed, buffer_shards, f"activation cache {root}", identity)
