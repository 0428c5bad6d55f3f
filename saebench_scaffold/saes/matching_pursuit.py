"""Matching-pursuit SAE (SAELens `matching_pursuit`): a tied dictionary (the encoder is W_decᵀ) and a
greedy encode run per token. From the residual r = x − b_dec (or x), repeat: pick the latent i whose
decoder row has the largest positive dot product with r, add c = relu(r · W_dec[i]) to f_i, and
subtract c · W_dec[i] from r — until the set of active latents stops changing, ‖r‖ falls below
`extra["residual_threshold"]`, or `extra["max_iterations"]` (default d_in) steps have run. A token's
code depends on that token alone, so every task applies; the loop costs one [tokens × d_sae] product
per step."""

import torch

from .base import SAE

DEFAULTS = {"residual_threshold": 1e-2, "max_iterations": None, "stop_on_duplicate_support": True}  # SAELens's


class MatchingPursuitSAE(SAE):
    architecture = "matching_pursuit"

    def __init__(self, cfg):
        for key, value in DEFAULTS.items():
            cfg.extra.setdefault(key, value)
        super().__init__(cfg)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        r = self.encoder_input(x)
        shape = r.shape
        r = r.reshape(-1, shape[-1])
        W = self.W_dec
        f = r.new_zeros(r.shape[0], W.shape[0])
        support = torch.zeros_like(f, dtype=torch.bool)
        done = torch.zeros(r.shape[0], dtype=torch.bool, device=r.device)
        threshold = float(self.cfg.extra["residual_threshold"])
        steps = shape[-1] if self.cfg.extra["max_iterations"] is None else int(self.cfg.extra["max_iterations"])
        for _ in range(steps):
            idx = (r @ W.T).relu().argmax(dim=1, keepdim=True)
            row = W[idx.squeeze(1)]
            c = (r * row).sum(-1, keepdim=True).relu() * (~done).unsqueeze(1).to(r.dtype)
            f.scatter_add_(1, idx, c)
            r = r - c * row
            new_support = f != 0
            if self.cfg.extra["stop_on_duplicate_support"]:
                done |= (new_support == support).all(dim=1)
            support = new_support
            if threshold > 0:
                done |= r.norm(dim=-1) < threshold
            if bool(done.all()):
                break
        return f.reshape(*shape[:-1], W.shape[0])

    def activation(self, pre: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError("matching pursuit encodes from the residual, not from one pre-activation")
