"""`ce_ablation`: the CE machinery on a toy "later layers" model that reads a planted subspace (no LM),
the task wired end to end on a fake context, and one real-LM smoke run through `run_eval`."""

from __future__ import annotations

import json
import math

import pytest
import torch

from saebench_scaffold.evals.ablation import conditions as ab
from saebench_scaffold.evals.base import EvalContext
from saebench_scaffold.evals.ablation.ce_ablation import CEAblationConfig, CEAblationTask, bootstrap_ce, per_context_ce
from saebench_scaffold.evals.ablation.ce import BODY
from saebench_scaffold.saes import SAEConfig, make_sae
from saebench_scaffold.settings import UserError

D, R, V, L, N_CTX = 24, 3, 8, 16, 40


def toy(seed=0):
    """Activations whose planted subspace S determines the next token; the toy model's logits read S only."""
    g = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(D, D, generator=g))
    S, C = q[:, :R], q[:, R:]
    M = torch.randn(R, V, generator=g) * 3
    g = torch.Generator().manual_seed(100 + seed)  # data differ by seed, the subspace does not
    z = torch.randn(N_CTX, L, R, generator=g) * 2
    acts = z @ S.T + torch.randn(N_CTX, L, D - R, generator=g) @ C.T + 0.5
    tokens = torch.zeros(N_CTX, L, dtype=torch.long)
    tokens[:, 1:] = ((z[:, :-1] @ M)).argmax(-1)  # next token = argmax of what position p reads
    special = torch.zeros(N_CTX, L, dtype=torch.bool)
    special[:, 0] = True
    seen = []

    def run_from_hook(t, a):
        seen.append(a)
        return 4 * (a - 0.5) @ S @ M

    return S, C, acts, tokens, special, run_from_hook, seen


def hybrid_for(S):
    sae = make_sae(SAEConfig("batchtopk", D, 48, k=4, scaffold_rank=R))
    with torch.no_grad():
        sae.scaffold_U.copy_(S)
        sae.scaffold_V.copy_(S)
        sae.b_dec.fill_(0.5)
    return sae


def test_conditions_change_ce_as_they_should():
    S, C, acts, tokens, special, run, _ = toy()
    sae = hybrid_for(S)
    conds = {"clean": None, "scaffold": ab.remove_scaffold(sae),
             "orthogonal": ab.remove_subspace(C[:, :R], acts.flatten(0, 1).mean(0)),
             "random": ab.remove_subspace(ab.random_subspace(D, R, torch.Generator().manual_seed(3)), acts.flatten(0, 1).mean(0))}
    sums, counts = per_context_ce(run, acts, tokens, special, conds, batch_contexts=7)
    assert counts.sum() == N_CTX * (L - 2)  # predictions from non-special positions of non-special tokens
    ce = {k: float(v.sum() / counts.sum()) for k, v in sums.items()}
    assert ce["clean"] < 0.3
    assert ce["scaffold"] == pytest.approx(math.log(V), abs=1e-4)  # nothing left to read: uniform logits
    assert ce["orthogonal"] == pytest.approx(ce["clean"], abs=1e-5)
    assert ce["clean"] < ce["random"] < ce["scaffold"]


def test_special_positions_are_not_edited():
    S, C, acts, tokens, special, run, seen = toy()
    per_context_ce(run, acts, tokens, special, {"zero": ab.zero_ablation}, batch_contexts=N_CTX)
    edited = seen[0]
    assert torch.equal(edited[:, 0], acts[:, 0]) and (edited[:, 1:] == 0).all()


def test_bootstrap_paired_ratio():
    g = torch.Generator().manual_seed(0)
    counts = torch.randint(50, 100, (30,)).double()
    clean = counts * (2 + torch.rand(30, generator=g).double())
    out = bootstrap_ce({"clean": clean, "same": clean.clone(), "double": 2 * clean}, counts, 500, 0.95, g)
    assert out["same"]["ce_ratio_ci_low"] == out["same"]["ce_ratio_ci_high"] == 1.0
    assert out["double"]["ce_ratio"] == pytest.approx(2.0) and out["double"]["ce_ratio_ci_high"] == pytest.approx(2.0)
    c = out["clean"]
    assert c["ce_ci_low"] < c["ce"] < c["ce_ci_high"]


# ---- the task wired end to end on a fake context (no LM) ----------------------------------------

class _Cache:
    def __init__(self, acts, tokens, special):
        self.a, self.t, self.s = acts, tokens, special

    def contexts(self, limit=None):
        return self.a[:limit], self.t[:limit], self.s[:limit]

    def iter_token_batches(self, batch_tokens=4096, limit=None):
        flat = self.a[~self.s]
        yield flat[:limit]


class _LM:
    def __init__(self, run):
        self.run = run

    def logits_from_hook(self, tokens, hook, acts):
        return self.run(tokens, acts)


class FakeCtx:
    seed = 0
    hook = "blocks.0.hook_resid_post"
    train_pca = EvalContext.train_pca  # the real PCA fit and memo, over the fake training cache

    def __init__(self):
        self.memo = {}
        S, C, acts, tokens, special, run, _ = toy()
        self.S, self.lm = S, _LM(run)
        self.eval = _Cache(acts, tokens, special)
        self.train = _Cache(*toy(seed=1)[2:5])

    def text_cache(self, n_contexts, offset=0, dataset="wikipedia"):
        return self.eval

    def train_cache(self, n_contexts, dataset="wikipedia"):
        return self.train

    def generator(self, salt=0):
        return torch.Generator().manual_seed(salt)

    def dataset_id(self, name):
        return {"name": name}


def test_task_run_on_fake_context_hybrid_and_ordinary():
    ctx = FakeCtx()
    task = CEAblationTask()
    cfg = CEAblationConfig(n_ce_tokens=N_CTX * (L - 1), n_aligned_latents=4, n_bootstrap=100, outlier_factor=5)
    out = task.run(ctx, hybrid_for(ctx.S), cfg)
    m = out.metrics
    assert m["scaffold_removed"]["ce_ratio"] > 5 and m["scaffold_removed"]["ce_ratio_ci_low"] > 3
    assert m["scaffold_removed"]["variance_removed_frac"] > 0.3
    assert m["pca_removed_mean_preserving"]["ce_ratio"] > 3  # the planted subspace is also the top-3 PCs
    assert m["subspaces"]["principal_angle_max_deg"] < 15
    for name in ("pca_removed_zeroing", "random_subspace_removed", "aligned_latents_removed",
                 "aligned_latents_removed_variance_matched", "sae_spliced", "zero_ablation"):
        assert m[name]["status"] == "ok" and m[name]["ce_ratio_ci_low"] <= m[name]["ce_ratio"] <= m[name]["ce_ratio_ci_high"]
    json.dumps(out.metrics), json.dumps(out.details), json.dumps(out.unstructured)  # serialisable

    plain = make_sae(SAEConfig("batchtopk", D, 48, k=4))
    out = task.run(ctx, plain, cfg.model_copy(update={"pca_rank": R}))
    assert "not applicable" in out.metrics["scaffold_removed"]["status"]
    assert out.metrics["summary"]["scaffold_ce_ratio"] is None
    assert out.metrics["aligned_latents_removed_variance_matched"]["subspace"] == "top-3 PCA"
    with pytest.raises(UserError, match="larger than the activation width"):
        task.run(ctx, plain, cfg.model_copy(update={"pca_rank": D + 1}))


def test_model_only_conditions_run_once_per_eval_call():
    """Clean, PCA, random-subspace and zero-ablation CE do not depend on the checkpoint: a second
    checkpoint in the same context reuses them (same numbers as a fresh context), only its own run."""
    cfg = CEAblationConfig(n_ce_tokens=N_CTX * (L - 1), n_aligned_latents=4, n_bootstrap=100, outlier_factor=5)
    ctx = FakeCtx()
    calls = []
    run = ctx.lm.run
    ctx.lm.run = lambda t, a: calls.append(1) or run(t, a)
    first, second = hybrid_for(ctx.S), hybrid_for(ctx.S)
    with torch.no_grad():
        second.W_dec.mul_(0.9)  # another checkpoint: its own conditions differ
    CEAblationTask().run(ctx, first, cfg)
    n_first = len(calls)
    out = CEAblationTask().run(ctx, second, cfg)
    n_batches = math.ceil(math.ceil(cfg.n_ce_tokens / BODY) / cfg.batch_contexts)
    shared = ("clean", "pca_removed_mean_preserving", "pca_removed_zeroing", "random_subspace_removed", "zero_ablation")
    own = ("scaffold_removed", "aligned_latents_removed", "aligned_latents_removed_variance_matched", "sae_spliced")
    assert n_first == (len(shared) + len(own)) * n_batches and len(calls) - n_first == len(own) * n_batches
    fresh = CEAblationTask().run(FakeCtx(), second, cfg)
    for name in shared + ("scaffold_removed", "aligned_latents_removed", "sae_spliced"):
        assert out.metrics[name]["ce"] == fresh.metrics[name]["ce"], name


def test_limit_caps_tokens():
    cfg = CEAblationTask().make_config({}, limit=300)
    assert cfg.n_ce_tokens == 300 and cfg.pca_fit_tokens <= 8192


# ---- real LM ------------------------------------------------------------------------------------

@pytest.mark.slow
def test_smoke_real_lm(tmp_path, offline, hook):
    from saebench_scaffold.execution import EvalRequest, run_eval

    ckpt = make_sae(SAEConfig("batchtopk", 576, 1152, k=16, scaffold_rank=8, hook_name=hook)).save(tmp_path / "hybrid")
    rows = run_eval(EvalRequest(checkpoints=[str(ckpt)], tasks="ce_ablation", limit=256,
                                output_dir=str(tmp_path / "out"), progress=False))
    assert rows[0]["status"].startswith("ok")
    res = json.loads((tmp_path / "out" / "hybrid" / "ce_ablation.json").read_text())
    m = res["eval_result_metrics"]
    assert m["clean"]["n_tokens"] > 200 and 0 < m["clean"]["ce"] < 10
    for name in ("scaffold_removed", "pca_removed_mean_preserving", "pca_removed_zeroing", "random_subspace_removed",
                 "aligned_latents_removed", "aligned_latents_removed_variance_matched", "zero_ablation"):
        assert m[name]["status"] == "ok" and math.isfinite(m[name]["ce_ratio"])
    assert m["zero_ablation"]["ce_ratio"] > 1
    assert m["subspaces"]["rank"] == 8
    assert m["summary"]["scaffold_ce_ratio"] == m["scaffold_removed"]["ce_ratio"]
    assert set(rows[0]["metrics"]) >= {"scaffold_ce_ratio", "pca_ce_ratio", "aligned_matched_ce_ratio", "random_ce_ratio"}


def test_variance_matched_off_leaves_its_headline_empty(tmp_path, offline, hook):
    """Switching the variance-matched condition off must not break the summary (it was a KeyError)."""
    from saebench_scaffold.execution import EvalRequest, run_eval

    ckpt = make_sae(SAEConfig("batchtopk", 576, 1152, k=16, scaffold_rank=8, hook_name=hook)).save(tmp_path / "hybrid")
    rows = run_eval(EvalRequest(checkpoints=[str(ckpt)], tasks="ce_ablation", limit=256,
                                output_dir=str(tmp_path / "out"), progress=False,
                                overrides=["ce_ablation.variance_matched=false", "ce_ablation.n_bootstrap=50"]))
    assert rows[0]["status"].startswith("ok")
    m = json.loads((tmp_path / "out" / "hybrid" / "ce_ablation.json").read_text())["eval_result_metrics"]
    assert "aligned_latents_removed_variance_matched" not in m and m["summary"]["aligned_matched_ce_ratio"] is None
    assert m["summary"]["scaffold_ce_ratio"] == m["scaffold_removed"]["ce_ratio"]
