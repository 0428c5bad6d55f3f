"""Sparse building blocks of the fast step. A set of kept latents is a list of entries
(row b, latent j, value a), sorted by row; every product below costs O(entries · d_in) instead of
the dense O(B · d_sae · d_in).

  decode       Σ_i a_i W[j_i] into row b_i              (embedding_bag with per-sample weights)
  row_dots     W[j_i] · H[b_i] for each entry            (sampled dense-dense matmul, SDDMM)
  scatter_rows Σ_i a_i H[b_i] into row j_i of a [n, d]   (transposed CSR times dense)
"""

from __future__ import annotations

import warnings
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F



_CUDA_CODE_PATH = False


@contextmanager
def cuda_code_path():
    """Take the branches the CUDA path takes on whatever device the tensors are: torch kernels
    instead of the numpy ones, the bf16 encoder matmul, no reused workspace. CPU-only machines
    test the GPU code this way (tests/training/test_gpu_path.py); nothing else needs it."""
    global _CUDA_CODE_PATH
    before, _CUDA_CODE_PATH = _CUDA_CODE_PATH, True
    try:
        yield
    finally:
        _CUDA_CODE_PATH = before


def gpu_path(t: torch.Tensor) -> bool:
    """Whether `t` takes the CUDA branches (it lives on a GPU, or cuda_code_path() is on)."""
    return t.is_cuda or _CUDA_CODE_PATH


def stable_argsort(t: torch.Tensor) -> torch.Tensor:
    """Stable argsort of integer keys. On CPU numpy's radix sort is 20x faster than torch.sort on the
    skewed key distributions here (a few latents fire on thousands of tokens)."""
    if gpu_path(t):
        return torch.argsort(t, stable=True)
    return torch.from_numpy(t.numpy().argsort(kind="stable"))


def counts(t: torch.Tensor, n: int) -> torch.Tensor:
    """bincount with minlength n (numpy's is much faster than torch's on CPU, for the same reason)."""
    if gpu_path(t):
        return torch.bincount(t, minlength=n)
    return torch.from_numpy(np.bincount(t.numpy(), minlength=n))


@dataclass
class Entries:
    rows: torch.Tensor  # int64 [nnz], non-decreasing
    cols: torch.Tensor  # int64 [nnz]
    vals: torch.Tensor  # float [nnz]
    n_rows: int

    def subset(self, mask: torch.Tensor) -> Entries:
        return self.take(mask.nonzero().squeeze(1))

    def take(self, idx: torch.Tensor) -> Entries:
        """Entries at positions `idx` (increasing positions keep the row order)."""
        return Entries(self.rows.index_select(0, idx), self.cols.index_select(0, idx), self.vals.index_select(0, idx),
                       self.n_rows)

    def split_by(self, group: torch.Tensor, n_groups: int) -> list[Entries]:
        """One Entries per group id in [0, n_groups), each still sorted by row: one stable sort by group
        instead of a boolean mask (and its nonzero) per group and array."""
        order = stable_argsort(group)
        ordered = self.take(order)
        sizes = counts(group, n_groups).tolist()
        parts, start = [], 0
        for size in sizes:
            parts.append(Entries(ordered.rows[start:start + size], ordered.cols[start:start + size],
                                 ordered.vals[start:start + size], self.n_rows))
            start += size
        return parts

    def with_vals(self, vals: torch.Tensor) -> Entries:
        e = Entries(self.rows, self.cols, vals, self.n_rows)
        e._col_order = self.__dict__.get("_col_order")  # same pattern: reuse the column sort
        return e

    def col_order(self) -> torch.Tensor:
        """Permutation sorting the entries by latent (cached: dW_dec and dW_enc share the pattern)."""
        if self.__dict__.get("_col_order") is None:
            self._col_order = stable_argsort(self.cols)
        return self._col_order

    def offsets(self) -> torch.Tensor:
        c = counts(self.rows, self.n_rows)
        return torch.cumsum(c, 0) - c

    def csr(self, n_cols: int) -> torch.Tensor:
        crow = torch.zeros(self.n_rows + 1, dtype=torch.int64, device=self.rows.device)
        crow[1:] = torch.cumsum(counts(self.rows, self.n_rows), 0)
        with warnings.catch_warnings():  # "CSR support is in beta": we test what we use
            warnings.simplefilter("ignore")
            return torch.sparse_csr_tensor(crow, self.cols, self.vals, (self.n_rows, n_cols), check_invariants=False)

    @staticmethod
    def cat(parts: list[Entries]) -> Entries:
        rows = torch.cat([p.rows for p in parts])
        order = stable_argsort(rows)
        return Entries(rows[order], torch.cat([p.cols for p in parts])[order],
                       torch.cat([p.vals for p in parts])[order], parts[0].n_rows)


def decode(e: Entries, W: torch.Tensor) -> torch.Tensor:
    """[n_rows, d]: row b = Σ_{entries in row b} a · W[j]."""
    if e.cols.numel() == 0:
        return W.new_zeros(e.n_rows, W.shape[1])
    return F.embedding_bag(e.cols, W, e.offsets(), mode="sum", per_sample_weights=e.vals.to(W.dtype))


def row_dots(e: Entries, H: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
    """[nnz]: W[j_i] · H[b_i]. SDDMM keeps the CSR entry order, so values line up with `e`."""
    if e.cols.numel() == 0:
        return e.vals.new_zeros(0)
    pattern = e.with_vals(torch.zeros_like(e.vals)).csr(W.shape[0])
    return torch.sparse.sampled_addmm(pattern, H, W.T).values()


def scatter_rows(e: Entries, H: torch.Tensor, n: int, col_start: int = 0, col_end: int | None = None) -> torch.Tensor:
    """[col_end − col_start, d]: row j = Σ_{entries with latent j} a · H[b]  (i.e. Aᵀ H, A the sparse
    [n_rows, n] matrix of the entries), restricted to latents in [col_start, col_end)."""
    col_end = n if col_end is None else col_end
    order = e.col_order()
    t = Entries(e.cols[order] - col_start, e.rows[order], e.vals[order], col_end - col_start)
    if t.rows.numel() == 0:
        return H.new_zeros(col_end - col_start, H.shape[1])
    return torch.sparse.mm(t.csr(e.n_rows), H)


def relu_topk_entries(block: torch.Tensor, k: int, col_ids: torch.Tensor) -> Entries:
    """Entries of relu(top-k per row of `block`) that are > 0, with columns mapped through `col_ids`
    (block column c is latent col_ids[c]). A row with at most k positive values keeps all of them
    — the same set as its top-k after the ReLU — so top-k runs only on rows with more than k."""
    pos = block > 0
    over = (pos.sum(1) > k).nonzero().squeeze(1)
    if over.numel():
        top = torch.zeros_like(pos[over]).scatter_(1, block[over].topk(k, dim=1).indices, True)
        pos[over] = top & pos[over]
    rows, cols = pos.nonzero(as_tuple=True)  # row-major: sorted by row, as Entries needs
    return Entries(rows, col_ids[cols], block[rows, cols], block.shape[0])


def row_topk(pre: torch.Tensor, m: int, block: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact per-row top-m (unsorted) in two cheap passes instead of one top-k over every column.
    A block holding one of a row's top-m values has its maximum ≥ the m-th value, and at most m
    blocks can (each holds a distinct such value), so the m blocks with the largest maxima contain
    the row's top m. Top-m over [B, n/block] maxima, then over the m·block gathered values."""
    B, n = pre.shape
    if n % block or m * block >= n:
        return pre.topk(m, dim=1, sorted=False)
    nb = n // block
    strided = pre.view(B, block, nb)  # block b = columns {b, b + nb, b + 2·nb, ...}: max is vectorised
    top_blocks = strided.amax(1).topk(m, dim=1, sorted=False).indices  # [B, m]
    cand = strided.gather(2, top_blocks.unsqueeze(1).expand(B, block, m)).reshape(B, block * m)
    vals, pos = cand.topk(m, dim=1, sorted=False)
    cols = (pos // m) * nb + top_blocks.gather(1, pos % m)
    return vals, cols


def _flat_indices_above(block: np.ndarray, floor: float, offset: int) -> np.ndarray:
    return np.flatnonzero(block > floor) + offset


def entries_above(pre: torch.Tensor, floor: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(rows, cols, values) of every entry of a contiguous [B, n] `pre` above `floor`, sorted by row.
    On CPU numpy's compare + flatnonzero is ~6x faster than torch's (measured at B 4096, n 4608); it
    runs single-threaded, so row blocks go to torch's thread count of threads (numpy drops the GIL)."""
    B, n = pre.shape
    flat = pre.reshape(-1)
    if gpu_path(pre):
        idx = (flat > floor).nonzero().squeeze(1)
    else:
        a, parts = flat.numpy(), max(1, min(torch.get_num_threads(), B))
        bounds = [B * i // parts * n for i in range(parts + 1)]
        blocks = [(a[lo:hi], floor, lo) for lo, hi in zip(bounds, bounds[1:])]
        if parts == 1:
            found = [_flat_indices_above(*blocks[0])]
        else:
            found = list(_pool(parts).map(lambda args: _flat_indices_above(*args), blocks))
        idx = torch.from_numpy(np.concatenate(found))
    rows = idx // n
    return rows, idx - rows * n, flat.index_select(0, idx)


_POOLS: dict[int, ThreadPoolExecutor] = {}


def _pool(workers: int) -> ThreadPoolExecutor:
    if workers not in _POOLS:
        _POOLS[workers] = ThreadPoolExecutor(workers, thread_name_prefix="entries_above")
    return _POOLS[workers]


def candidate_batch_topk(pre: torch.Tensor, kept: int, kth_largest, any_rank, m0: int,
                         guess: float | None = None) -> Entries:
    """Exact BatchTopK over a [B, n] pre-activation block, without a flat top-k over B·n values.

    With `guess` (a value a little below the expected threshold, e.g. from the last step): every
    entry above it is a candidate and t is the `kept`-th largest over all ranks. When at least
    `kept` entries lie above the guess, every entry ≥ t is among them, so this is exact; otherwise
    (the guess was too high) the per-row path below runs.

    Per-row path: each row offers its top m candidates; the global threshold t is the `kept`-th
    largest candidate (over all ranks, via `kth_largest`). A row whose smallest candidate is still
    ≥ t might hold more values above t than it offered, so it offers a larger top-m and t is
    recomputed, until no row overflows — the result is then the same set as the flat top-k (barring
    exact ties at t)."""
    B, n = pre.shape
    if guess is not None and guess > 0:
        # per-row top-m costs ~3 top-k passes (≈ 12% of a CPU step at B 4096, n 4608); this, one compare
        rows, cols, cand = entries_above(pre, guess)
        t = kth_largest(cand, kept)  # −inf when fewer than `kept` candidates exist over all ranks
        if bool(torch.isfinite(t)):
            keep = (cand >= t).nonzero().squeeze(1)
            return Entries(rows, cols, cand, B).take(keep)
    m = min(m0, n)
    vals, idx = row_topk(pre, m)
    rows = torch.arange(B, device=pre.device).repeat_interleave(m)
    cols, cand = idx.reshape(-1), vals.reshape(-1)
    row_m = torch.full((B,), m, device=pre.device)
    row_min = vals.min(1).values if m else torch.full((B,), float("inf"))
    reordered = False
    while True:
        t = torch.clamp(kth_largest(cand, kept), min=0.0)
        over = (row_m < n) & (row_min >= t) & (row_min > 0)
        if not any_rank(bool(over.any())):
            break
        ro = over.nonzero().squeeze(1)
        if ro.numel() == 0:  # another rank overflowed: join its next threshold round unchanged
            continue
        m2 = min(n, 4 * int(row_m[ro].max()))
        v2, i2 = pre[ro].topk(m2, dim=1, sorted=False)
        stay = (~over[rows]).nonzero().squeeze(1)
        rows = torch.cat([rows.index_select(0, stay), ro.repeat_interleave(m2)])
        cols = torch.cat([cols.index_select(0, stay), i2.reshape(-1)])
        cand = torch.cat([cand.index_select(0, stay), v2.reshape(-1)])
        row_m[ro], row_min[ro] = m2, v2.min(1).values
        reordered = True
    keep = ((cand >= t) & (cand > 0)).nonzero().squeeze(1)
    e = Entries(rows, cols, cand, B).take(keep)
    if reordered:
        order = stable_argsort(e.rows)
        e = Entries(e.rows[order], e.cols[order], e.vals[order], B)
    return e
