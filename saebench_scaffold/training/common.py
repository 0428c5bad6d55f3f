"""What the two step implementations (dense reference and sparse fast) share: the per-step context,
the result record, and the tiny collective-communication wrapper that makes one code path serve
both a single process and torchrun/DDP.

Why not torch's DistributedDataParallel: BatchTopK selects over the *global* batch, so the forward
already needs collectives (a global k-th largest value, a global minimum, global variances). Once
the loss is normalised by the global batch size, summing gradients over ranks gives exactly the
single-process gradient, which a plain all_reduce does.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist


class Comm:
    """Collectives over the default process group, or no-ops when there is none."""

    def __init__(self):
        self.world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
        self.rank = dist.get_rank() if self.world > 1 else 0

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def sum(self, t: torch.Tensor) -> torch.Tensor:
        if self.world > 1:
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t

    def min(self, t: torch.Tensor) -> torch.Tensor:
        if self.world > 1:
            dist.all_reduce(t, op=dist.ReduceOp.MIN)
        return t

    def max(self, t: torch.Tensor) -> torch.Tensor:
        if self.world > 1:
            dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return t

    def kth_largest(self, values: torch.Tensor, k: int) -> torch.Tensor:
        """The k-th largest of the union of every rank's `values` (1-D). Each rank first keeps its own
        top k (no rank can contribute more), pads to k with -inf, and the [world, k] set is gathered."""
        local = values.topk(min(k, values.numel()), sorted=False).values if values.numel() else values
        if self.world == 1:
            if local.numel() < k:
                return values.new_tensor(float("-inf"))
            return local.min() if local.numel() == k else local.topk(k, sorted=False).values.min()
        pad = torch.full((k,), float("-inf"), dtype=values.dtype, device=values.device)
        pad[: local.numel()] = local
        parts = [torch.empty_like(pad) for _ in range(self.world)]
        dist.all_gather(parts, pad)
        return torch.cat(parts).topk(k, sorted=False).values.min()


@dataclass
class StepContext:
    """Inputs of one optimisation step besides the batch and the weights."""

    k: int
    """Latents per token; k · global_batch entries are kept over the global batch."""
    global_batch: int
    """Rows in the global batch (all ranks); losses are normalised by it."""
    dead: torch.Tensor | None = None
    """bool [d_sae]: latents counted as dead for the aux-k loss (None or all False: no aux loss)."""
    k_aux: int = 0
    """Aux-k latents per token (d_in / 2 in dictionary_learning), capped by the number of dead."""
    auxk_alpha: float = 1 / 32
    auxk_straight_through: bool = False
    """Aux-k takes each token's top k_aux dead pre-activations whatever their sign and passes the
    gradient straight through the ReLU (forward values stay ReLU'd). False: dictionary_learning's
    aux-k, where a dead latent whose pre-activations are all negative gets no gradient at all."""
    group_ends: list[int] | None = None
    """Matryoshka: cumulative prefix sizes (last = d_sae); None for plain BatchTopK."""
    comm: Comm | None = None
    threshold_guess: float | None = None
    """A value a little below this step's expected BatchTopK threshold (the trainer passes a fraction
    of the last step's smallest kept activation): candidates are then the entries above it, exact
    either way (sparse_ops.candidate_batch_topk)."""

    @property
    def kept(self) -> int:
        return self.k * self.global_batch


@dataclass
class StepResult:
    loss: float
    """Total loss (main + alpha · aux) on the global batch."""
    mse: float
    """Mean over tokens of ||x − x̂||² with the full dictionary."""
    fvu: float
    """Fraction of variance unexplained (variance around the batch mean)."""
    aux_loss: float
    l0: float
    """Kept latents per token."""
    fired: torch.Tensor
    """bool [d_sae]: latents that fired anywhere in the global batch."""
    min_kept: float
    """Smallest positive kept activation in the global batch (feeds the threshold EMA)."""


def scaffold_terms(sae, x: torch.Tensor):
    """(c, p, s, z): centred input, scaffold code p = c V, scaffold output s = p Uᵀ, encoder input z."""
    c = x - sae.b_dec
    if sae.cfg.scaffold_rank:
        p = c @ sae.scaffold_V
        s = p @ sae.scaffold_U.T
    else:
        p = s = None
    z = c - s if (s is not None and sae.cfg.scaffold_mode == "residual") else c
    return c, p, s, z
