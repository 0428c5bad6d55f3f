"""Held-out statistics of a trained SAE and the CARD.md written next to a bundled baseline.

The residual stream has rare "massive activation" tokens (norm up to ~100x the median) that dominate
the variance, so FVU is also reported on typical tokens (norm below 5x the median norm).

Statistics use inference mode (the learned threshold, not BatchTopK), on tokens the SAE never saw,
special positions excluded — what users of the checkpoint get. Density thresholds follow SAEBench
core (fraction of tokens where a latent is > 0; dense = above 10% or 1%).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import torch


@torch.no_grad()
def heldout_stats(sae, batches: Iterable[torch.Tensor]) -> dict:
    sae = sae.float().eval()
    n, sse, sx, sxx, l0 = 0, 0.0, None, 0.0, 0.0
    fires = torch.zeros(sae.cfg.d_sae, dtype=torch.long)
    scaffold_sse = 0.0
    limit, typ = None, torch.zeros(4, dtype=torch.float64)  # typical tokens: n, sse, Σ||x||², and Σx below
    typ_sx = None
    for x in batches:
        x = x.float()
        f, sparse, scaffold = sae.reconstruct_parts(x)
        x_hat = sae.b_dec + sparse + scaffold
        sse += float((x - x_hat).pow(2).sum())
        norms = x.norm(dim=1)
        limit = 5 * float(norms.median()) if limit is None else limit
        t = norms < limit
        typ += torch.tensor([float(t.sum()), float((x - x_hat)[t].pow(2).sum()), float(x[t].pow(2).sum()), 0.0],
                            dtype=torch.float64)
        typ_sx = x[t].sum(0).double() if typ_sx is None else typ_sx + x[t].sum(0).double()
        scaffold_sse += float((x - sae.b_dec - scaffold).pow(2).sum())
        sx = x.sum(0) if sx is None else sx + x.sum(0)
        sxx += float(x.pow(2).sum())
        active = f > 0
        l0 += float(active.sum())
        fires += active.sum(0)
        n += x.shape[0]
    var = sxx - float(sx.pow(2).sum()) / n
    density = fires.float() / n
    typ_var = float(typ[2] - typ_sx.pow(2).sum() / typ[0])
    return {"tokens": n, "fvu": sse / var, "fvu_typical_tokens": float(typ[1]) / typ_var,
            "typical_tokens": int(typ[0]), "fvu_scaffold_only": scaffold_sse / var, "l0": l0 / n,
            "dead": int((fires == 0).sum()), "dense_10pct": int((density > 0.10).sum()),
            "dense_1pct": int((density > 0.01).sum())}


def write_card(folder: Path, name: str, stats: dict, training: dict, log_tail: dict, notes: str = "") -> Path:
    r = training["recipe"]
    text = f"""# {name}

{r['architecture']} SAE, d_sae {r['d_sae']}, k {r['k']}, scaffold rank {r['scaffold_rank']} ({r['scaffold_mode']}),
trained on {r['model']} `{r['hook']}` activations ({r['dataset']}, {r['n_contexts']} contexts of 128 tokens,
{r['cache_dtype']} cache; BOS/special positions excluded). Reproduce: `saebench-scaffold train baselines/{name}/recipe.yaml`.

| training | |
|---|---|
| tokens | {training['tokens']:,} ({training['steps']} steps of {r['batch_size']}) |
| wall time | {training['wall_time_s'] / 60:.1f} min (2 shared CPU cores) |
| final training FVU / L0 (BatchTopK, last step) | {log_tail.get('fvu', float('nan')):.4f} / {log_tail.get('l0', float('nan')):.1f} |
| dead at the end of training (no firing in the last {r['dead_tokens']:,} tokens) | {round(log_tail.get('dead_frac', 0) * r['d_sae'])} |
| dead-latent warning during training | {training.get('dead_warning') or 'none'} |
| recipe version | {r.get('recipe_version', 1)} |

| held-out ({stats['tokens']:,} tokens, threshold inference) | |
|---|---|
| FVU (variance around the mean) | {stats['fvu']:.4f} |
| FVU on typical tokens ({stats.get('typical_tokens', 0):,} with norm < 5x median; excludes massive-activation tokens) | {stats.get('fvu_typical_tokens', float('nan')):.4f} |
| FVU of b_dec + scaffold alone | {stats['fvu_scaffold_only']:.4f} |
| L0 | {stats['l0']:.1f} |
| dead latents (never fire) | {stats['dead']} |
| dense latents, density > 10% | {stats['dense_10pct']} |
| dense latents, density > 1% | {stats['dense_1pct']} |

{notes}
"""
    path = folder / "CARD.md"
    path.write_text(text)
    (folder / "heldout_stats.json").write_text(json.dumps(stats, indent=2))
    return path
