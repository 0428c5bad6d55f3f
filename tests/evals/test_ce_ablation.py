"""`ce_ablation`: the CE machinery on a toy "later layers" model that reads a planted subspace (no LM),
the task wired end to end on a fake context, and one real-LM smoke run through `run_eval`."""

from __future__ import annotations

import json
import math

import pytest
import torch

from saebench_scaffold.evals.ablation import conditions as ab
from saebench_scaffold.evals.base import EvalContext
from saebench_scaffold.evals.ablation.ce_ablation import CEAblationConfig, CEAblationTask
from saebench_scaffold.evals.ablation.ce_draws import bootstrap_ce
from saebench_scaffold.evals.ablation.ce_passes import per_context_ce
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


def hybrid_for(S, n_aligned=4):
    """A hybrid whose scaffold is the planted subspace; its first `n_aligned` latents decode inside it."""
    sae = make_sae(SAEConfig("batchtopk", D, 48, k=4, scaffold_rank=R))
    with torch.no_grad():
        sae.scaffold_U.copy_(S)
        sae.scaffold_V.copy_(S)
        sae.b_dec.fill_(0.5)
        for i in range(n_aligned):
            sae.W_dec[i] = S[:, i % R] * sae.W_dec[i].norm()
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
    cfg = CEAblationConfig(n_ce_tokens=N_CTX * (L - 1), n_aligned_latents=4, n_bootstrap=200, outlier_factor=5)
    out = task.run(ctx, hybrid_for(ctx.S), cfg)
    m = out.metrics
    assert m["scaffold_removed"]["ce_ratio"] > 5 and m["scaffold_removed"]["ce_ratio_ci_low"] > 3
    assert m["scaffold_removed"]["variance_removed_frac"] > 0.3
    assert m["pca_removed_mean_preserving"]["ce_ratio"] > 3  # the planted subspace is also the top-3 PCs
    assert m["subspaces"]["principal_angle_max_deg"] < 15
    for name in ("pca_removed_zeroing", "random_subspace_removed", "aligned_latents_removed", "sae_spliced", "zero_ablation"):
        assert m[name]["status"] == "ok" and m[name]["ce_ratio_ci_low"] <= m[name]["ce_ratio"] <= m[name]["ce_ratio_ci_high"]
    for name in ("aligned_latents_removed_variance_matched", "aligned_latents_removed_energy_matched"):
        assert m[name]["status"] == "ok" or m[name]["status"].startswith(("only ", "unreachable: "))
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
    cfg = CEAblationConfig(n_ce_tokens=N_CTX * (L - 1), n_aligned_latents=4, n_bootstrap=200, outlier_factor=5, curves=False)
    ctx = FakeCtx()
    calls = []
    run = ctx.lm.run
    ctx.lm.run = lambda t, a: calls.append(1) or run(t, a)
    first, second = hybrid_for(ctx.S), hybrid_for(ctx.S)
    with torch.no_grad():
        second.W_dec.mul_(0.9)  # another checkpoint: its own conditions differ
    out_first = CEAblationTask().run(ctx, first, cfg)
    n_first = len(calls)
    out = CEAblationTask().run(ctx, second, cfg)
    n_batches = math.ceil(math.ceil(cfg.n_ce_tokens / BODY) / cfg.batch_contexts)
    shared = ("clean", "pca_removed_mean_preserving", "pca_removed_zeroing", "random_subspace_removed", "zero_ablation")
    names = ("scaffold_removed", "aligned_latents_removed", "aligned_latents_removed_variance_matched",
             "aligned_latents_removed_energy_matched", "sae_spliced")
    own_first = [n for n in names if "ce" in out_first.metrics[n]]  # an unreachable match is not run
    own = tuple(n for n in names if "ce" in out.metrics[n])
    assert n_first == (len(shared) + len(own_first)) * n_batches and len(calls) - n_first == len(own) * n_batches
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
                 "zero_ablation"):
        assert m[name]["status"] == "ok" and math.isfinite(m[name]["ce_ratio"])
    for name in ("aligned_latents_removed", "aligned_latents_removed_variance_matched", "aligned_latents_removed_energy_matched"):
        # a random-init SAE's latents are aligned about as chance: a status, and a CE unless unreachable
        assert m[name]["status"] == "ok" or m[name]["status"].startswith(("only ", "no latent", "unreachable: "))
        assert m[name]["status"].startswith("unreachable: ") or math.isfinite(m[name]["ce_ratio"])
    assert res["eval_result_unstructured"]["evaluation_replicates"]["n_units"] == m["clean"]["n_contexts"]
    assert [p["k"] for p in res["eval_result_unstructured"]["curves"]["pca_zeroing"]] == [1, 2, 4, 8, 16, 24, 32, 48, 64]
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
                                overrides=["ce_ablation.variance_matched=false", "ce_ablation.n_bootstrap=200"]))
    assert rows[0]["status"].startswith("ok")
    m = json.loads((tmp_path / "out" / "hybrid" / "ce_ablation.json").read_text())["eval_result_metrics"]
    assert "aligned_latents_removed_variance_matched" not in m and m["summary"]["aligned_matched_ce_ratio"] is None
    assert m["summary"]["scaffold_ce_ratio"] == m["scaffold_removed"]["ce_ratio"]


# ---- version 2: twin, chance, unreachable matches, replicates, curves, disk cache ------------------

ALL_CTX = N_CTX * BODY  # n_ce_tokens reading every fake context


def plain_with_aligned(S, n_aligned=6):
    """An r = 0 SAE whose first `n_aligned` latents decode inside the planted subspace."""
    sae = make_sae(SAEConfig("batchtopk", D, 48, k=4))
    with torch.no_grad():
        for i in range(n_aligned):
            sae.W_dec[i] = S[:, i % R] * sae.W_dec[i].norm()
    return sae


def v2_cfg(**kw):
    return CEAblationConfig(**{"n_ce_tokens": ALL_CTX, "n_aligned_latents": 4, "n_bootstrap": 1000, "outlier_factor": 5,
                               "curve_ranks": [1, 2, 3, 4, 8], **kw})


def test_twin_refused_in_one_line(tmp_path):
    S = toy()[0]
    rank0 = make_sae(SAEConfig("batchtopk", D, 48, k=4)).save(tmp_path / "r0")
    with pytest.raises(UserError, match="has no scaffold") as err:
        CEAblationConfig(twin=str(rank0))
    assert "\n" not in str(err.value)
    wide = make_sae(SAEConfig("batchtopk", D + 8, 48, k=4, scaffold_rank=R)).save(tmp_path / "wide")
    cfg = v2_cfg(twin=str(wide))
    ctx = FakeCtx()
    calls = []
    ctx.lm.run = lambda t, a: calls.append(1)
    with pytest.raises(UserError, match="d_in") as err:
        CEAblationTask().run(ctx, plain_with_aligned(S), cfg)
    assert "\n" not in str(err.value) and not calls  # refused before any forward pass
    good = hybrid_for(S).save(tmp_path / "r3")
    cfg = CEAblationConfig(twin=str(good))
    assert cfg.twin_sha256 and len(cfg.twin_sha256) == 64  # in eval_config, hence in the config hash
    with pytest.raises(UserError, match="sha256"):
        CEAblationConfig(twin=str(good), twin_sha256="0" * 64)


def test_twin_conditions_are_paired_with_the_twin_own_run(tmp_path):
    """The twin's scaffold removed on the r = 0 checkpoint's contexts gives exactly the CE (and, on the
    same draws, the interval and replicates) the twin's own run gives its scaffold_removed."""
    ctx = FakeCtx()
    twin = hybrid_for(ctx.S)
    path = twin.save(tmp_path / "twin")
    out = CEAblationTask().run(ctx, plain_with_aligned(ctx.S), v2_cfg(twin=str(path)))
    own = CEAblationTask().run(FakeCtx(), twin, v2_cfg())
    m, t = out.metrics, own.metrics
    for key in ("ce", "ce_ratio", "ce_ratio_ci_low", "ce_ratio_ci_high", "removed_energy_frac"):
        assert m["twin_scaffold_removed"][key] == pytest.approx(t["scaffold_removed"][key], rel=1e-6), key
    reps = out.unstructured["evaluation_replicates"]["metrics"]
    assert reps["twin_scaffold_removed.ce_ratio"] == own.unstructured["evaluation_replicates"]["metrics"]["scaffold_removed.ce_ratio"]
    assert m["summary"]["twin_scaffold_ce_ratio"] == m["twin_scaffold_removed"]["ce_ratio"] > 3
    assert m["summary"]["twin_scaffold_removed_energy_frac"] == m["twin_scaffold_removed"]["removed_energy_frac"]
    # the six latents planted in the twin's scaffold subspace are the aligned ones, above chance
    fixed = m["twin_aligned_latents_removed"]
    assert fixed["status"] == "ok" and fixed["n_chosen_above_chance_q99"] == 4 and fixed["n_latents_above_chance_q99"] >= 6
    assert m["summary"]["twin_aligned_fixed_ce_ratio"] == fixed["ce_ratio"]
    assert m["pca_aligned_latents_removed"]["subspace"] == f"top-{R} PCA"
    assert {"twin_aligned_latents_removed_energy_matched", "pca_aligned_latents_removed_energy_matched"} <= set(m)
    rec = out.unstructured["twin"]
    assert rec["scaffold_rank"] == R and rec["sha256"] and rec["path"] == str(path)
    assert m["summary"]["scaffold_ce_ratio"] is None and "not applicable" in out.unstructured["summary_status"]["scaffold_ce_ratio"]
    json.dumps(out.metrics), json.dumps(out.unstructured)


def test_latents_orthogonal_to_the_scaffold_have_no_headline():
    ctx = FakeCtx()
    sae = hybrid_for(ctx.S, n_aligned=0)
    with torch.no_grad():  # every decoder row orthogonal to the scaffold subspace
        sae.W_dec.sub_((sae.W_dec @ ctx.S) @ ctx.S.T)
    out = CEAblationTask().run(ctx, sae, v2_cfg())
    m = out.metrics
    assert m["aligned_latents_removed"]["status"] == "no latent aligned above chance"
    assert m["aligned_latents_removed"]["n_latents_above_chance_q99"] == 0
    assert m["aligned_latents_removed"]["alignment_max"] < 1e-6 < m["aligned_latents_removed"]["chance_alignment_q99"]
    matched = m["aligned_latents_removed_variance_matched"]
    assert matched["status"] in ("no latent aligned above chance",) or matched["status"].startswith("unreachable")
    assert m["summary"]["aligned_matched_ce_ratio"] is None
    assert out.unstructured["summary_status"]["aligned_matched_ce_ratio"] == matched["status"]
    assert m["summary"]["scaffold_ce_ratio"] is not None  # the scaffold's own headline is unaffected
    # a hybrid's twin figures are not "missing a twin": they live on its r = 0 twin's result
    assert m["summary"]["twin_aligned_fixed_ce_ratio"] is None
    assert out.unstructured["summary_status"]["twin_aligned_fixed_ce_ratio"].startswith("not applicable: this checkpoint has a scaffold")


def test_unreachable_match_is_a_status_not_a_figure():
    ctx = FakeCtx()
    sae = hybrid_for(ctx.S)
    with torch.no_grad():
        sae.W_dec.mul_(1e-3)  # removing every latent removes almost nothing: the scaffold's share is out of reach
    out = CEAblationTask().run(ctx, sae, v2_cfg())
    m = out.metrics
    for name, short in (("aligned_latents_removed_variance_matched", "aligned_matched_ce_ratio"),):
        assert m[name]["status"].startswith("unreachable: ") and "ce_ratio" not in m[name]
        assert m[name]["matched_reachable"] is False
        assert m["summary"][short] is None and out.unstructured["summary_status"][short].startswith("unreachable: ")
    assert m["aligned_latents_removed_energy_matched"]["status"].startswith("unreachable: ")
    conds = ab.latents_aligned_with(sae, ctx.S, "planted", "x", 2, ctx.train.a[~ctx.train.s], {"energy": 50.0}, "a target")
    assert conds[1].fn is None and conds[1].status.startswith("unreachable: ")


def test_replicates_block_shape_and_agreement_with_the_interval():
    from saebench_scaffold.evals.stats import N_REPLICATES, unit_draws

    ctx = FakeCtx()
    sae = hybrid_for(ctx.S)
    out = CEAblationTask().run(ctx, sae, v2_cfg())
    block = out.unstructured["evaluation_replicates"]
    assert block["unit"] == "contexts" and block["n_units"] == N_CTX and block["n_replicates"] == N_REPLICATES
    m = out.metrics
    for name, value in m["summary"].items():
        if value is not None:
            assert len(block["metrics"][f"summary.{name}"]) == N_REPLICATES, name
    for name in ("scaffold_removed", "pca_removed_mean_preserving", "random_subspace_removed"):
        assert len(block["metrics"][f"{name}.ce_ratio"]) == len(block["metrics"][f"{name}.removed_energy_frac"]) == N_REPLICATES
    # replicate b = the ratio of summed CE over the contexts of unit_draws(n)[b], as the point estimate
    S, C, acts, tokens, special, run, _ = toy()
    sums, counts = per_context_ce(run, acts, tokens, special, {"clean": None, "s": ab.remove_scaffold(sae)})
    draws = unit_draws(N_CTX)
    expect = [float(sums["s"][d].sum() / sums["clean"][d].sum()) for d in draws]
    assert block["metrics"]["scaffold_removed.ce_ratio"] == pytest.approx(expect, rel=1e-6)
    reps = torch.tensor(block["metrics"]["summary.scaffold_ce_ratio"], dtype=torch.float64)
    lo, hi = m["summary_ci"]["scaffold_ce_ratio_ci_low"], m["summary_ci"]["scaffold_ce_ratio_ci_high"]
    assert lo == m["scaffold_removed"]["ce_ratio_ci_low"] and hi == m["scaffold_removed"]["ce_ratio_ci_high"]
    width = hi - lo
    assert abs(float(reps.quantile(0.025)) - lo) < 0.15 * width and abs(float(reps.quantile(0.975)) - hi) < 0.15 * width
    assert lo < m["summary"]["scaffold_ce_ratio"] < hi


def test_curve_interpolation_on_a_synthetic_curve():
    from saebench_scaffold.evals.ablation.ce_draws import interpolate_at

    e = [[0.6], [0.1], [0.3]]  # unsorted on purpose; (0, 1) is added
    r = [[4.0], [1.2], [2.0]]
    assert interpolate_at(e, r, [0.45])[0] == pytest.approx(3.0)
    assert interpolate_at(e, r, [0.05])[0] == pytest.approx(1.1)
    assert interpolate_at(e, r, [0.6])[0] == pytest.approx(4.0)
    assert math.isnan(interpolate_at(e, r, [0.7])[0])
    two_rows = interpolate_at([[0.2, 0.4]], [[2.0, 3.0]], [0.1, 0.2])
    assert two_rows.tolist() == pytest.approx([1.5, 2.0])


def test_equal_energy_summary_and_out_of_range_status():
    ctx = FakeCtx()
    out = CEAblationTask().run(ctx, hybrid_for(ctx.S), v2_cfg())
    s, st = out.metrics["summary"], out.unstructured["summary_status"]
    curve = out.unstructured["curves"]
    assert [p["k"] for p in curve["pca_mean_preserving"]] == [1, 2, 3, 4, 8] and set(curve) == {"pca_mean_preserving", "pca_zeroing", "random_subspace"}
    assert st["pca_ce_ratio_at_scaffold_energy"] == "ok"
    assert s["scaffold_over_pca_at_equal_energy"] == pytest.approx(s["scaffold_ce_ratio"] / s["pca_ce_ratio_at_scaffold_energy"])
    ci = out.metrics["summary_ci"]
    assert ci["scaffold_over_pca_at_equal_energy_ci_low"] <= s["scaffold_over_pca_at_equal_energy"] <= ci["scaffold_over_pca_at_equal_energy_ci_high"]
    short = CEAblationTask().run(FakeCtx(), hybrid_for(ctx.S), v2_cfg(curve_ranks=[1]))  # top-1 PC removes less than the scaffold
    assert short.metrics["summary"]["pca_ce_ratio_at_scaffold_energy"] is None
    assert "outside" in short.unstructured["summary_status"]["pca_ce_ratio_at_scaffold_energy"]
    assert short.metrics["summary"]["scaffold_over_pca_at_equal_energy"] is None
    from saebench_scaffold.evals.ablation.checks import check_ce_ablation

    class Res:
        eval_result_metrics = out.metrics
    assert check_ce_ablation(Res()) == []


def test_model_only_conditions_and_curves_are_cached_on_disk(tmp_path):
    """A second eval call (fresh memo) with the same cache dir runs only the checkpoint's own conditions."""
    cfg = v2_cfg()
    calls = []

    def counted_ctx():
        ctx = FakeCtx()
        ctx.cache_dir = str(tmp_path)
        run = ctx.lm.run
        ctx.lm.run = lambda t, a: calls.append(1) or run(t, a)
        return ctx

    ctx = counted_ctx()
    first = CEAblationTask().run(ctx, hybrid_for(ctx.S), cfg)
    n_first = len(calls)
    assert list((tmp_path / "ce_ablation").glob("*.pt"))
    second = CEAblationTask().run(counted_ctx(), hybrid_for(ctx.S), cfg)
    n_batches = math.ceil(N_CTX / cfg.batch_contexts)
    own = [n for n, v in second.metrics.items() if isinstance(v, dict) and "ce" in v and n != "clean"
           and n not in ("pca_removed_mean_preserving", "pca_removed_zeroing", "random_subspace_removed", "zero_ablation")]
    assert len(calls) - n_first == len(own) * n_batches < n_first
    assert second.metrics["summary"] == first.metrics["summary"]
    assert second.unstructured["curves"] == first.unstructured["curves"]


def test_an_energy_match_that_fails_on_the_evaluation_tokens_is_a_status():
    """Matched on the training sample, the set of latents removes far less energy on the evaluation
    contexts than the twin's scaffold: that pair is not at equal energy, so no headline."""
    from saebench_scaffold.evals.ablation import ce_draws
    from saebench_scaffold.evals.ablation.conditions import Condition

    n = 6
    ones = torch.ones(n, dtype=torch.float64)
    sums = {"clean": ones * 2.0, "twin_scaffold_removed": ones * 3.0,
            "twin_aligned_latents_removed_energy_matched": ones * 4.0}
    energy = {"twin_scaffold_removed": ones * 0.77, "twin_aligned_latents_removed_energy_matched": ones * 0.29}
    d = ce_draws.PerDraw(ce_draws.draw_weights(n, 5), sums, energy, ones * 10, ones)
    conds = [Condition(name, (lambda x: x), name) for name in sums if name != "clean"]
    summary, status, _, replicates = ce_draws.summary_metrics(d, conds, {}, v2_cfg())
    assert summary["twin_scaffold_ce_ratio"] == pytest.approx(1.5)
    assert summary["twin_aligned_matched_ce_ratio"] is None
    assert status["twin_aligned_matched_ce_ratio"].startswith("not matched on the evaluation tokens: removes 0.290")
    assert "summary.twin_aligned_matched_ce_ratio" not in replicates
    energy["twin_aligned_latents_removed_energy_matched"] = ones * 0.75  # within 10%: a figure
    d = ce_draws.PerDraw(ce_draws.draw_weights(n, 5), sums, energy, ones * 10, ones)
    summary, status, _, _ = ce_draws.summary_metrics(d, conds, {}, v2_cfg())
    assert summary["twin_aligned_matched_ce_ratio"] == pytest.approx(2.0) and status["twin_aligned_matched_ce_ratio"] == "ok"
