"""`ce_ablation`'s forward passes: per-context CE sums and removed energy ‖Δx‖² under every condition
(only the layers after the hook run), and the on-disk cache of the model-only conditions (clean, top-r
PCA, random subspace, zero ablation, the curves), computed once per model/hook/data/budget/seed."""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable

import torch
from filelock import FileLock

from . import conditions as ab
from .ce import masked_ce
from .ce_config import CEAblationConfig
from ...settings import atomic_write, cache_dir

RunFromHook = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (tokens, acts) -> logits


@torch.no_grad()
def per_context_stats(run_from_hook: RunFromHook, acts: torch.Tensor, tokens: torch.Tensor, special: torch.Tensor,
                      conditions: dict[str, ab.Edit | None], batch_contexts: int = 8
                      ) -> tuple[dict[str, torch.Tensor], torch.Tensor, dict[str, torch.Tensor]]:
    """Per-context CE sums [n_ctx] for every condition (None = clean), per-context prediction counts
    [n_ctx] and per-context removed energy Σ‖Δx‖² [n_ctx]. Each condition edits non-special positions
    of the cached hook activations and calls `run_from_hook(tokens, edited_acts)` (only the later
    layers): the early layers never rerun."""
    n = tokens.shape[0]
    sums = {name: torch.zeros(n, dtype=torch.float64) for name in conditions}
    energy = {name: torch.zeros(n, dtype=torch.float64) for name in conditions}
    counts = torch.zeros(n, dtype=torch.float64)
    for s in range(0, n, batch_contexts):
        a, t, sp = acts[s:s + batch_contexts], tokens[s:s + batch_contexts], special[s:s + batch_contexts]
        keep_pos = sp.unsqueeze(-1).to(a.device)
        b = t.shape[0]
        for name, fn in conditions.items():
            edited = a if fn is None else torch.where(keep_pos, a, fn(a))
            logits = run_from_hook(t, edited)
            ce, keep = masked_ce(logits, t, sp)
            ce = (ce * keep).view(b, -1).double().sum(1).cpu()
            sums[name][s:s + b] = ce
            energy[name][s:s + b] = (edited.double() - a.double()).pow(2).sum(-1).sum(1).cpu()
            counts[s:s + b] = keep.view(b, -1).double().sum(1).cpu()  # the same for every condition
    return sums, counts, energy


def per_context_ce(run_from_hook: RunFromHook, acts: torch.Tensor, tokens: torch.Tensor, special: torch.Tensor,
                   conditions: dict[str, ab.Edit | None], batch_contexts: int = 8) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Per-context CE sums and prediction counts (`per_context_stats` without the energies)."""
    sums, counts, _ = per_context_stats(run_from_hook, acts, tokens, special, conditions, batch_contexts)
    return sums, counts


MODEL_ONLY_FORMAT = 1


def model_only_key(ctx, cache, acts: torch.Tensor, tokens: torch.Tensor, cfg: CEAblationConfig) -> str:
    """What the model-only conditions' per-context CE depends on: the evaluation token set (the
    activation cache's key: model, processing, hook, data, contexts), the PCA budget and data, the
    seed (random subspaces), the batching and the device/dtype."""
    spec = getattr(cache, "spec", None)
    ident = {"format": MODEL_ONLY_FORMAT, "cache": getattr(spec, "key", None),
             "tokens": hashlib.sha256(tokens.cpu().numpy().tobytes()).hexdigest(),
             "model": str(getattr(ctx.lm, "source_id", type(ctx.lm).__name__)), "hook": str(ctx.hook),
             "n_contexts": int(tokens.shape[0]), "pca_fit_tokens": cfg.pca_fit_tokens, "dataset": cfg.dataset,
             "seed": ctx.seed, "batch_contexts": cfg.batch_contexts, "device": str(acts.device), "dtype": str(acts.dtype)}
    return hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[:24]


def model_only_stats(ctx, cache, acts, tokens, special, fns: dict[str, ab.Edit | None], cfg: CEAblationConfig,
                     run_from_hook: RunFromHook) -> tuple[dict[str, tuple[torch.Tensor, torch.Tensor]], torch.Tensor]:
    """{cache id: (per-context CE sums, per-context removed energy)} and per-context counts of the
    model-only conditions: from this call's memo, else from the disk cache (`<cache dir>/ce_ablation/
    <key>.pt`, read and extended under a file lock, written atomically), else computed."""
    key = model_only_key(ctx, cache, acts, tokens, cfg)
    memo = ctx.memo.setdefault(("ce_ablation.model_only", key), {})
    if all(cid in memo for cid in fns) and "_counts" in memo:
        return {cid: memo[cid] for cid in fns}, memo["_counts"]
    root = getattr(ctx, "cache_dir", False)
    if root is False:  # a context without a cache dir (tests' fakes): memo only
        _compute_into(memo, fns, run_from_hook, acts, tokens, special, cfg)
    else:
        path = cache_dir(root) / "ce_ablation" / f"{key}.pt"
        path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(path) + ".lock"):
            if path.exists():
                try:
                    memo.update({k: tuple(v) if k != "_counts" else v for k, v in
                                 torch.load(io.BytesIO(path.read_bytes()), weights_only=True).items() if k not in memo})
                except (OSError, RuntimeError, EOFError, ValueError):
                    pass  # damaged: recomputed and rewritten
            if not (all(cid in memo for cid in fns) and "_counts" in memo):
                _compute_into(memo, fns, run_from_hook, acts, tokens, special, cfg)
                buf = io.BytesIO()
                torch.save({k: (list(v) if k != "_counts" else v) for k, v in memo.items()}, buf)
                atomic_write(path, buf.getvalue())
    return {cid: memo[cid] for cid in fns}, memo["_counts"]


def _compute_into(memo: dict, fns, run_from_hook, acts, tokens, special, cfg) -> None:
    missing = {cid: fn for cid, fn in fns.items() if cid not in memo}
    if "_counts" not in memo:
        missing.setdefault("clean", fns.get("clean"))
    sums, counts, energy = per_context_stats(run_from_hook, acts, tokens, special, missing, cfg.batch_contexts)
    memo["_counts"] = counts
    for cid in missing:
        memo[cid] = (sums[cid], energy[cid])
