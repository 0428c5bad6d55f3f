"""Dense reference step: the BatchTopK / Matryoshka objective written the obvious way and
differentiated by autograd. Slow (dense B × d_sae decoder and encoder-gradient matmuls) but easy
to check by eye; `fast_step.py` must reproduce its loss and gradients.

Objective (dictionary_learning's), on inputs already scaled to unit mean squared norm:
  main  = mean over prefixes g of  (1/B) Σ_b ||x_b − x̂_g,b||²      (one prefix: plain BatchTopK)
  x̂_g   = b_dec + U Vᵀ(x − b_dec) + Σ_{latents j < end_g} f_j W_dec[j]
  aux   = (1/B) Σ_b ||r_b − Σ_{top k_aux dead j} relu(pre)_j W_dec[j]||² / ((1/B) Σ_b ||r_b − r̄||²)
          with r = x − x̂ (full dictionary, detached); straight-through variant: d relu(pre)/d pre
          taken as 1 for the selected entries
  loss  = main + alpha · aux
"""

from __future__ import annotations

import torch

from .common import Comm, StepContext, StepResult, scaffold_terms


def naive_step(sae, x: torch.Tensor, ctx: StepContext) -> StepResult:
    """Forward + backward (gradients accumulate into the parameters' .grad) for this rank's rows."""
    comm = ctx.comm or Comm()
    B = ctx.global_batch
    c, p, s, z = scaffold_terms(sae, x)
    pre = z @ sae.W_enc + sae.b_enc
    relu = torch.relu(pre)
    t = comm.kth_largest(relu.detach().flatten(), ctx.kept)  # global BatchTopK threshold
    keep = (relu.detach() >= t) & (relu.detach() > 0)
    f = relu * keep
    base = sae.b_dec + (s if s is not None else 0)
    ends = ctx.group_ends or [sae.cfg.d_sae]
    main = 0.0
    start = 0
    x_hat = base
    for end in ends:  # nested prefixes: each adds its group's latents to the previous reconstruction
        x_hat = x_hat + f[:, start:end] @ sae.W_dec[start:end]
        main = main + (x - x_hat).pow(2).sum() / B
        start = end
    main = main / len(ends)
    resid = (x - x_hat).detach()
    aux = torch.zeros(())
    if ctx.dead is not None and ctx.dead.any() and ctx.auxk_alpha > 0:
        dead_idx = ctx.dead.nonzero().squeeze(1)
        k_aux = min(ctx.k_aux, dead_idx.numel())
        if ctx.auxk_straight_through:  # top k_aux by pre-activation; forward ReLU'd, gradient 1
            vals, j = pre[:, dead_idx].topk(k_aux, dim=1)
            vals = vals + (torch.relu(vals) - vals).detach()
        else:
            vals, j = relu[:, dead_idx].topk(k_aux, dim=1)
        x_aux = torch.zeros_like(x).index_add(0, torch.arange(x.shape[0]).repeat_interleave(k_aux),
                                             vals.reshape(-1, 1) * sae.W_dec[dead_idx[j.reshape(-1)]])
        denom = _resid_var(resid, B, comm)
        aux = (resid - x_aux).pow(2).sum() / B / denom
    loss = main + ctx.auxk_alpha * aux
    loss.backward()
    return _result(comm, x, resid, f.detach(), main.detach(), aux.detach(), ctx)


def _resid_var(resid: torch.Tensor, B: int, comm: Comm) -> torch.Tensor:
    """(1/B) Σ_b ||r_b − r̄||² over the global batch: from global Σr and Σ||r||²."""
    stats = comm.sum(torch.cat([resid.sum(0), resid.pow(2).sum().reshape(1)]))
    mean = stats[:-1] / B
    return (stats[-1] / B - mean.pow(2).sum()).clamp_min(1e-12)


def _result(comm: Comm, x, resid, f, main, aux, ctx: StepContext) -> StepResult:
    B = ctx.global_batch
    pos = f > 0
    # main and aux are this rank's share (its rows / global B): summing over ranks gives the global value
    stats = comm.sum(torch.stack([resid.pow(2).sum(), pos.sum().float(), main.reshape(()), aux.reshape(())]))
    var = _resid_var(x, B, comm) * B
    fired = comm.max(pos.any(0).to(torch.uint8)).bool()
    min_kept = comm.min(f[pos].min().reshape(1) if pos.any() else x.new_tensor([float("inf")]))
    main_f, aux_f = float(stats[2]), float(stats[3])
    return StepResult(loss=main_f + ctx.auxk_alpha * aux_f, mse=float(stats[0]) / B, fvu=float(stats[0] / var),
                      aux_loss=aux_f, l0=float(stats[1]) / B, fired=fired, min_kept=float(min_kept))
