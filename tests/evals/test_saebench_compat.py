"""SAEBench 0.6.0's own code on the same tensors as ours: `saebench_compat` must equal what
`sae_bench.evals.core.main.get_sparsity_and_variance_metrics` reports (sae-bench is a test-only
dependency, installed with --no-deps; JAXTYPING_DISABLE=1 turns off its runtime shape checks)."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import pytest
from helpers.peers import peer_import
import torch

os.environ.setdefault("JAXTYPING_DISABLE", "1")
sb_core = peer_import("sae_bench.evals.core.main")

from saebench_scaffold.evals.ablation.ce import BODY  # noqa: E402
from saebench_scaffold.evals.core.task import SAEBENCH_BATCH_PROMPTS, reconstruction_stats  # noqa: E402
from saebench_scaffold.saes import SAEConfig, make_sae  # noqa: E402
from saebench_scaffold.saes.loaders import load_sae  # noqa: E402

BASELINES = Path(__file__).resolve().parents[2] / "baselines"
HOOK = "blocks.14.hook_resid_post"
BOS = 0


class FakeStore:
    """SAEBench's ActivationsStore as its core eval uses it: batches of prompts (token ids)."""

    def __init__(self, n_contexts):
        self.next = 0
        self.n = n_contexts

    def get_batch_tokens(self, batch_prompts):
        ids = torch.arange(self.next, self.next + batch_prompts)
        self.next += batch_prompts
        tokens = (ids + 1).unsqueeze(1).repeat(1, BODY + 1)  # token id = context index + 1 ...
        tokens[:, 0] = BOS  # ... except the BOS SAEBench is told to ignore
        return tokens


class FakeModel:
    """A HookedTransformer whose hook activations are given tensors, looked up by context."""

    def __init__(self, acts):
        self.acts = acts

    def run_with_cache(self, tokens, **kw):
        return None, {HOOK: self.acts[tokens[:, 1] - 1]}


class AsSAEBench:
    """Our SAE behind SAEBench's interface: encode passes x through so that decode sees it and
    returns our full reconstruction (scaffold included); only the variance figures are compared."""

    def __init__(self, sae):
        self.sae = sae
        self.device = torch.device("cpu")
        self.cfg = SimpleNamespace(hook_name=HOOK, hook_head_index=None, hook_layer=14, d_sae=sae.d_in)

    def encode(self, x):
        return x

    def decode(self, x):
        with torch.no_grad():
            return self.sae(x)


def _acts(n_contexts, d, seed):
    g = torch.Generator().manual_seed(seed)
    scale = torch.rand(d, generator=g) * 3 + 0.5
    acts = torch.randn(n_contexts, BODY + 1, d, generator=g) * scale + torch.randn(d, generator=g) * 2
    acts[:, 0] *= 200  # BOS: huge, and excluded by both sides
    acts[3, 17] *= 60  # one massive token inside a context
    return acts


def _saes():
    yield "tiny_r2", make_sae(SAEConfig("batchtopk", 48, 96, k=6, scaffold_rank=2)), 48
    for name in ("batchtopk_r0", "matryoshka_r24"):
        if (BASELINES / name).is_dir():
            yield name, load_sae(BASELINES / name), 576


@pytest.mark.parametrize("which", ["tiny_r2", "batchtopk_r0", "matryoshka_r24"])
def test_saebench_explained_variance_figures_equal_saebench_code(which):
    found = {name: (sae, d) for name, sae, d in _saes()}
    if which not in found:
        pytest.skip(f"baselines/{which} not present")
    sae, d = found[which]
    sae.eval()
    n_batches = 3
    acts = _acts(n_batches * SAEBENCH_BATCH_PROMPTS, d, seed=len(which))
    theirs, _ = sb_core.get_sparsity_and_variance_metrics(
        AsSAEBench(sae), FakeModel(acts), FakeStore(len(acts)), n_batches=n_batches,
        compute_l2_norms=False, compute_sparsity_metrics=False, compute_variance_metrics=True,
        compute_featurewise_density_statistics=True, eval_batch_size_prompts=SAEBENCH_BATCH_PROMPTS,
        model_kwargs={}, ignore_tokens={BOS})
    body = acts[:, 1:].reshape(-1, d)  # our caches drop position 0; batches of 16 contexts, as core reads them
    ours = reconstruction_stats(sae, [body[i:i + SAEBENCH_BATCH_PROMPTS * BODY]
                                      for i in range(0, len(body), SAEBENCH_BATCH_PROMPTS * BODY)])
    compat = ours["saebench_compat"]
    assert compat["explained_variance"] == pytest.approx(theirs["explained_variance"], abs=1e-6)
    assert compat["explained_variance_legacy"] == pytest.approx(theirs["explained_variance_legacy"], abs=1e-6)
    # and they are not our headline figure (SAEBench's differ from 1 − FVU on any offset data)
    assert compat["explained_variance_legacy"] != pytest.approx(ours["reconstruction_quality"]["explained_variance"], abs=1e-3)
