"""`core` metrics on synthetic data with known answers."""

from __future__ import annotations

import math

import pytest
import torch

from saebench_scaffold.evals.core.task import reconstruction_stats
from saebench_scaffold.saes import SAEConfig, make_sae
from saebench_scaffold.saes.pca import PCASAE, fit_pca

D = 12


def _data(n=4000, offset=5.0):
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, D, generator=g) * torch.linspace(0.5, 2.0, D) + offset


def _batches(x, size=512):
    return [x[i:i + size] for i in range(0, len(x), size)]


def test_perfect_reconstruction_has_zero_fvu():
    x = _data()
    sae = PCASAE.from_pca(fit_pca(_batches(x)))
    s = reconstruction_stats(sae, _batches(x))
    assert s["reconstruction_quality"]["fvu"] == pytest.approx(0.0, abs=1e-6)
    assert s["reconstruction_quality"]["cossim"] == pytest.approx(1.0, abs=1e-5)


def test_fvu_is_taken_around_the_mean_not_zero():
    """Predicting the mean explains no variance (FVU 1), whatever the offset."""
    x = _data(offset=5.0)
    sae = make_sae(SAEConfig("standard", D, 8))
    with torch.no_grad():
        sae.W_dec.zero_()
        sae.b_dec.copy_(x.mean(0))
    s = reconstruction_stats(sae, _batches(x))["reconstruction_quality"]
    assert s["fvu"] == pytest.approx(1.0, abs=1e-6)
    assert s["explained_variance"] == pytest.approx(0.0, abs=1e-6)


def test_planted_always_on_latent_is_dense_and_others_dead():
    x = _data()
    sae = make_sae(SAEConfig("standard", D, 10))
    with torch.no_grad():
        sae.W_enc.zero_()
        sae.b_enc.fill_(-1.0)
        sae.b_enc[3] = 2.0  # fires on every token
        sae.W_enc[0, 7] = 1.0  # fires when x_0 - b_dec_0 > 1: a fraction of tokens
        sae.b_dec.copy_(x.mean(0))
    s = reconstruction_stats(sae, _batches(x), dense_thresholds=(0.1, 0.01))
    dens = torch.tensor(s["per_latent"]["density"])
    assert dens[3] == 1.0
    expected_7 = ((x[:, 0] - x[:, 0].mean()) > 1.0).double().mean().item()
    assert dens[7].item() == pytest.approx(expected_7, abs=1e-9)
    assert s["density"]["dense_count_gt_0.1"] == 1 + int(expected_7 > 0.1)
    assert s["density"]["frac_dead"] == pytest.approx(8 / 10)
    assert s["sparsity"]["l0"] == pytest.approx(1 + expected_7, abs=1e-9)


def test_scaffold_share_and_l0_exclude_the_dense_part():
    x = _data(offset=0.0)
    pca = fit_pca(_batches(x))
    sae = make_sae(SAEConfig("batchtopk", D, 16, k=2, scaffold_rank=3))
    with torch.no_grad():
        top = pca.top(3)
        sae.scaffold_U.copy_(top)
        sae.scaffold_V.copy_(top)
        sae.b_dec.copy_(pca.mean)
        sae.W_enc.zero_()
        sae.b_enc.fill_(-1.0)  # no sparse latent ever fires
        sae.threshold.fill_(0.0)
    s = reconstruction_stats(sae, _batches(x))
    assert s["sparsity"]["l0"] == 0.0  # the scaffold is never counted as latents
    assert s["scaffold"]["scaffold_variance_share"] == pytest.approx(1.0, abs=1e-6)
    top3 = pca.variances[:3].sum() / pca.variances.sum()
    assert s["reconstruction_quality"]["fvu"] == pytest.approx(1 - top3.item(), abs=1e-4)


def test_massive_tokens_are_counted_and_left_out_of_typical_figures():
    """Three planted tokens at 40× the typical norm: counted as massive; the typical-token FVU is the
    FVU of the other tokens alone, and shares are computed without them."""
    x = _data(offset=0.0)
    x[[5, 900, 3001]] *= 40.0
    sae = make_sae(SAEConfig("batchtopk", D, 16, k=2, scaffold_rank=2))
    with torch.no_grad():
        sae.threshold.fill_(0.0)
    s = reconstruction_stats(sae, _batches(x))
    t = s["typical_tokens"]
    assert t["massive_token_count"] == 3 and t["massive_token_frac"] == pytest.approx(3 / len(x))
    assert t["max_norm_over_median"] > 20
    keep = torch.ones(len(x), dtype=torch.bool)
    keep[[5, 900, 3001]] = False
    alone = reconstruction_stats(sae, _batches(x[keep]), massive_multiple=1e9)
    assert alone["typical_tokens"]["massive_token_count"] == 0
    assert t["fvu"] == pytest.approx(alone["reconstruction_quality"]["fvu"], rel=1e-9)
    assert t["scaffold_variance_share"] == pytest.approx(alone["scaffold"]["scaffold_variance_share"], rel=1e-9)
    assert t["sparse_variance_share"] == pytest.approx(alone["scaffold"]["sparse_variance_share"], rel=1e-9)
    assert t["fvu"] != pytest.approx(s["reconstruction_quality"]["fvu"], rel=1e-3)


class _CECache:
    root = "fake-ce-cache"

    def __init__(self, n_ctx=10, length=9, vocab=7):
        g = torch.Generator().manual_seed(3)
        self.tokens = torch.randint(0, vocab, (n_ctx, length), generator=g)
        self.acts = torch.randn(n_ctx, length, D, generator=g) + 2.0
        self.special = torch.zeros(n_ctx, length, dtype=torch.bool)
        self.special[:, 0] = True

    def contexts(self, limit=None):
        return self.acts, self.tokens, self.special


class _CECtx:
    hook = "blocks.0.hook_resid_post"

    def __init__(self, vocab=7):
        self.memo, self.calls = {}, 0
        head = torch.randn(D, vocab, generator=torch.Generator().manual_seed(4))

        class LM:
            @staticmethod
            def logits_from_hook(tokens, hook, acts):
                self.calls += 1
                return acts @ head

        self.lm = LM()


@pytest.mark.parametrize("budget, later_passes", [(2 << 30, 1), (0, 2)])
def test_zero_ablation_and_clean_ce_run_once_per_eval_call(budget, later_passes, monkeypatch):
    """The checkpoint-independent passes run for the first checkpoint only: zero ablation always,
    the clean pass while its log-probs fit the memo budget (else it reruns). Same numbers either way."""
    from saebench_scaffold.evals.core import task as core
    from saebench_scaffold.evals.core.task import ce_with_sae

    monkeypatch.setattr(core, "CLEAN_MEMO_BYTES", budget)
    cache, ctx = _CECache(), _CECtx()
    a = make_sae(SAEConfig("topk", D, 24, k=3))
    b = make_sae(SAEConfig("topk", D, 24, k=5))
    ce_with_sae(ctx, a, cache, batch_contexts=4)
    first = ctx.calls
    second = ce_with_sae(ctx, b, cache, batch_contexts=4)
    assert first == 3 * 3 and ctx.calls - first == later_passes * 3  # clean + SAE + zero per batch, then SAE (+ clean)
    fresh_ctx = _CECtx()
    fresh = ce_with_sae(fresh_ctx, b, cache, batch_contexts=4)
    assert second == fresh  # bit-identical: the reused sums are the ones a fresh run adds up
    assert second["ce_loss_with_ablation"] == pytest.approx(math.log(7))  # zeroed acts: uniform logits


def test_ce_and_kl_equal_the_log_softmax_form():
    """CE/KL computed in the log-softmax's own buffer equal the textbook form (in float64), also where
    the clean distribution is so peaked that most probabilities underflow to zero."""
    import torch.nn.functional as F

    from saebench_scaffold.evals.ablation.ce import masked_ce, prediction_mask
    from saebench_scaffold.evals.core.task import CleanBatch, ce_and_kl

    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, 50, (3, 9), generator=g)
    special = torch.zeros(3, 9, dtype=torch.bool)
    special[:, 0] = True
    special[1, 4] = True
    clean_logits = torch.randn(3, 9, 50, generator=g) * 4
    clean_logits[2] *= 60  # one-hot-like rows: p underflows, p·log p must stay finite
    logits = clean_logits + torch.randn(3, 9, 50, generator=g)
    clean = CleanBatch(clean_logits, tokens)
    ce, kl = ce_and_kl(logits, tokens, clean)
    lp_clean, lp = F.log_softmax(clean_logits.double(), -1), F.log_softmax(logits.double(), -1)
    ce_ref, keep = masked_ce(lp, tokens, special)
    kl_ref = (lp_clean.exp() * (lp_clean - lp)).sum(-1)
    assert int(prediction_mask(special).sum()) == 3 * 8 - 5  # from position 0 (each row), and to and from [1, 4]
    torch.testing.assert_close(ce.flatten().double(), ce_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(kl.double(), kl_ref, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(clean.ce.flatten().double(), masked_ce(lp_clean, tokens, special)[0], rtol=1e-5, atol=1e-5)
    assert torch.isfinite(kl).all()


def test_replicates_over_contexts_are_the_figures_recomputed_on_the_drawn_contexts():
    """Replicate b of every figure equals `reconstruction_stats` on the contexts `unit_draws(N, B)[b]`
    (with multiplicity, in any order), so claims can pair replicate b of two checkpoints."""
    from saebench_scaffold.evals.stats import unit_draws

    x = _data(n=40 * 25)
    ctx_of = torch.arange(40).repeat_interleave(25)
    sae = make_sae(SAEConfig("topk", D, 16, k=3))
    batches = [(x[i:i + 120], ctx_of[i:i + 120]) for i in range(0, len(x), 120)]  # batches cut contexts
    s = reconstruction_stats(sae, batches, dense_thresholds=(0.1, 0.3), n_replicates=6)
    block = s["replicates"]
    assert (block["unit"], block["n_units"], block["n_replicates"]) == ("contexts", 40, 6)
    assert set(block["metrics"]) == {"density.dense_frac_gt_0.1", "density.dense_frac_gt_0.3", "density.frac_dead",
                                     "sparsity.l0", "reconstruction_quality.fvu"}
    for b, drawn in enumerate(unit_draws(40, 6)[:3]):
        tokens = torch.cat([x[ctx_of == c] for c in drawn])
        again = reconstruction_stats(sae, _batches(tokens), dense_thresholds=(0.1, 0.3))
        for key, value in (("density.dense_frac_gt_0.3", again["density"]["dense_frac_gt_0.3"]),
                           ("density.frac_dead", again["density"]["frac_dead"]), ("sparsity.l0", again["sparsity"]["l0"]),
                           ("reconstruction_quality.fvu", again["reconstruction_quality"]["fvu"])):
            assert block["metrics"][key][b] == pytest.approx(value, rel=1e-5, abs=1e-9), key
    plain = reconstruction_stats(sae, batches, dense_thresholds=(0.1, 0.3))
    assert plain["replicates"] is None and plain["sparsity"] == s["sparsity"]  # figures unchanged by replicates
