"""The sparse step must be the dense reference step, in loss and in every gradient."""

import copy
import itertools

import pytest
import torch

from saebench_scaffold.saes.base import SAEConfig
from saebench_scaffold.saes.batchtopk import batch_topk
from saebench_scaffold.saes.registry import make_sae
from saebench_scaffold.training.common import Comm, StepContext
from saebench_scaffold.training.fast_step import fast_step
from saebench_scaffold.training.naive_step import naive_step
from saebench_scaffold.training.sparse_ops import candidate_batch_topk, relu_topk_entries

GROUPS = [4, 12, 16, 32]


def make(arch, r, mode, d=16, n=64, k=4, seed=0):
    torch.manual_seed(seed)
    extra = {"group_sizes": list(GROUPS)} if arch == "matryoshka_batchtopk" else {}
    sae = make_sae(SAEConfig(arch, d, n, k=k, scaffold_rank=r, scaffold_mode=mode, extra=extra)).double()
    with torch.no_grad():
        sae.b_enc.normal_(0, 0.1)
        sae.b_dec.normal_(0, 0.1)
    return sae


def ctx_for(arch, B, k=4, dead=None):
    ends = list(itertools.accumulate(GROUPS)) if arch == "matryoshka_batchtopk" else None
    return StepContext(k=k, global_batch=B, dead=dead, k_aux=8, auxk_alpha=1 / 32, group_ends=ends)


@pytest.mark.parametrize("arch", ["batchtopk", "matryoshka_batchtopk"])
@pytest.mark.parametrize("r, mode", [(0, "parallel"), (3, "parallel"), (3, "residual")])
@pytest.mark.parametrize("with_dead", [False, True])
def test_fast_step_matches_naive(arch, r, mode, with_dead):
    sae = make(arch, r, mode)
    x = torch.randn(32, 16, dtype=torch.double)
    dead = (torch.rand(64, generator=torch.Generator().manual_seed(1)) < 0.3) if with_dead else None
    a, b = copy.deepcopy(sae), copy.deepcopy(sae)
    ra = naive_step(a, x, ctx_for(arch, 32, dead=dead))
    rb = fast_step(b, x, ctx_for(arch, 32, dead=dead), m0=5)  # small m0: exercises the overflow path
    assert rb.loss == pytest.approx(ra.loss, rel=1e-12) and rb.aux_loss == pytest.approx(ra.aux_loss, rel=1e-12)
    assert (rb.l0, rb.fvu, rb.min_kept) == pytest.approx((ra.l0, ra.fvu, ra.min_kept), rel=1e-12)
    assert torch.equal(ra.fired, rb.fired)
    assert with_dead == (ra.aux_loss > 0)
    for (name, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters()):
        if pa.requires_grad and pa.numel():
            torch.testing.assert_close(pb.grad, pa.grad, rtol=1e-10, atol=1e-12, msg=name)


def test_fast_step_float32_tolerance():
    sae = make("matryoshka_batchtopk", 3, "parallel").float()
    x = torch.randn(64, 16)
    a, b = copy.deepcopy(sae), copy.deepcopy(sae)
    ra, rb = naive_step(a, x, ctx_for("matryoshka_batchtopk", 64)), fast_step(b, x, ctx_for("matryoshka_batchtopk", 64))
    assert rb.loss == pytest.approx(ra.loss, rel=1e-5)
    for pa, pb in zip(a.parameters(), b.parameters()):
        if pa.grad is not None:
            torch.testing.assert_close(pb.grad, pa.grad, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("m0", [1, 3, 8, 64])
def test_candidate_batch_topk_is_exact(m0):
    g = torch.Generator().manual_seed(0)
    pre = torch.randn(50, 64, generator=g) + torch.randn(50, 1, generator=g) * 2  # rows differ a lot: overflow
    comm = Comm()
    e = candidate_batch_topk(pre, 4 * 50, comm.kth_largest, lambda f: f, m0)
    dense = torch.zeros_like(pre)
    dense[e.rows, e.cols] = e.vals
    assert torch.equal(dense, batch_topk(pre, 4))
    assert torch.all(e.rows[1:] >= e.rows[:-1])


@pytest.mark.parametrize("guess_at", [0.5, 0.99, 1.2, None])
def test_candidate_batch_topk_with_a_threshold_guess_is_exact(guess_at, monkeypatch):
    """Below the true threshold the guess path answers; above it (too few candidates) the per-row
    path does; either way the set is the flat BatchTopK's."""
    from saebench_scaffold.training import sparse_ops

    if guess_at is not None and guess_at < 1:  # the per-row path must not run at all
        monkeypatch.setattr(sparse_ops, "row_topk", lambda *a: pytest.fail("per-row path ran"))
    g = torch.Generator().manual_seed(1)
    pre = torch.randn(50, 64, generator=g) + torch.randn(50, 1, generator=g) * 2
    reference = batch_topk(pre, 4)
    t = float(reference[reference > 0].min())
    comm = Comm()
    e = candidate_batch_topk(pre, 4 * 50, comm.kth_largest, lambda f: f, 3,
                             None if guess_at is None else guess_at * t)
    dense = torch.zeros_like(pre)
    dense[e.rows, e.cols] = e.vals
    assert torch.equal(dense, reference)
    assert torch.all(e.rows[1:] >= e.rows[:-1])


def test_entries_above_finds_every_entry_over_the_floor():
    from saebench_scaffold.training.sparse_ops import entries_above

    pre = torch.randn(7, 40, generator=torch.Generator().manual_seed(2))
    rows, cols, vals = entries_above(pre, 0.7)
    dense = torch.zeros_like(pre)
    dense[rows, cols] = vals
    assert torch.equal(dense, torch.where(pre > 0.7, pre, 0.0))
    assert torch.all(rows[1:] >= rows[:-1]) and torch.equal(pre[rows, cols], vals)


def test_matryoshka_loss_is_mean_of_prefix_losses():
    sae = make("matryoshka_batchtopk", 3, "parallel")
    x = torch.randn(32, 16, dtype=torch.double)
    res = fast_step(copy.deepcopy(sae), x, ctx_for("matryoshka_batchtopk", 32))
    with torch.no_grad():
        f = batch_topk(sae.pre_acts(x), 4)
        losses = []
        for end in itertools.accumulate(GROUPS):
            x_hat = sae.b_dec + sae.scaffold(x) + f[:, :end] @ sae.W_dec[:end]  # scaffold in every prefix
            losses.append((x - x_hat).pow(2).sum(1).mean())
    assert res.loss == pytest.approx(float(torch.stack(losses).mean()), rel=1e-12)
    plain = fast_step(copy.deepcopy(sae), x, ctx_for("batchtopk", 32))
    assert plain.loss == pytest.approx(float(losses[-1]), rel=1e-12)


@pytest.mark.parametrize("mode", ["parallel", "residual"])
def test_scaffold_and_sparse_parts_add_up(mode):
    sae = make("batchtopk", 3, mode).float()
    x = torch.randn(32, 16)
    f, sparse, scaffold = sae.reconstruct_parts(x)
    torch.testing.assert_close(sae(x), sae.b_dec + sparse + scaffold)
    torch.testing.assert_close(scaffold, ((x - sae.b_dec) @ sae.scaffold_V) @ sae.scaffold_U.T)
    res = fast_step(copy.deepcopy(sae), x, ctx_for("batchtopk", 32))
    with torch.no_grad():
        fb = batch_topk(sae.pre_acts(x), 4)
        mse = (x - (sae.b_dec + fb @ sae.W_dec + scaffold)).pow(2).sum(1).mean()
    assert res.mse == pytest.approx(float(mse), rel=1e-5)


@pytest.mark.parametrize("arch", ["batchtopk", "matryoshka_batchtopk"])
@pytest.mark.parametrize("k_aux, shift", [(8, 0.0), (3, 0.5), (8, -0.6), (40, 0.0)])
@pytest.mark.parametrize("kernels", ["sparse", "dense", "straight_through"])
def test_aux_k_on_dead_latents_matches_naive(arch, k_aux, shift, kernels, monkeypatch):
    """Aux-k with many dead latents: rows with more than k_aux positive dead pre-activations (top-k
    path), rows with fewer (all positives kept), k_aux above the dead count, and shifted biases that
    make positives common or rare; both the sparse and the dense-block kernels. fp64 gradients equal
    the dense reference's."""
    import saebench_scaffold.training.fast_step as fs
    monkeypatch.setattr(fs, "AUX_DENSE_RATIO", 0 if kernels == "sparse" else 10**9)
    sae = make(arch, 3, "parallel")
    with torch.no_grad():
        sae.b_enc += shift
    x = torch.randn(32, 16, dtype=torch.double, generator=torch.Generator().manual_seed(2))
    dead = torch.rand(64, generator=torch.Generator().manual_seed(3)) < 0.5
    ctx = StepContext(k=4, global_batch=32, dead=dead, k_aux=k_aux, auxk_alpha=1 / 32,
                      group_ends=ctx_for(arch, 32).group_ends, auxk_straight_through=kernels == "straight_through")
    a, b = copy.deepcopy(sae), copy.deepcopy(sae)
    ra, rb = naive_step(a, x, ctx), fast_step(b, x, ctx)
    assert ra.aux_loss > 0 and rb.aux_loss == pytest.approx(ra.aux_loss, rel=1e-12)
    for (name, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters()):
        if pa.requires_grad and pa.numel():
            torch.testing.assert_close(pb.grad, pa.grad, rtol=1e-10, atol=1e-12, msg=name)


def test_relu_topk_entries_equals_dense_top_k_after_relu():
    g = torch.Generator().manual_seed(4)
    block = torch.randn(50, 30, generator=g, dtype=torch.double) - 0.8  # some rows over k positives, most under
    col_ids = torch.randperm(100, generator=g)[:30]
    e = relu_topk_entries(block, 5, col_ids)
    vals, j = block.topk(5, dim=1)
    dense = torch.zeros(50, 100, dtype=torch.double)
    dense.scatter_(1, col_ids[j], vals.clamp_min(0))
    got = torch.zeros(50, 100, dtype=torch.double)
    got[e.rows, e.cols] = e.vals
    assert torch.equal(got, dense) and bool((e.vals > 0).all()) and bool((e.rows.diff() >= 0).all())


def test_straight_through_aux_k_reaches_latents_with_only_negative_pre_activations():
    """The collapse mechanism (issue 17): a dead latent whose pre-activations are negative on every
    token gets no gradient from dictionary_learning's aux-k; the straight-through variant moves its
    encoder toward the residual."""
    sae = make("batchtopk", 3, "parallel")
    x = torch.randn(32, 16, dtype=torch.double, generator=torch.Generator().manual_seed(5))
    dead = torch.zeros(64, dtype=torch.bool)
    dead[:8] = True
    with torch.no_grad():
        sae.b_enc[:8] = -50.0  # far below zero on every token
    grads = {}
    for st in (False, True):
        s = copy.deepcopy(sae)
        ctx = StepContext(k=4, global_batch=32, dead=dead, k_aux=4, auxk_alpha=1 / 32, auxk_straight_through=st)
        fast_step(s, x, ctx)
        grads[st] = s.W_enc.grad[:, :8].abs().sum(0)
    assert torch.all(grads[False] == 0)
    assert torch.all(grads[True] > 0)
