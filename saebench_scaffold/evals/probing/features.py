"""A checkpoint's mean-pooled SAE latents over a probing sample (memoised for the checkpoint most
recently scored), and latent ablation with the SAE error kept (tpp, scr)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch

from ...activations.cache import ExampleCache, masked_mean
from ...settings import UserError
from .memo import _PROBE_MEMO


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
