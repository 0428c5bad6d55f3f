"""Resampling dead latents toward badly reconstructed inputs (Anthropic, "Towards Monosemanticity",
2023), adapted to the hybrid SAE: a dead latent's decoder row is pointed at the *residual* x − x̂ of
a token drawn with probability ∝ ||x − x̂||², not at the input, because in a hybrid SAE the input
also holds the scaffold's part, which the dictionary should not relearn.

Per resampled latent j (token i):  W_dec[j] = r_i / ||r_i||;  W_enc[:, j] = W_dec[j] · 0.2 · (mean
encoder-column norm of the live latents);  b_enc[j] = 0;  Adam's moments of those weights are zeroed
(stale moments would throw the fresh latent straight back).  The draw uses a generator seeded by
(seed, step), so a resumed run resamples exactly as an uninterrupted one.
"""

from __future__ import annotations

import torch

from ..saes.batchtopk import batch_topk
from .data import seeded_generator

ENCODER_SCALE = 0.2  # Anthropic's factor on the live latents' mean encoder norm


@torch.no_grad()
def resample_dead_latents(sae, opt: torch.optim.Optimizer, x: torch.Tensor, dead: torch.Tensor, k: int,
                          seed: int, step: int) -> torch.Tensor:
    """Re-initialise the latents flagged in `dead` (bool [d_sae]) from batch `x` (scaled inputs);
    returns the indices resampled (at most one latent per token of the batch)."""
    dead_idx = dead.nonzero().squeeze(1).to(x.device)
    if dead_idx.numel() == 0:
        return dead_idx
    f = batch_topk(sae.pre_acts(x), k)
    resid = x - (f @ sae.W_dec + sae.b_dec + sae.scaffold(x))
    weight = resid.pow(2).sum(1).double()
    n = min(dead_idx.numel(), int((weight > 0).sum()))
    if n == 0:
        return dead_idx[:0]
    dead_idx = dead_idx[:n]
    rows = torch.multinomial(weight.cpu(), n, replacement=False, generator=seeded_generator(seed, step, 17))
    direction = resid[rows.to(x.device)]
    direction = direction / direction.norm(dim=1, keepdim=True)
    live = torch.ones(sae.cfg.d_sae, dtype=torch.bool, device=x.device)
    live[dead_idx] = False
    enc_norm = sae.W_enc[:, live].norm(dim=0).mean() if bool(live.any()) else x.new_tensor(1.0)
    sae.W_dec[dead_idx] = direction
    sae.W_enc[:, dead_idx] = direction.T * (ENCODER_SCALE * enc_norm)
    sae.b_enc[dead_idx] = 0.0
    for param, index in ((sae.W_dec, (dead_idx,)), (sae.W_enc, (slice(None), dead_idx)), (sae.b_enc, (dead_idx,))):
        state = opt.state.get(param, {})
        for key in ("exp_avg", "exp_avg_sq"):
            if key in state:
                state[key][index] = 0.0
    return dead_idx
