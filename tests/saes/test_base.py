"""The SAE protocol's shared pieces (saes/base.py)."""

import pytest
import torch


@pytest.mark.parametrize("density", [0.0, 0.02, 0.5])
def test_sparse_latent_product_equals_the_dense_product(density):
    """decode's f @ W_dec runs over the nonzero latents when they are few; same numbers as the dense
    product (float32 rounding), for empty rows, negative latents, extra batch dimensions and dense f."""
    from saebench_scaffold.saes.base import sparse_latent_product

    g = torch.Generator().manual_seed(1)
    W = torch.randn(300, 16, generator=g)
    f = torch.randn(4, 6, 300, generator=g) * (torch.rand(4, 6, 300, generator=g) < density)
    f[0, 0] = 0
    torch.testing.assert_close(sparse_latent_product(f, W), f @ W, rtol=1e-5, atol=1e-5)
    Wg = W.clone().requires_grad_()
    sparse_latent_product(f, Wg).sum().backward()  # autograd takes the plain product
    torch.testing.assert_close(Wg.grad, f.reshape(-1, 300).sum(0).unsqueeze(-1).expand(300, 16))
