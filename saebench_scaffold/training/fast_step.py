"""Sparse training step: same objective and gradients as `naive_step.py`, with everything after the
encoder's forward matmul kept sparse and the backward pass written out by hand.

Where the dense step spends its time (B = 4096, d_sae = 4608, d_in = 576): the flat top-k over
B·d_sae values, the dense decoder matmul and its two backward matmuls, and the dense encoder
weight gradient — although only k·B ≈ 3% of the pre-activations receive any gradient. Here:
  * BatchTopK = per-row candidates + one global threshold (sparse_ops.candidate_batch_topk);
  * decoding = embedding_bag over the kept entries;
  * d(loss)/d(kept activation) = SDDMM of the upstream gradient with the decoder rows;
  * encoder and decoder weight gradients = transposed-CSR × dense products with k·B nonzeros;
  * the aux-k loss keeps the positive top-k_aux entries of the dead latents' pre-activations and
    reuses the same sparse kernels (sparse_ops.relu_topk_entries); its straight-through variant
    (recipe 2, `auxk_straight_through`) runs on a dense [B, n_dead] block.
The only dense O(B·d_sae·d_in) work left is the encoder forward (the floor every SAE pays).

Manual backward, derived from the objective in naive_step.py (H = d loss / d reconstruction):
  prefix g:     e_g = x̂_g − x;   a latent of group γ feeds every prefix g ≥ γ, so its upstream
                gradient is H_γ = Σ_{g≥γ} 2 e_g / (G·B); the bias and scaffold feed all: H_0.
  aux:          H_aux = alpha · 2 (x_aux − r) / (B · var(r)); d a_i as below for kept entries
                (straight-through: for every selected entry, positive or not)
  kept entry i: d a_i = W_dec[j_i] · H[b_i];   dW_dec[j] += Σ a_i H[b_i]
  encoder:      dW_enc = zᵀ dpre (sparse), db_enc = column sums of dpre, dz = dpre W_encᵀ (sparse)
  scaffold:     s = p Uᵀ, p = c V, c = x − b_dec:  gs = H_0 (− dz in residual mode),
                dU = gsᵀ p, dV = cᵀ (gs U), dc = dz + gs U Vᵀ, db_dec = Σ_b (H_0 − dc)
"""

from __future__ import annotations

import torch

from .common import Comm, StepContext, StepResult, scaffold_terms
from .sparse_ops import Entries, candidate_batch_topk, decode, gpu_path, relu_topk_entries, row_dots, scatter_rows


def _sq(t: torch.Tensor) -> torch.Tensor:
    """Σ t² in one pass without a squared temporary."""
    v = t.reshape(-1)
    return torch.dot(v, v)


_WORKSPACE: dict = {}


def _workspace(shape: tuple[int, int], like: torch.Tensor) -> torch.Tensor:
    """One reused [B, d_sae] pre-activation buffer off CUDA (whose caching allocator reuses blocks
    anyway): on CPU a fresh 75 MB block each step is mmapped anew and costs ~15 ms of page faults
    (B 4096, d_sae 4608, 2 threads). It never escapes the step: what is kept is copied out."""
    key = (shape, like.dtype, like.device)
    if key not in _WORKSPACE:
        _WORKSPACE.clear()
        _WORKSPACE[key] = torch.empty(shape, dtype=like.dtype, device=like.device)
    return _WORKSPACE[key]


AUX_DENSE_RATIO = 16  # measured on CPU (d_in 576, B 4096): sparse wins below ~1/16 fill of the dead block


@torch.no_grad()
def fast_step(sae, x: torch.Tensor, ctx: StepContext, m0: int | None = None) -> StepResult:
    """Forward + hand-written backward for this rank's rows; gradients accumulate into .grad."""
    comm = ctx.comm or Comm()
    B = ctx.global_batch
    n = sae.cfg.d_sae
    c, p, s, z = scaffold_terms(sae, x)
    if gpu_path(x):  # bf16 only for the one big matmul; everything downstream stays fp32
        with torch.autocast(x.device.type, dtype=torch.bfloat16):
            pre = (z @ sae.W_enc).float() + sae.b_enc
    else:
        pre = torch.addmm(sae.b_enc, z, sae.W_enc, out=_workspace((x.shape[0], n), x))

    # ---- BatchTopK over the global batch ----
    m0 = m0 or max(ctx.k + ctx.k // 2, 8)
    kept = candidate_batch_topk(pre, ctx.kept, comm.kth_largest,
                                lambda flag: bool(comm.max(x.new_tensor([float(flag)]))), m0, ctx.threshold_guess)

    # ---- forward: nested prefixes (one prefix for plain BatchTopK) ----
    ends = ctx.group_ends or [n]
    starts = [0] + ends[:-1]
    base = sae.b_dec + s if s is not None else sae.b_dec.expand_as(x)
    if len(ends) == 1:
        groups = [kept]
        group_of = None
    else:
        group_of = torch.bucketize(kept.cols, torch.tensor(ends, device=x.device), right=True)
        groups = kept.split_by(group_of, len(ends))
    # [B, d_in] passes are a large share of the step once the matmul is the only dense product
    # left: errors are built incrementally and squared sums taken as dot products (no temporaries)
    err = base - x
    errs, sq_err = [], []
    for g in groups:
        err = decode(g, sae.W_dec).add_(err)  # e_g = e_{g-1} + this prefix's decoded latents
        errs.append(err)
        sq_err.append(_sq(err))
    G = len(ends)
    main = torch.stack(sq_err).sum() / (G * B)

    # ---- backward of the main loss ----
    H, scale = [None] * G, 2.0 / (G * B)
    H[G - 1] = errs[G - 1] * scale
    for g in reversed(range(G - 1)):  # H_g = Σ_{g' ≥ g} 2 e_g' / (G·B)
        H[g] = torch.add(H[g + 1], errs[g], alpha=scale)
    dpre_parts = [g_.with_vals(row_dots(g_, H[g], sae.W_dec)) for g, g_ in enumerate(groups)]
    if G == 1:  # used as it comes: no [d_sae, d_in] copy into a preallocated gradient
        dW_dec = scatter_rows(groups[0], H[0], n)
    else:
        dW_dec = torch.cat([scatter_rows(groups[g], H[g], n, st, en) for g, (st, en) in enumerate(zip(starts, ends))])

    # ---- aux-k loss on dead latents (reconstructs the detached residual) ----
    # Only the dead latents' pre-activations are read, and only their positive top-k_aux entries
    # matter (ReLU): a dead latent's pre-activation is rarely positive, so these entries are far
    # fewer than B·n_dead and the aux loss runs on the same sparse kernels as the main loss. When they
    # are not few (early in training, or many dead latents firing weakly), dense matmuls on the
    # [B, n_dead] sub-block are faster: per entry, the sparse kernels cost ~AUX_DENSE_RATIO× a GEMM's.
    e_last = errs[-1]  # = −(the residual the aux-k latents reconstruct)
    aux = x.new_zeros(())
    dpre = dpre_parts[0] if len(dpre_parts) == 1 else Entries.cat(dpre_parts)
    dW_enc_t = scatter_rows(dpre, z, n)  # [n, d] = dpreᵀ z
    db_enc = torch.zeros(n, dtype=x.dtype, device=x.device).index_add_(0, dpre.cols, dpre.vals)
    W_enc_t = sae.W_enc.T.contiguous()
    dz = decode(dpre, W_enc_t)  # dpre @ W_encᵀ
    if ctx.dead is not None and ctx.auxk_alpha > 0 and bool(ctx.dead.any()):
        dead_idx = ctx.dead.nonzero().squeeze(1)
        k_aux = min(ctx.k_aux, dead_idx.numel())
        block = pre.index_select(1, dead_idx)
        stats = comm.sum(torch.cat([e_last.sum(0), sq_err[-1].reshape(1)]))
        denom = (stats[-1] / B - (stats[:-1] / B).pow(2).sum()).clamp_min(1e-12)
        scale = ctx.auxk_alpha * 2.0 / (B * denom)
        if ctx.auxk_straight_through:
            # the top k_aux pre-activations whatever their sign, ReLU'd forward, gradient 1 backward:
            # B·k_aux entries by construction, so always the dense sub-block kernels
            selected = torch.zeros_like(block, dtype=torch.bool).scatter_(1, block.topk(k_aux, dim=1).indices, True)
            A = None
        else:
            A = relu_topk_entries(block, k_aux, dead_idx)
        if A is not None and A.vals.numel() * AUX_DENSE_RATIO < B * dead_idx.numel():  # few entries: sparse kernels
            e_aux = decode(A, sae.W_dec).add_(e_last)
            H_aux = e_aux * scale
            dA = A.with_vals(row_dots(A, H_aux, sae.W_dec))  # only kept positive entries get a gradient
            dW_dec += scatter_rows(A, H_aux, n)
            dW_enc_t += scatter_rows(dA, z, n)
            db_enc.index_add_(0, dA.cols, dA.vals)
            dz += decode(dA, W_enc_t)
        else:  # dense-ish: plain matmuls on the [B, n_dead] sub-block
            if A is not None:
                local = torch.empty(n, dtype=torch.long, device=x.device)
                local[dead_idx] = torch.arange(dead_idx.numel(), device=x.device)
                A_d = x.new_zeros(x.shape[0], dead_idx.numel())
                A_d[A.rows, local[A.cols]] = A.vals
                selected = A_d > 0
            else:
                A_d = block.clamp_min(0).mul_(selected)
            W_dead = sae.W_dec.index_select(0, dead_idx)
            e_aux = torch.addmm(e_last, A_d, W_dead)
            H_aux = e_aux * scale
            dA_d = (H_aux @ W_dead.T) * selected
            dW_dec.index_add_(0, dead_idx, A_d.T @ H_aux)
            dW_enc_t.index_add_(0, dead_idx, dA_d.T @ z)
            db_enc.index_add_(0, dead_idx, dA_d.sum(0))
            dz += dA_d @ W_enc_t.index_select(0, dead_idx)
        aux = _sq(e_aux) / B / denom

    # ---- scaffold and decoder bias ----
    H0 = H[0]
    grads = {"W_enc": dW_enc_t.T, "b_enc": db_enc, "W_dec": dW_dec}
    if p is not None:
        gs = H0 - dz if sae.cfg.scaffold_mode == "residual" else H0
        dp = gs @ sae.scaffold_U
        grads["scaffold_U"] = gs.T @ p
        grads["scaffold_V"] = c.T @ dp
        dc = torch.addmm(dz, dp, sae.scaffold_V.T)
    else:
        dc = dz
    grads["b_dec"] = H0.sum(0) - dc.sum(0)
    for name, g in grads.items():
        param = getattr(sae, name)
        param.grad = g.contiguous() if param.grad is None else param.grad + g

    # ---- statistics (global over ranks) ----
    stats = comm.sum(torch.stack([sq_err[-1], x.new_tensor(float(kept.vals.numel())), main, aux]))
    xs = comm.sum(torch.cat([x.sum(0), _sq(x).reshape(1)]))
    var = xs[-1] - xs[:-1].pow(2).sum() / B
    fired = torch.zeros(n, dtype=torch.uint8, device=x.device)
    fired[kept.cols] = 1
    fired = comm.max(fired).bool()
    min_kept = comm.min(kept.vals.min().reshape(1) if kept.vals.numel() else x.new_tensor([float("inf")]))
    main_f, aux_f = float(stats[2]), float(stats[3])
    return StepResult(loss=main_f + ctx.auxk_alpha * aux_f, mse=float(stats[0]) / B, fvu=float(stats[0] / var),
                      aux_loss=aux_f, l0=float(stats[1]) / B, fired=fired, min_kept=float(min_kept))
