"""Small synthetic activations and activation-cache folders for the training tests."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file


def synthetic_acts(n: int, d: int = 16, n_features: int = 96, seed: int = 0) -> torch.Tensor:
    """Sparse features on top of a dense offset and a dense low-rank part (what a scaffold absorbs)."""
    g = torch.Generator().manual_seed(seed)
    basis = torch.randn(n_features, d, generator=torch.Generator().manual_seed(123))
    dense = torch.randn(2, d, generator=torch.Generator().manual_seed(456))
    codes = (torch.rand(n, n_features, generator=g) < 0.05).float() * torch.rand(n, n_features, generator=g) * 3
    return codes @ basis + torch.randn(n, 2, generator=g) @ dense * 2 + 3 + 0.05 * torch.randn(n, d, generator=g)


def write_cache(root: Path, acts: torch.Tensor, ctx: int = 16, shard_contexts: int = 8, dtype=torch.float16) -> Path:
    """An ActivationCache folder (activations.py layout): position 0 of every context is special (BOS)."""
    root.mkdir(parents=True, exist_ok=True)
    d = acts.shape[-1]
    n_ctx = acts.shape[0] // ctx
    acts = acts[: n_ctx * ctx].reshape(n_ctx, ctx, d)
    special = torch.zeros(n_ctx, ctx, dtype=torch.uint8)
    special[:, 0] = 1
    for i, s in enumerate(range(0, n_ctx, shard_contexts)):
        sl = slice(s, s + shard_contexts)
        save_file({"acts": acts[sl].to(dtype).contiguous(), "tokens": torch.zeros_like(special[sl], dtype=torch.int32),
                   "special": special[sl].contiguous()}, str(root / f"shard_{i:05d}.safetensors"))
    meta = {"d_in": d, "n_tokens": n_ctx * ctx, "n_tokens_nonspecial": n_ctx * (ctx - 1)}
    (root / "spec.json").write_text(json.dumps(meta))
    (root / "done").write_text("")
    return root


@pytest.fixture(autouse=True)
def _few_threads():
    """Tests are tiny: one thread avoids oversubscribing the 2 cores other jobs share."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
