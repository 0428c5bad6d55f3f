"""`ce_ablation` wall time per checkpoint: our path (hook activations cached once, only the layers after
the hook run per condition) vs a naive run (the full model per condition, the edit applied by a forward
hook). Both must give the same CE; the speed-up goes into `benchmark.extra_info`.

`pytest tests/benchmarks/test_ce_ablation_speed.py --benchmark-enable` measures 8 contexts and the
task's full condition set; with benchmarks disabled (the project default) it runs once on 2 contexts
and 3 conditions as a smoke test.
"""

from __future__ import annotations

import time

import pytest
import torch

from saebench_scaffold.sources import data
from saebench_scaffold.evals.ablation.ce_ablation import CEAblationConfig, build_conditions
from saebench_scaffold.evals.ablation.ce_passes import per_context_ce
from saebench_scaffold.evals.ablation.ce import masked_ce
from saebench_scaffold.sources.hooks import parse_hook
from saebench_scaffold.saes import SAEConfig, make_sae
from saebench_scaffold.saes.pca import fit_pca


@torch.no_grad()
def naive_per_context_ce(lm, hook, tokens, special, conditions, batch_contexts=8):
    """Reference: every condition runs the whole model; a forward hook on the hook layer applies the
    edit at non-special positions."""
    layer = lm.layers[parse_hook(hook).last_layer_needed]
    n = tokens.shape[0]
    sums = {name: torch.zeros(n, dtype=torch.float64) for name in conditions}
    for name, fn in conditions.items():
        for s in range(0, n, batch_contexts):
            t, sp = tokens[s:s + batch_contexts], special[s:s + batch_contexts]

            def edit(_mod, _inp, out, sp=sp, fn=fn):
                h = out[0] if isinstance(out, tuple) else out
                new = torch.where(sp.unsqueeze(-1).to(h.device), h, fn(h.float()).to(h.dtype))
                return (new,) + tuple(out[1:]) if isinstance(out, tuple) else new

            handle = layer.register_forward_hook(edit) if fn is not None else None
            try:
                logits = lm.logits(t)
            finally:
                if handle is not None:
                    handle.remove()
            ce, keep = masked_ce(logits, t, sp)
            sums[name][s:s + t.shape[0]] = (ce * keep).view(t.shape[0], -1).double().sum(1).cpu()
    return sums


@pytest.mark.slow
def test_ce_ablation_speed(benchmark, lm, hook, offline):
    small = benchmark.disabled
    n_ctx = 2 if small else 8
    gen = data.token_contexts(lm, "wikipedia", n_ctx)
    tokens = torch.stack([next(gen) for _ in range(n_ctx)])
    special = lm.special_mask(tokens)
    acts = lm.hook_activations(tokens, hook)  # the shared cache: built once, not part of either timing
    sae = make_sae(SAEConfig("batchtopk", lm.d_model, 1152, k=16, scaffold_rank=8, hook_name=hook))
    flat = acts[~special]
    pca = fit_pca([flat])
    cfg = CEAblationConfig(n_aligned_latents=64)
    conds = build_conditions(sae, pca, 8, flat, cfg, torch.Generator().manual_seed(0))
    fns = {"clean": None, **{c.name: c.fn for c in conds if c.applicable}}
    if small:
        fns = {k: fns[k] for k in ("clean", "scaffold_removed", "pca_removed_mean_preserving")}

    lm.logits(tokens[:1]), lm.logits_from_hook(tokens[:1], hook, acts[:1])  # warm-up: no first-call costs
    timing = {"naive": [], "ours": []}

    def naive_run():
        t = time.perf_counter()
        out = naive_per_context_ce(lm, hook, tokens, special, fns)
        timing["naive"].append(time.perf_counter() - t)
        return out

    def ours():
        t = time.perf_counter()
        out = per_context_ce(lambda tk, a: lm.logits_from_hook(tk, hook, a), acts, tokens, special, fns)
        timing["ours"].append(time.perf_counter() - t)
        return out

    # The machine is shared and noisy: both paths run twice, interleaved; the faster run of each counts.
    naive = naive_run()
    sums, counts = benchmark.pedantic(ours, rounds=1, iterations=1)
    naive_run()
    ours()
    naive_s, ours_s = min(timing["naive"]), min(timing["ours"])
    for name in fns:
        assert torch.allclose(sums[name], naive[name], rtol=1e-3, atol=1e-2), name
    benchmark.extra_info.update({"contexts": n_ctx, "conditions": len(fns), "ours_s": round(ours_s, 3),
                                 "naive_full_forward_s": round(naive_s, 3),
                                 "speedup_vs_naive": round(naive_s / ours_s, 2)})
    print(benchmark.extra_info)
