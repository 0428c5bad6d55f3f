"""Activation normalisations SAEs are trained under (SAELens's `normalize_activations` and
`rescale_acts_by_decoder_norm`), run so that every task sees raw activations in and out.

Per token (cannot be folded; run inside `SAE.encode` and undone on the reconstruction):
  layer_norm             x_n = (x − μ) / (σ + 1e-5),  x̂ = x̂_n · σ + μ   (μ, σ: the token's mean and
                         unbiased std over d_in; SAELens's run_time_activation_ln_in/out)
  constant_norm_rescale  x_n = x · c,  x̂ = x̂_n / c,  c = √d_in / ‖x‖
Constant (folded into the weights at load time, as SAELens folds them itself, so W_dec is a
raw-space dictionary and x − f·W_dec ablations stay exact):
  expected_average_only_in  x_n = s · x, x̂ = x̂_n / s  (`fold_activation_norm_scaling_factor`)
  covariance_whitening      x_n = (x − m) M, x̂ = x̂_n M⁻¹ + m  (`fold_activation_whitening`)
  rescale_acts_by_decoder_norm  pre-activations × ‖W_dec[i]‖, latents ÷ ‖W_dec[i]‖ before the
                            decoder (`fold_W_dec_norm`; TopK and AbsTopK configs only)
"""

from __future__ import annotations

import torch

LAYER_NORM_EPS = 1e-5  # SAELens's run_time_activation_ln_in default
PER_TOKEN_NORMS = ("layer_norm", "constant_norm_rescale")
FOLDED_NORMS = ("expected_average_only_in", "covariance_whitening")
SAELENS_NORMS = ("none", *FOLDED_NORMS, *PER_TOKEN_NORMS)
"""Every `normalize_activations` value SAELens 6.54 defines (`SAEConfig.__post_init__`)."""


def normalize_in(x: torch.Tensor, mode: str) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
    """(normalised x, the per-token statistics `normalize_out` needs to map a reconstruction back)."""
    if mode == "layer_norm":
        mu = x.mean(dim=-1, keepdim=True)
        centred = x - mu
        std = centred.std(dim=-1, keepdim=True)
        return centred / (std + LAYER_NORM_EPS), (std, mu)
    if mode == "constant_norm_rescale":
        coeff = x.shape[-1] ** 0.5 / x.norm(dim=-1, keepdim=True)
        return x * coeff, (1 / coeff, torch.zeros_like(coeff))
    raise ValueError(f"not a per-token normalisation: {mode!r}")


def normalize_out(y: torch.Tensor, mode: str, stats: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    scale, shift = stats
    return y * scale + shift


# ---- folds, on tensors in SAELens orientation (W_enc [d_in, d_sae], W_dec [d_sae, d_in]) ----------

def fold_scaling_factor(t: dict[str, torch.Tensor], s: float, tied: bool = False) -> None:
    """Inputs were multiplied by s in training. Pre-activations are unchanged, so biases and
    thresholds stay; a tied (matching pursuit) dictionary keeps W_dec, its residual threshold
    is divided by s by the caller, as SAELens does."""
    if not tied:
        t["W_enc"] = t["W_enc"] * s
        t["W_dec"] = t["W_dec"] / s
    t["b_dec"] = t["b_dec"] / s


def fold_decoder_norm(t: dict[str, torch.Tensor]) -> None:
    """Unit decoder rows, with the norms moved into the encoder and every per-latent bias or
    threshold the pre-activation is compared with (gated: both gate and magnitude biases)."""
    n = t["W_dec"].norm(dim=-1).clamp(min=1e-8)
    t["W_dec"] = t["W_dec"] / n[:, None]
    t["W_enc"] = t["W_enc"] * n[None, :]
    for name in ("b_enc", "threshold", "b_mag"):
        if name in t and t[name].ndim == 1:
            t[name] = t[name] * n


def fold_whitening(t: dict[str, torch.Tensor], mean: torch.Tensor, matrix: torch.Tensor,
                   inverse: torch.Tensor, apply_b_dec_to_input: bool) -> None:
    """z = (x − m) M in, x̂ = ẑ M⁻¹ + m out, folded into the weights in float64."""
    dtype = torch.float64
    W_enc = matrix.to(dtype) @ t["W_enc"].to(dtype)
    if not apply_b_dec_to_input:
        shift = mean.to(dtype) @ W_enc
        t["b_enc"] = t["b_enc"].to(dtype) - shift
        if "b_mag" in t:  # gated: the magnitude path reads the same x @ W_enc, scaled by exp(r_mag)
            t["b_mag"] = t["b_mag"].to(dtype) - shift * t["r_mag"].to(dtype).exp()
    t["W_enc"] = W_enc
    t["W_dec"] = t["W_dec"].to(dtype) @ inverse.to(dtype)
    t["b_dec"] = t["b_dec"].to(dtype) @ inverse.to(dtype) + mean.to(dtype)
