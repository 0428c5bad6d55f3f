"""The shared ablation conditions on synthetic activations with a planted dense subspace (no LM)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from saebench_scaffold.evals.ablation import conditions as ab
from saebench_scaffold.saes import SAEConfig, make_sae
from saebench_scaffold.saes.pca import fit_pca
from saebench_scaffold.settings import UserError

D, R, D_SAE, N_IN = 32, 3, 64, 8  # width, planted rank, dictionary size, latents inside the subspace


def planted(seed: int = 0):
    """Orthonormal planted subspace S [D, R], its complement C [D, D-R], and a hybrid SAE whose
    scaffold spans S, whose first N_IN decoder rows lie in S and the rest in the complement."""
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(D, D, generator=g))
    S, C = q[:, :R], q[:, R:]
    sae = make_sae(SAEConfig("batchtopk", D, D_SAE, k=4, scaffold_rank=R))
    with torch.no_grad():
        w_in = torch.randn(N_IN, R, generator=g) @ S.T
        w_out = torch.randn(D_SAE - N_IN, D - R, generator=g) @ C.T
        w = torch.cat([w_in, w_out])
        w /= w.norm(dim=1, keepdim=True)
        sae.W_dec.copy_(w)
        sae.W_enc.copy_(w.T)
        sae.b_dec.zero_()
        sae.scaffold_U.copy_(S)
        sae.scaffold_V.copy_(S)
    return S, C, sae, g


def planted_acts(S, C, g, n=2000, signal=5.0, labels=None):
    """Dense large-variance part in S (carries the class when labels are given) + small noise elsewhere."""
    z = torch.randn(n, R, generator=g) * signal
    if labels is not None:
        z[:, 0] += torch.as_tensor(labels, dtype=torch.float) * 4 * signal
    return z @ S.T + torch.randn(n, D - R, generator=g) @ C.T * 0.5 + 1.0


def test_remove_scaffold_removes_exactly_the_planted_subspace():
    S, C, sae, g = planted()
    x = planted_acts(S, C, g)
    y = ab.remove_scaffold(sae)(x)
    assert torch.allclose(y @ S, torch.zeros(len(x), R), atol=1e-4)  # b_dec = 0: nothing left in S
    assert torch.allclose(y @ C, x @ C, atol=1e-4)  # the complement untouched
    assert ab.variance_removed(ab.remove_scaffold(sae), x)["variance_removed_frac"] > 0.9


def test_pca_variants_mean_preserving_and_zeroing():
    S, C, sae, g = planted()
    x = planted_acts(S, C, g, n=4000)
    pca = fit_pca([x])
    top = pca.top(R)
    assert ab.principal_angles(top, S).max() < 2.0  # PCA finds the planted subspace
    keep_mean = ab.remove_subspace(top, pca.mean)(x)
    zeroed = ab.remove_subspace(top, None)(x)
    P = top @ top.T
    assert torch.allclose(keep_mean @ P, (pca.mean @ P).expand_as(x), atol=1e-3)  # only the mean left in S
    assert torch.allclose(zeroed @ P, torch.zeros_like(x), atol=1e-3)
    v1 = ab.variance_removed(ab.remove_subspace(top, pca.mean), x)
    v2 = ab.variance_removed(ab.remove_subspace(top, None), x)
    assert v1["variance_removed_frac"] == pytest.approx(v2["variance_removed_frac"], abs=1e-6)
    assert v2["removed_energy_frac"] > v1["removed_energy_frac"]  # zeroing also removes the mean's share


def _probe_acc(X, y):
    from sklearn.linear_model import LogisticRegression

    n = len(y) // 2
    return LogisticRegression(max_iter=2000).fit(X[:n], y[:n]).score(X[n:], y[n:])


def test_removing_planted_subspace_destroys_probe_orthogonal_does_not():
    S, C, sae, g = planted()
    y = np.arange(2000) % 2
    x = planted_acts(S, C, g, labels=y)
    assert _probe_acc(x.numpy(), y) > 0.95
    assert _probe_acc(ab.remove_scaffold(sae)(x).numpy(), y) < 0.6
    ortho = C[:, :R]  # an R-dim subspace orthogonal to S
    assert _probe_acc(ab.remove_subspace(ortho, x.mean(0))(x).numpy(), y) > 0.95
    rand = ab.random_subspace(D, R, torch.Generator().manual_seed(1))
    assert ab.principal_angles(rand, S).min() > 5  # a random subspace is not the planted one
    assert _probe_acc(ab.remove_subspace(rand, x.mean(0))(x).numpy(), y) > 0.9


def test_aligned_latent_selection_picks_latents_in_the_subspace():
    S, C, sae, g = planted()
    order = ab.aligned_order(sae, sae.scaffold_basis())
    assert set(order[:N_IN].tolist()) == set(range(N_IN))
    align = ab.subspace_alignment(sae.W_dec.detach(), S)
    assert torch.allclose(align[:N_IN], torch.ones(N_IN), atol=1e-5)
    assert align[N_IN:].abs().max() < 1e-5
    x = planted_acts(S, C, g).abs()
    y = ab.remove_latents(sae, order[:N_IN])(x)
    f = sae.encode(x)
    assert torch.allclose(x - y, f[:, :N_IN] @ sae.W_dec[:N_IN], atol=1e-4)
    assert torch.allclose(y @ C, x @ C, atol=1e-4)  # only in-subspace contributions removed


def test_variance_matched_count_finds_n():
    d = 16
    sae = make_sae(SAEConfig("batchtopk", d, d, k=4))
    g = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=g))
    with torch.no_grad():
        sae.W_dec.copy_(q.T)
        sae.W_enc.copy_(q)
        sae.b_dec.zero_()
    scales = torch.linspace(4, 1, d)
    f = torch.rand(5000, d, generator=g) * scales + 0.01  # every latent active, distinct variances
    x = f @ sae.W_dec.detach()
    order = torch.arange(d)
    for n0 in (1, 5, 11):
        target = ab.variance_removed(ab.remove_latents(sae, order[:n0]), x)["variance_removed_frac"]
        m = ab.variance_matched_count(sae, order, x, target - 1e-9)
        assert m["n"] == n0 and m["reachable"]
        assert m["achieved"] == pytest.approx(target, abs=1e-6)
    m = ab.variance_matched_count(sae, order, x, 0.5, max_n=2)
    assert not m["reachable"] and m["n"] == 2


def test_principal_angles():
    g = torch.Generator().manual_seed(0)
    a = torch.linalg.qr(torch.randn(20, 4, generator=g))[0]
    mix = torch.randn(4, 4, generator=g)
    assert ab.principal_angles(a, a @ mix).max() < 1e-3  # same span, different basis
    q = torch.linalg.qr(torch.randn(20, 20, generator=g))[0]
    assert torch.allclose(ab.principal_angles(q[:, :4], q[:, 4:8]), torch.full((4,), 90.0), atol=1e-3)


def test_outlier_dims_and_overlap():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(5000, D, generator=g)
    x[:, 7] *= 30.0  # variance outlier
    x += 1.0
    x[:, 3] += 40.0  # mean outlier
    out = ab.outlier_dims(x.mean(0), x.var(0), factor=10)
    assert out["by_mean"] == [3] and out["by_std"] == [7] and out["dims"] == [3, 7]
    basis = torch.eye(D)[:, [3, 7, 9]]
    assert ab.subspace_outlier_mass(basis, out["dims"]) == pytest.approx(2 / 3)
    pca = fit_pca([x])
    assert torch.allclose(ab.pca_dim_variances(pca), x.var(0, correction=0), rtol=1e-3)


def test_topic_scores_pick_label_latents():
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(300) % 3
    z = torch.rand(300, 50, generator=g)
    z[labels == 1, 17] += 2.0
    z[labels == 2, 42] += 1.5
    top = ab.top_latents(ab.topic_scores(z, labels), 2)
    assert set(top.tolist()) == {17, 42}


def test_conditions_for_ordinary_and_hybrid_saes():
    S, C, sae, g = planted()
    x = planted_acts(S, C, g)
    pca = fit_pca([x])
    conds = ab.subspace_conditions(sae, pca, R, torch.Generator().manual_seed(0))
    assert [c.name for c in conds] == ["scaffold_removed", "pca_removed_mean_preserving", "pca_removed_zeroing",
                                       "random_subspace_removed"]
    assert all(c.applicable for c in conds)
    plain = make_sae(SAEConfig("batchtopk", D, D_SAE, k=4))
    conds = ab.subspace_conditions(plain, pca, R, torch.Generator().manual_seed(0))
    assert not conds[0].applicable and "not applicable" in conds[0].status
    geo = ab.geometry(sae, pca, R, 10.0)
    assert geo["metrics"]["principal_angle_max_deg"] < 2.0
    assert ab.geometry(plain, pca, R, 10.0)["metrics"]["scaffold_outlier_mass"] is None
    # variance-matched aligned latents for the hybrid: matched against the scaffold's removed variance
    target = ab.variance_removed(conds[1].fn, x)["variance_removed_frac"]
    got = ab.aligned_latent_conditions(sae, pca, R, 4, x, target)
    assert got[0].info["n_latents"] == 4 and got[0].info["mean_alignment"] == pytest.approx(1.0, abs=1e-4)
    assert got[1].info["matched_reachable"] is False or got[1].info["n_latents"] <= N_IN


def test_rank_checks():
    sae = make_sae(SAEConfig("batchtopk", D, D_SAE, k=4))
    assert ab.subspace_rank(sae, None) == 24
    with pytest.raises(UserError, match="larger than the activation width"):
        ab.subspace_rank(sae, D + 1)
    with pytest.raises(UserError):
        ab.subspace_rank(sae, 0)
    hybrid = make_sae(SAEConfig("batchtopk", D, D_SAE, k=4, scaffold_rank=5))
    assert ab.subspace_rank(hybrid, None) == 5
