"""Our sparse-probing accuracies equal SAEBench 0.6.0's own probe code on identical binary example
sets: `sae_bench.evals.sparse_probing.probe_training` selects the top-k latents by mean difference
and fits its sklearn probe; we compare top-1/5/20 accuracies per (dataset, checkpoint, class)."""

from __future__ import annotations

import os
from pathlib import Path

from helpers.peers import peer_import
import torch

os.environ.setdefault("JAXTYPING_DISABLE", "1")
sb_probe = peer_import("sae_bench.evals.sparse_probing.probe_training")

from saebench_scaffold.evals.probing.data import one_vs_rest, probed_classes, resplit  # noqa: E402
from saebench_scaffold.evals.probing.sparse_probing import probe_feature_sets  # noqa: E402
from saebench_scaffold.saes import SAEConfig, make_sae  # noqa: E402
from saebench_scaffold.saes.loaders import load_sae  # noqa: E402

BASELINES = Path(__file__).resolve().parents[2] / "baselines"
K_VALUES = [1, 5, 20]
N_TRAIN, N_TEST = 24, 12


def _dataset(n_classes, d, seed):
    """Pooled 'LLM activations' with class structure of varying strength (a small probing set)."""
    g = torch.Generator().manual_seed(seed)
    per = N_TRAIN + N_TEST
    means = torch.randn(n_classes, d, generator=g) * 0.6
    labels = torch.arange(n_classes).repeat_interleave(per)
    x = torch.randn(len(labels), d, generator=g) * 2.0 + means[labels] + torch.randn(d, generator=g)
    return x, labels


def _checkpoints(d):
    if d == 576 and (BASELINES / "batchtopk_r0").is_dir():
        return {name: load_sae(BASELINES / name) for name in ("batchtopk_r0", "matryoshka_r24")}
    return {"random_a": make_sae(SAEConfig("batchtopk", d, 256, k=16)),
            "random_b": make_sae(SAEConfig("batchtopk", d, 256, k=16, scaffold_rank=4))}


def _saebench_top_k_accuracy(xtr, ytr, xte, yte, k):
    mask = sb_probe.get_top_k_mean_diff_mask(xtr, ytr.int(), k)
    _, acc = sb_probe.train_sklearn_probe(sb_probe.apply_topk_mask_reduce_dim(xtr, mask), ytr.int(),
                                          sb_probe.apply_topk_mask_reduce_dim(xte, mask), yte.int())
    return acc


def test_top_k_accuracies_equal_saebench_probe_training():
    d = 576 if (BASELINES / "batchtopk_r0").is_dir() else 32
    torch.manual_seed(0)
    compared = 0
    for ds_seed, n_classes in ((1, 2), (2, 4)):  # a 2-class and a 4-class dataset
        x, labels = _dataset(n_classes, d, ds_seed)
        for name, sae in _checkpoints(d).items():
            with torch.no_grad():
                feats = sae.encode(x).float()
            ours = probe_feature_sets({"sae": feats}, labels, N_TRAIN, N_TEST, [0], K_VALUES, all_features=False)
            train_idx, test_idx = resplit(labels, N_TRAIN, N_TEST, 0)
            for cls in probed_classes(n_classes):
                tr, ytr = one_vs_rest(labels, train_idx, cls, 0, salt=0)
                te, yte = one_vs_rest(labels, test_idx, cls, 0, salt=1)
                for k in K_VALUES:
                    theirs = _saebench_top_k_accuracy(feats[tr], ytr, feats[te], yte, k)
                    mine = ours["per_class"][f"sae_top_{k}_test_accuracy"][str(cls)][0]
                    assert round(mine, 4) == round(theirs, 4), (name, n_classes, cls, k)
                    compared += 1
    assert compared == 2 * (1 + 4) * len(K_VALUES)
